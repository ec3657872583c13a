"""Secrets of the service: expert passwords (argon2), unguessable tokens, and rate limits."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

_hasher = PasswordHasher()  # argon2id with the library's current recommended cost
MIN_PASSWORD_LENGTH = 12
# Case numbers are read out and typed: Crockford's base 32 (no I, L, O, U) without 0 and 1 either.
_CASE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ".replace("0", "").replace("1", "")


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def dummy_verify() -> None:
    """Spend the time of a real check, so that a login for an unknown address takes as long as a wrong password."""
    verify_password(_DUMMY_HASH, "not the password")


_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def new_token() -> str:
    """A secret for a link or a cookie: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps of a token: its sha256 (a fast hash suffices for 256 random bits)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_case_number() -> str:
    """A short number a person can quote, e.g. K7QF-2M9D: about 39 random bits, not secret (the link's token is)."""
    chars = "".join(secrets.choice(_CASE_ALPHABET) for _ in range(8))
    return f"{chars[:4]}-{chars[4:]}"


@dataclass
class RateLimits:
    """Moving-window limits per client address (the `limits` library, in this process's memory)."""

    uploads: str = "20/hour"
    screens: str = "120/hour"
    logins: str = "10/15minutes"
    _limiter: MovingWindowRateLimiter = field(default_factory=lambda: MovingWindowRateLimiter(MemoryStorage()))
    _items: dict[str, RateLimitItem] = field(default_factory=dict)

    def _item(self, kind: str) -> RateLimitItem:
        if kind not in self._items:
            self._items[kind] = parse(getattr(self, kind))
        return self._items[kind]

    def allow(self, kind: str, key: str) -> bool:
        """Count one attempt of ``kind`` ('uploads', 'screens' or 'logins') by ``key``; False when over the limit."""
        return self._limiter.hit(self._item(kind), kind, key)

    def retry_after(self, kind: str, key: str) -> int:
        reset, _remaining = self._limiter.get_window_stats(self._item(kind), kind, key)
        return max(1, int(reset - time.time()))
