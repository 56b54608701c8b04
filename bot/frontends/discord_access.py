"""Who may use easel in Discord: [discord] allowed_guilds, allowed_channels, allowed_roles, dms, admin_roles.

The frontend asks it from discord.py's own hooks (the command tree's and each button's interaction_check),
so no slash command or button runs without it.
"""

from __future__ import annotations

import asyncio
import time

import discord

from bot.config import DiscordConfig

MEMBERSHIP_TTL = 60  # seconds a DM sender's roles in easel's servers are trusted before they are looked up again
REMEMBERED = 10_000  # DM senders whose roles are kept at the most


class DiscordAccess:
    """The rule for one bot, with the roles of people who DM it looked up (and kept a minute) in its servers."""

    def __init__(self, config: DiscordConfig, client: discord.Client) -> None:
        self.config = config
        self.client = client
        self._members: dict[int, tuple[float, frozenset[int] | None]] = {}  # DM sender -> (when, roles or None)

    def is_admin(self, interaction: discord.Interaction) -> bool:
        return bool(self.roles(interaction) & set(self.config.admin_roles))

    def roles(self, interaction: discord.Interaction) -> frozenset[int]:
        """The person's role ids: where they asked, or (in a DM) in the server that let them in."""
        if interaction.guild_id is not None:
            return frozenset(role.id for role in getattr(interaction.user, "roles", ()))
        _, roles = self._members.get(interaction.user.id, (0.0, None))
        return roles or frozenset()

    async def refusal(self, interaction: discord.Interaction) -> str | None:
        """Why easel may not be used here, or None. A DM obeys the same rule as a server: with allowed_guilds
        or allowed_roles set, only a member of an allowed server holding an allowed role there may DM."""
        config = self.config
        if interaction.guild_id is None:
            if not config.dms:
                return "easel does not take commands in direct messages; use it in a server"
            restricted = config.allowed_guilds or config.allowed_roles
            if restricted and await self._member_roles(interaction.user.id) is None:
                return "easel takes direct messages only from people who may use it in its server; use it there"
            return None
        if config.allowed_guilds and interaction.guild_id not in config.allowed_guilds:
            return "easel is not enabled in this server"
        if config.allowed_channels and interaction.channel_id not in config.allowed_channels:
            places = ", ".join(f"<#{channel}>" for channel in config.allowed_channels[:5])
            return f"easel is not enabled in this channel; use it in {places}"
        if config.allowed_roles and not self.roles(interaction) & set(config.allowed_roles):
            needed = ", ".join(f"<@&{role}>" for role in config.allowed_roles[:5])
            return f"you need one of these roles to use easel here: {needed}"
        return None

    async def _member_roles(self, user_id: int) -> frozenset[int] | None:
        """A DM sender's roles in the first allowed server where they hold an allowed role; None if none.

        Looked up with GET /guilds/{id}/members/{user} in the servers the client has cached (the guilds
        intent brings their roles; no privileged intent is needed), then kept for MEMBERSHIP_TTL seconds."""
        now = time.monotonic()
        when, roles = self._members.get(user_id, (None, None))
        if when is not None and now - when < MEMBERSHIP_TTL:
            return roles
        config, wanted = self.config, set(self.config.allowed_roles)
        guilds = [guild for guild in self.client.guilds
                  if (not config.allowed_guilds or guild.id in config.allowed_guilds)
                  and (not wanted or any(guild.get_role(role) for role in wanted))]
        found = await asyncio.gather(*(_member_role_ids(guild, user_id) for guild in guilds))
        roles = next((held for held in found if held is not None and (not wanted or held & wanted)), None)
        if len(self._members) > REMEMBERED:
            self._members.clear()
        self._members[user_id] = (now, roles)
        return roles


async def _member_role_ids(guild: discord.Guild, user_id: int) -> frozenset[int] | None:
    """The role ids `user_id` holds in `guild`, or None if they are no member there."""
    try:
        member = await guild.fetch_member(user_id)
    except discord.NotFound:
        return None
    return frozenset(role.id for role in member.roles)
