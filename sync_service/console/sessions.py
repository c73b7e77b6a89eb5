"""Console logins: a random session id in an HttpOnly, SameSite=Strict cookie; the service
keeps only its hash, the token it was opened with and a CSRF token for the session's forms.

Server-side on purpose: logging out, the session expiring or the token being revoked ends
the session at once, which a self-contained signed cookie could not do."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, col, select

from sync_service.index import aware_utc
from sync_service.models import ApiToken, ConsoleSession, now

COOKIE = "modelsync_console"
COOKIE_PATH = "/console"
# 32 random bytes, url-safe base64: what secrets.token_urlsafe(32) gives
_ID_LENGTH = 43


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Login:
    token: ApiToken
    csrf: str
    expires_at: datetime


def open_session(session: Session, *, token_id: int, lifetime: timedelta) -> tuple[str, ConsoleSession]:
    """A new login: ``(cookie value, row)``. Expired rows of any login are swept here, so
    the table holds only live sessions without a background job."""
    at = now()
    session.exec(delete(ConsoleSession).where(col(ConsoleSession.expires_at) <= at))
    session_id = secrets.token_urlsafe(32)
    row = ConsoleSession(
        id_hash=_hash(session_id), token_id=token_id, csrf=secrets.token_urlsafe(32),
        created_at=at, expires_at=at + lifetime,
    )
    session.add(row)
    session.commit()
    return session_id, row


def find(session: Session, session_id: str | None) -> Login | None:
    """The live login behind a cookie value: unexpired, its token not revoked."""
    if not session_id or len(session_id) != _ID_LENGTH or not session_id.isascii():
        return None
    row = session.exec(
        select(ConsoleSession, ApiToken)
        .join(ApiToken, col(ApiToken.id) == col(ConsoleSession.token_id))
        .where(col(ConsoleSession.id_hash) == _hash(session_id))
    ).first()
    if row is None:
        return None
    login, token = row
    expires = aware_utc(login.expires_at)
    if expires <= now() or token.revoked_at is not None or token.kind != "publisher":
        return None
    return Login(token=token, csrf=login.csrf, expires_at=expires)


def close(session: Session, session_id: str | None) -> None:
    if session_id and session_id.isascii():
        session.exec(delete(ConsoleSession).where(col(ConsoleSession.id_hash) == _hash(session_id)))
        session.commit()


def csrf_ok_for(expected: str, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(expected.encode(), sent.encode("utf-8", "replace"))
