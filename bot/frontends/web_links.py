"""Signed, expiring gallery links: the key that signs them (made once in the data folder) and the tokens they carry.

A token says who may look (their Owner.key and name, whether they see everyone's jobs) and until when; it is
signed with HMAC-SHA256, so nobody can write one without the key, and it carries no secret itself. Stdlib only:
/gallery in a chat imports this without the web server.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from storage.errors import EaselError

SECRET_FILE = "web-secret.key"
SECRET_BYTES = 32
MAX_TOKEN = 4096  # far above any real token (a name is at most a few hundred characters): no work for junk
_SIGNED = b"easel-gallery-link:"  # domain separation: this key's MACs mean "a gallery link", nothing else


@dataclass(frozen=True)
class Viewer:
    """Who a gallery link is for: their Owner.key, the name pages show, whether they see everyone's jobs, and
    until when (a Unix time) the link works."""

    key: str
    name: str
    admin: bool
    expires: float


def load_secret(data_dir: Path) -> bytes:
    """The signing key in data_dir/web-secret.key: 32 random bytes, made (mode 0600) on first use, read thereafter."""
    path = Path(data_dir) / SECRET_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = _create(path)
    if len(key) != SECRET_BYTES:
        raise EaselError(f"{path} is not a gallery signing key ({len(key)} bytes, not {SECRET_BYTES}); remove it "
                         "and easel makes a new one (links given out before stop working)")
    return key


def _create(path: Path) -> bytes:
    """Write a fresh key under a temporary name, then give it its name only where no key is there yet: a
    half-written key is never read, and two starts at once agree on one key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(secrets.token_bytes(SECRET_BYTES))
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)  # never over a key another start wrote meanwhile
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links (FAT, some network mounts)
            if not path.exists():
                os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return path.read_bytes()


def make_token(secret: bytes, viewer: Viewer) -> str:
    """A URL-safe token for `viewer`: base64url(compact JSON) "." base64url(HMAC-SHA256)."""
    payload = json.dumps({"k": viewer.key, "n": viewer.name, "a": viewer.admin, "e": viewer.expires},
                         separators=(",", ":"), ensure_ascii=False).encode()
    body = b64url_encode(payload)
    return f"{body}.{b64url_encode(_mac(secret, body))}"


def read_token(secret: bytes, token: str, now: float) -> Viewer | None:
    """The viewer a token was made for; None when it is not signed with `secret`, is malformed, or has expired."""
    if not token or len(token) > MAX_TOKEN or not token.isascii() or token.count(".") != 1:
        return None
    body, _, signature = token.partition(".")
    try:
        given = b64url_decode(signature)
    except ValueError:
        return None
    if not hmac.compare_digest(given, _mac(secret, body)):
        return None
    try:
        fields = json.loads(b64url_decode(body))
        viewer = Viewer(key=fields["k"], name=fields["n"], admin=fields["a"], expires=fields["e"])
    except (ValueError, KeyError, TypeError):
        return None
    if not (isinstance(viewer.key, str) and isinstance(viewer.name, str) and isinstance(viewer.admin, bool)
            and isinstance(viewer.expires, (int, float)) and not isinstance(viewer.expires, bool)):
        return None
    return viewer if now < viewer.expires else None


def csrf_token(secret: bytes, session: str) -> str:
    """The token every form of a session carries: tied to that session's link, so another site cannot know it."""
    return hmac.new(secret, b"csrf:" + session.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, session: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), csrf_token(secret, session).encode())


def link(address: str, token: str) -> str:
    """The link a person opens: the gallery with their token."""
    return f"{address}/gallery?t={token}"


def _mac(secret: bytes, body: str) -> bytes:
    return hmac.new(secret, _SIGNED + body.encode("ascii"), hashlib.sha256).digest()


def b64url_encode(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """base64url without padding; anything else (other characters, a bad length) is a ValueError."""
    if not text or not text.isascii() or any(c not in _ALPHABET for c in text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
