"""Users and their API tokens.

A token is ``wrfb_`` followed by 43 URL-safe characters (32 random bytes). The
store keeps its SHA-256 hex digest and its first characters (``prefix``), never
the token itself, and no log line contains either.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..errors import ConflictError, InvalidInputError, NotFoundError
from ._base import StoreBase
from .models import Token, User, utc_now
from .records import TokenRecord, UserRecord

logger = logging.getLogger(__name__)

TOKEN_MARKER = "wrfb_"
# Marker plus 7 random characters: enough to tell tokens apart in a listing.
PREFIX_LENGTH = 12
_MAX_TOKEN_LENGTH = 128
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
# time_last_used is written only when the stored time is older than this, not per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_token(token: str) -> str:
    """Return the SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_user_name(value: str) -> str:
    """Validate a user name: 1 to 64 letters, digits, '_', '.', '@' or '-'."""
    if not isinstance(value, str) or not _USER_NAME.match(value):
        raise InvalidInputError(
            f"invalid user name {value!r}: use 1 to 64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    return value


class AuthMethods(StoreBase):
    """Create users, issue and revoke their tokens, and find the user of a token."""

    def create_user(self, name: str, is_admin: bool = False) -> UserRecord:
        """Insert a user and return it.

        Raises:
            InvalidInputError: the name is invalid.
            ConflictError: a user with this name exists.
        """
        row = User(name=check_user_name(name), is_admin=is_admin, time_created=utc_now())
        try:
            with self._transaction(write=True) as session:
                session.add(row)
        except IntegrityError as exc:
            raise ConflictError(f"user {name!r} exists: choose another name") from exc
        logger.info("created user %s (admin: %s)", name, is_admin)
        return UserRecord.from_row(row)

    def get_user(self, name: str) -> UserRecord:
        """Return the user ``name``.

        Raises:
            NotFoundError: no user has this name.
        """
        with self._transaction() as session:
            row = session.get(User, name)
            if row is None:
                raise NotFoundError(f"user {name!r} not found: create the user first")
            return UserRecord.from_row(row)

    def list_users(self) -> list[UserRecord]:
        """Return every user, sorted by name."""
        with self._transaction() as session:
            rows = session.scalars(select(User).order_by(User.name))
            return [UserRecord.from_row(row) for row in rows]

    def create_token(self, user_name: str, label: str = "") -> str:
        """Issue a new token for a user and return it; it cannot be read back later.

        Raises:
            InvalidInputError: the label is over 255 characters or has a line break.
            NotFoundError: the user does not exist.
        """
        if len(label) > 255 or "\n" in label or "\r" in label:
            raise InvalidInputError(
                f"invalid token label {label[:40]!r}: use one line of at most 255 characters"
            )
        token = TOKEN_MARKER + secrets.token_urlsafe(32)
        with self._transaction(write=True) as session:
            if session.get(User, user_name) is None:
                raise NotFoundError(f"user {user_name!r} not found: create the user first")
            row = Token(user_name=user_name, token_hash=hash_token(token), label=label,
                        prefix=token[:PREFIX_LENGTH], time_created=utc_now())
            session.add(row)
            session.flush()
            token_id = row.id
        logger.info("issued token %d (%s) for user %s", token_id, label or "no label", user_name)
        return token

    def find_user_by_token(self, token: str) -> UserRecord | None:
        """Return the user who owns ``token`` if it is valid and not revoked, else None.

        Candidates are found by prefix and the digests compared in constant time.
        """
        if not token.startswith(TOKEN_MARKER) or len(token) > _MAX_TOKEN_LENGTH:
            return None
        digest = hash_token(token)
        statement = select(Token, User).join(User, User.name == Token.user_name).where(
            Token.prefix == token[:PREFIX_LENGTH], Token.time_revoked.is_(None)
        )
        with self._transaction() as session:
            matches = [
                (token_row, user_row)
                for token_row, user_row in session.execute(statement)
                if hmac.compare_digest(token_row.token_hash, digest)
            ]
        if not matches:
            return None
        token_row, user_row = matches[0]
        self._note_token_use(token_row)
        return UserRecord.from_row(user_row)

    def _note_token_use(self, row: Token) -> None:
        now = utc_now()
        if row.time_last_used is not None and now - row.time_last_used < LAST_USED_RESOLUTION:
            return
        with self._transaction(write=True) as session:
            stored = session.get(Token, row.id)
            if stored is not None:
                stored.time_last_used = now

    def list_tokens(self, user_name: str | None = None) -> list[TokenRecord]:
        """Return the tokens of one user, or of every user, oldest first."""
        statement = select(Token).order_by(Token.id)
        if user_name is not None:
            statement = statement.where(Token.user_name == user_name)
        with self._transaction() as session:
            return [TokenRecord.from_row(row) for row in session.scalars(statement)]

    def revoke_token(self, token_key: int, user_name: str | None = None) -> TokenRecord:
        """Revoke the token whose id is ``token_key``; revoking twice keeps the first time.

        With ``user_name``, only that user's token is revoked.

        Raises:
            NotFoundError: no such token (of that user).
        """
        with self._transaction(write=True) as session:
            row = session.get(Token, token_key)
            if row is None or (user_name is not None and row.user_name != user_name):
                raise NotFoundError(f"token {token_key} not found: list tokens to see the ids")
            if row.time_revoked is None:
                row.time_revoked = utc_now()
            record = TokenRecord.from_row(row)
        logger.info("revoked token %d of user %s", token_key, record.user_name)
        return record
