"""Who may use easel in Telegram ([telegram] allowed_chats, allowed_users), as PTB filters and handlers.

PTB hands an update to the first handler of a group that takes it, so the frontend puts the handlers for
people let in first and those for everyone else after them: no command handler checks access itself.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from telegram import Update
from telegram.ext import CallbackQueryHandler, filters

PRIVATE_EASEL = "Sorry, this easel is private; ask its owner for access."


class Allowed(filters.UpdateFilter):
    """allowed_chats and allowed_users (empty: any) as a PTB filter on the update, its chat and its sender.
    (filters.Chat and filters.User look at a message, whose author for a button press is the bot.)"""

    def __init__(self, chats: tuple[int, ...], users: tuple[int, ...]) -> None:
        super().__init__(name="easel's access")
        self.chats, self.users = frozenset(chats), frozenset(users)

    def filter(self, update: Update) -> bool:
        chat, user = update.effective_chat, update.effective_user
        return user is not None and chat is not None and (not self.chats or chat.id in self.chats) and (
            not self.users or user.id in self.users)


class Press(CallbackQueryHandler):
    """Button presses that pass `allowed` (PTB's CallbackQueryHandler takes no filters of its own)."""

    def __init__(self, allowed: Allowed, callback: Callable[[Update, Any], Awaitable[None]]) -> None:
        super().__init__(callback)
        self.allowed = allowed

    def check_update(self, update: object) -> Any:
        return isinstance(update, Update) and self.allowed.filter(update) and super().check_update(update)
