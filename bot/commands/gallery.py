"""/gallery: a signed link, for the asker's eyes only, to the web gallery of their jobs (an admin's: everyone's)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from bot.commands.registry import Command, CommandSpec, no_more, register
from bot.config import DefaultsConfig
from bot.limits import CommandError
from bot.replies import Reply
from storage.infotext import plain_number

if TYPE_CHECKING:
    from bot.replies import Attachment
    from bot.service import Service
    from storage.records import Owner


@dataclass(frozen=True)
class Gallery(Command):
    name = "gallery"


def parse(words: list[str], defaults: DefaultsConfig) -> Gallery:
    no_more("gallery", words)
    return Gallery()


async def run(service: Service, owner: Owner, command: Gallery, attachments: Sequence[Attachment]) -> Reply:
    from bot.frontends.web_links import Viewer, link, load_secret, make_token

    web = service.config.web
    if not web.enabled:
        raise CommandError("the web gallery is off here; its owner can turn it on with [web] enabled = true")
    secret = await asyncio.to_thread(load_secret, service.config.storage.data_dir)
    admin = service.is_admin(owner)
    viewer = Viewer(key=owner.key, name=owner.name or owner.user_id, admin=admin,
                    expires=time.time() + web.link_hours * 3600)
    whose = "everyone's jobs (you are an admin)" if admin else "your jobs"
    return Reply(f"your gallery of {whose}, for the next {plain_number(web.link_hours)} h — keep it to yourself, "
                 f"it opens without a password: {link(web.address, make_token(secret, viewer))}", private=True)


SPEC = register(CommandSpec(
    name="gallery", usage="/gallery — a private link to your pictures in a browser (search, filters, actions)",
    summary="your pictures in a browser: a private link", parse=parse, run=run,
))
