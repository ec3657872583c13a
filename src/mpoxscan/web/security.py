"""Secrets of the service: expert passwords (argon2), unguessable tokens, and rate limits."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
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


PIN_PATTERN = r"^[0-9]{4,6}$"


def hash_pin(pin: str) -> str:
    """A follow-up page's PIN (4 to 6 digits), hashed like a password: a copy of the database does not show it, and
    the hash's cost slows a guesser who has one (the rate limit per case slows one who has only the link)."""
    if not re.fullmatch(PIN_PATTERN, pin):
        raise ValueError("a PIN is 4 to 6 digits")
    return _hasher.hash(pin)


def unlock_mac(pin_hash: str, token: str, expires: int) -> str:
    """The proof in a case's unlock cookie that its PIN was given, until ``expires`` (Unix time): keyed by the PIN's
    hash (only in the database; a new PIN makes old cookies worthless) and bound to the link's token, so that every
    worker checks it without state of its own."""
    return hmac.new(pin_hash.encode(), f"{token_hash(token)}.{expires}".encode(), hashlib.sha256).hexdigest()


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


#: Hex digits of a case's export id: 80 bits, no collision among any number of cases this service will hold.
EXPORT_ID_DIGITS = 20


def export_id(number: str, case_token_hash: str) -> str:
    """The name a case goes by in a training export (`mpoxscan cases export`): a hash of its number keyed with its
    stored token hash, so that it is the same in every export but cannot be traced back to the case number without
    the database (a plain hash of an 8-character number could be reversed by trying them all)."""
    return hmac.new(case_token_hash.encode(), number.encode(), hashlib.sha256).hexdigest()[:EXPORT_ID_DIGITS]


def new_case_number() -> str:
    """A short number a person can quote, e.g. K7QF-2M9D: about 39 random bits, not secret (the link's token is)."""
    chars = "".join(secrets.choice(_CASE_ALPHABET) for _ in range(8))
    return f"{chars[:4]}-{chars[4:]}"


#: Kinds counted only when they fail (a right password is not an attempt to guess one): tested before the request,
#: counted by ``record_failure`` after it.
FAILURE_COUNTED = {"logins", "pins"}


@contextmanager
def _storage_errors():
    """A limits storage that cannot be reached (Redis down) refuses the request with a 503 and a reason, rather than a
    500, or than letting uploads through uncounted (each backend's client raises its own errors: any of them)."""
    try:
        yield
    except Exception as exc:
        from mpoxscan.web.store import StorageUnavailable

        raise StorageUnavailable("cannot count requests: the rate-limit storage cannot be reached") from exc


@dataclass
class RateLimits:
    """Moving-window limits per client address.

    Uploads and server screenings are counted in a `limits` storage (``storage``: a `limits` URI; ``memory://``, the
    default, is this process's memory: reset by a restart and not shared between workers; ``redis://host:port`` is
    one count for every worker and host that survives a restart: `serve --limits-storage`). Failed sign-ins and wrong
    follow-up PINs (per case), the limits that guard secrets, are counted in the database when ``sessions`` is given
    (table rate_limit_hits, migration 0003): a restart does not reset them and every worker sees the same
    count (two workers may each let one attempt through at the very edge: the count and the insert are separate)."""

    uploads: str = "20/hour"
    screens: str = "120/hour"
    logins: str = "10/15minutes"
    pins: str = "5/15minutes"  # wrong PINs per case (the key is the case, not the address: guessers share it)
    storage: str = "memory://"
    sessions: Any = None  # a sessionmaker: failed sign-ins in the database
    _items: dict[str, RateLimitItem] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(storage_from_string(self.storage))

    def _item(self, kind: str) -> RateLimitItem:
        if kind not in self._items:
            self._items[kind] = parse(getattr(self, kind))
        return self._items[kind]

    def _in_database(self, kind: str) -> bool:
        return kind in FAILURE_COUNTED and self.sessions is not None

    def allow(self, kind: str, key: str) -> bool:
        """Whether ``key`` may try ``kind`` ('uploads', 'screens' or 'logins') now. Uploads and screenings count this
        attempt; sign-ins only look (their failures are counted by ``record_failure``)."""
        item = self._item(kind)
        if self._in_database(kind):
            return len(self._recent(kind, key)) < item.amount
        with _storage_errors():
            if kind in FAILURE_COUNTED:
                return self._limiter.test(item, kind, key)
            return self._limiter.hit(item, kind, key)

    def problem(self) -> str | None:
        """None when the limits storage answers (Redis: a PING); else what is wrong, in a few words (/healthz)."""
        try:
            return None if self._limiter.storage.check() else "cannot be reached"
        except Exception as exc:  # the storage's client library: any of its errors means the same here
            return type(exc).__name__

    def record_failure(self, kind: str, key: str) -> None:
        """Count one failed ``kind`` attempt (a refused sign-in) by ``key``."""
        if not self._in_database(kind):
            with _storage_errors():
                self._limiter.hit(self._item(kind), kind, key)
            return
        from sqlalchemy import delete

        from mpoxscan.web.tables import RateLimitHit, utcnow

        now = utcnow()
        with self.sessions() as db:
            db.execute(delete(RateLimitHit).where(RateLimitHit.kind == kind, RateLimitHit.at <= now - self._window(kind)))
            db.add(RateLimitHit(kind=kind, client=token_hash(key), at=now))
            db.commit()

    def retry_after(self, kind: str, key: str) -> int:
        if self._in_database(kind):
            from mpoxscan.web.tables import utcnow

            recent = self._recent(kind, key)
            oldest = recent[-self._item(kind).amount] if recent else utcnow()
            return max(1, int((oldest + self._window(kind) - utcnow()).total_seconds()) + 1)
        with _storage_errors():
            reset, _remaining = self._limiter.get_window_stats(self._item(kind), kind, key)
        return max(1, int(reset - time.time()))

    def _window(self, kind: str):
        from datetime import timedelta

        return timedelta(seconds=self._item(kind).get_expiry())

    def _recent(self, kind: str, key: str) -> list:
        """The times of ``key``'s counted ``kind`` attempts within the window, oldest first."""
        from sqlalchemy import select

        from mpoxscan.web.tables import RateLimitHit, utcnow

        with self.sessions() as db:
            return list(db.scalars(select(RateLimitHit.at).where(
                RateLimitHit.kind == kind, RateLimitHit.client == token_hash(key),
                RateLimitHit.at > utcnow() - self._window(kind)).order_by(RateLimitHit.at)))
