"""What a command gives back to the frontend that asked, and the files that come with a command."""

from __future__ import annotations

from dataclasses import dataclass

from storage.records import JobRecord


@dataclass(frozen=True)
class Attachment:
    """A file someone sent along with a command."""

    filename: str
    data: bytes


@dataclass(frozen=True)
class Reply:
    """What to tell the person now; job is set when a job was queued (its events follow); shows is a
    finished job whose result the frontend should send again (/history #N)."""

    text: str
    job: JobRecord | None = None
    error: bool = False
    shows: JobRecord | None = None
    # For the asker's eyes only (a /gallery link): a chat frontend sends it where nobody else reads it — Discord
    # answers only them, Telegram writes to their private chat with the bot.
    private: bool = False
