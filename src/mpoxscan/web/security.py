"""Secrets of the service: expert passwords (argon2), unguessable tokens, and rate limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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


#: argon2 checks running at once in one process: one (each takes about 64 MiB and, in its 4 lanes, a few hundred ms
#: of up to 4 cores; two at once finish no sooner on a small machine). A check that finds none free is refused at
#: once (TooBusy: a 429), never queued on a thread that other requests need; the sending phone's device key needs no
#: argon2 at all.
ARGON2_SLOTS = 1
_argon2_slots = threading.BoundedSemaphore(ARGON2_SLOTS)
#: The nice value of the threads that run argon2 checks (Linux): the scheduler then gives a screening or a case being
#: stored its cores first, and the checks what is left.
ARGON2_NICE = 10


def _lower_priority() -> None:
    """Lower this thread's CPU priority (Linux: a nice value is a thread's own, and argon2's lane threads, started
    from this one, inherit it). Elsewhere nothing changes."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ARGON2_NICE)
    except (AttributeError, OSError):
        pass


# Hand-written rather than left to the request's thread: a lowered priority cannot be raised again without
# privileges, so the checks get threads of their own that never run anything else.
_argon2_threads = ThreadPoolExecutor(max_workers=ARGON2_SLOTS, thread_name_prefix="argon2",
                                     initializer=_lower_priority)


class TooBusy(Exception):
    """Every argon2 slot is taken: the password or PIN was not checked; try again in a second."""


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches the argon2 hash (a PIN too). Bounded in total: at most ARGON2_SLOTS checks run
    at once in this process, whoever asks (issue 27: a loop of right PINs on one's own case made everyone's
    submissions 6 times slower); TooBusy when none is free."""
    if not _argon2_slots.acquire(blocking=False):
        raise TooBusy("too many password and PIN checks at once: try again in a second")
    try:
        return _argon2_threads.submit(_hasher.verify, password_hash, password).result()
    except (VerificationError, InvalidHashError):
        return False
    except UnicodeError:  # a lone surrogate (sent through a multipart charset) is no one's password
        return False
    finally:
        _argon2_slots.release()


PIN_PATTERN = r"^[0-9]{4,6}$"


def hash_pin(pin: str) -> str:
    """A follow-up page's PIN (4 to 6 digits), hashed like a password: a copy of the database does not show it, and
    the hash's cost slows a guesser who has one (the rate limit per case slows one who has only the link).

    On the argon2 thread, after the checks and hashes before it: never two at once (the upload limit counts cases
    per hour, not at once: 20 cases sent together with a PIN hashed at once took 1.2 GB), and never refused (the
    person's case is stored once its turn comes, a few hundred milliseconds per hash ahead of it)."""
    if not re.fullmatch(PIN_PATTERN, pin):
        raise ValueError("a PIN is 4 to 6 digits")
    return _argon2_threads.submit(_hasher.hash, pin).result()


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


#: An idempotency key: what a phone's queue sends with a case (crypto.getRandomValues: 256 bits, base64url).
IDEMPOTENCY_PATTERN = r"^[A-Za-z0-9_-]{43}$"


def derived_secrets(idempotency_key: str) -> tuple[str, str, str]:
    """(follow-up token, device key, stored hash of the key) of a case sent with an idempotency key. The two
    secrets are derived from the key (each its own labelled sha256) so that a send repeated after a lost answer
    gets the same link and device key back: the server keeps neither, only their hashes, as for a case without a
    key. The key is as secret as the link (it is sent once, with the case, over the same connection); the database
    keeps only a third, differently labelled hash of it, from which neither secret follows."""
    def labelled(label: str) -> bytes:
        return hashlib.sha256(f"mpoxscan {label}\0{idempotency_key}".encode()).digest()

    urlsafe = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731 (as token_urlsafe)
    return urlsafe(labelled("follow-up token")), urlsafe(labelled("device key")), labelled("idempotency").hex()


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


#: Kinds whose attempts are reserved before the secret is checked (``reserve``), in the database when the limits have
#: its sessions: failed sign-ins per address ("logins") and wrong PINs per case ("pins"), both given back when the
#: secret was right, and every PIN check per case ("case_unlocks") and per address ("address_unlocks"), each an
#: argon2 check, kept whatever the answer.
RESERVED = {"logins", "pins", "case_unlocks", "address_unlocks"}


@contextmanager
def _storage_errors():
    """A limits storage that cannot be reached (Redis down) refuses the request with a 503 and a reason, rather than a
    500, or than letting uploads through uncounted (each backend's client raises its own errors: any of them)."""
    try:
        yield
    except Exception as exc:
        from mpoxscan.web.store import StorageUnavailable

        raise StorageUnavailable("cannot count requests: the rate-limit storage cannot be reached") from exc


@dataclass(frozen=True)
class Reservation:
    """One attempt counted by ``RateLimits.reserve``: its kind and, in the database, its row (to give it back)."""

    kind: str
    row: int | None = None


def _lock_key(kind: str, key: str) -> int:
    """A PostgreSQL advisory lock's 64-bit key for one (kind, client) count."""
    return int.from_bytes(hashlib.sha256(f"{kind}:{key}".encode()).digest()[:8], "big", signed=True)


@dataclass
class RateLimits:
    """Moving-window limits per client address (or per case).

    Uploads and server screenings are counted in a `limits` storage (``storage``: a `limits` URI; ``memory://``, the
    default, is this process's memory: reset by a restart and not shared between workers; ``redis://host:port`` is
    one count for every worker and host that survives a restart: `serve --limits-storage`). The limits that guard
    secrets (RESERVED) are counted in the database when ``sessions`` is given (table rate_limit_hits, migration 0003):
    a restart does not reset them and every worker sees the same count. Each attempt is reserved atomically before
    the secret is checked (issue 27: counting the failures after a 300 ms check let 20 concurrent guesses through a
    limit of 5): on PostgreSQL under an advisory lock per count, on SQLite under the database's write lock, in a
    `limits` storage (Redis, memory) by its own atomic hit."""

    uploads: str = "20/hour"
    screens: str = "120/hour"
    logins: str = "10/15minutes"
    pins: str = "5/15minutes"  # wrong PINs per case (the key is the case, not the address: guessers share it)
    case_unlocks: str = "10/15minutes"  # PIN checks per case, right ones too (a right PIN opens the page 30 minutes)
    address_unlocks: str = "30/15minutes"  # PIN checks per address, whichever case
    storage: str = "memory://"
    sessions: Any = None  # a sessionmaker: the RESERVED kinds in the database
    _items: dict[str, RateLimitItem] = field(default_factory=dict)
    # (kind, key) -> when (time.monotonic) this process last saw the database refuse it and until when the refusal
    # holds: a flood of refused attempts costs no database write each (a refused unlock took 28 ms, 10 without).
    _refused: dict[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(storage_from_string(self.storage))

    def _item(self, kind: str) -> RateLimitItem:
        if kind not in self._items:
            self._items[kind] = parse(getattr(self, kind))
        return self._items[kind]

    def _in_database(self, kind: str) -> bool:
        return kind in RESERVED and self.sessions is not None

    def allow(self, kind: str, key: str) -> bool:
        """Count one ``kind`` attempt ('uploads' or 'screens') by ``key`` and say whether it is within the limit (the
        storage's hit is atomic: concurrent requests cannot all pass the last free place)."""
        with _storage_errors():
            return self._limiter.hit(self._item(kind), kind, key)

    def reserve(self, kind: str, key: str) -> Reservation | None:
        """Count one attempt of a RESERVED ``kind`` by ``key`` before it is checked: the Reservation, or None (and
        nothing counted) when the limit is reached. Atomic: of N concurrent attempts against a limit of k, k at most
        are reserved, on every worker."""
        if not self._in_database(kind):
            with _storage_errors():
                return Reservation(kind) if self._limiter.hit(self._item(kind), kind, key) else None
        if self.refused(kind, key):
            return None
        from sqlalchemy import delete, func, select, text

        from mpoxscan.web.tables import RateLimitHit, utcnow

        now, client = utcnow(), token_hash(key)
        since = now - self._window(kind)
        with self.sessions() as db:
            if db.get_bind().dialect.name == "postgresql":
                # One count at a time (released at commit or rollback); other counts are not held up.
                db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(kind, client)})
            # SQLite: this write, the transaction's first statement, takes the database's write lock, which every
            # other writer (thread or worker process) waits for until this transaction ends.
            db.execute(delete(RateLimitHit).where(RateLimitHit.id.in_(
                select(RateLimitHit.id).where(RateLimitHit.kind == kind, RateLimitHit.at <= since)
                .with_for_update(skip_locked=True))))  # another count's expired rows are left to it
            hit = RateLimitHit(kind=kind, client=client, at=now)
            db.add(hit)
            db.flush()
            counted = db.scalar(select(func.count()).select_from(RateLimitHit).where(
                RateLimitHit.kind == kind, RateLimitHit.client == client, RateLimitHit.at > since))
            if counted > self._item(kind).amount:
                db.rollback()
                self._remember_refusal(kind, key)
                return None
            db.commit()
            return Reservation(kind, hit.id)

    def refused(self, kind: str, key: str) -> bool:
        """Whether this process saw the database refuse ``key`` a moment ago, its window not moved on since (no
        database asked): a request checking several limits looks at all of them before reserving any."""
        return self._refused.get((kind, key), 0.0) > time.monotonic()

    def _remember_refusal(self, kind: str, key: str) -> None:
        """Until the oldest counted attempt leaves the window, this process refuses ``key`` without asking the
        database again (other workers' counts only add to it; a place given back early is found after that)."""
        now = time.monotonic()
        if len(self._refused) > 10_000:  # forget what has expired (an attack from many addresses)
            for stale in [k for k, until in self._refused.items() if until <= now]:
                self._refused.pop(stale, None)
        self._refused[(kind, key)] = now + self.retry_after(kind, key)

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation whose attempt does not count (the right password or PIN; a check that never
        ran). A `limits` storage cannot take one hit back: there every attempt counts."""
        if reservation.row is None:
            return
        from sqlalchemy import delete

        from mpoxscan.web.tables import RateLimitHit

        with self.sessions() as db:
            db.execute(delete(RateLimitHit).where(RateLimitHit.id == reservation.row))
            db.commit()

    def problem(self) -> str | None:
        """None when the limits storage answers (Redis: a PING); else what is wrong, in a few words (/healthz)."""
        try:
            return None if self._limiter.storage.check() else "cannot be reached"
        except Exception as exc:  # the storage's client library: any of its errors means the same here
            return type(exc).__name__

    def retry_after(self, kind: str, key: str) -> int:
        refused_until = self._refused.get((kind, key), 0.0) - time.monotonic()
        if refused_until > 0:
            return max(1, int(refused_until) + 1)
        if self._in_database(kind):
            from mpoxscan.web.tables import utcnow

            recent = self._recent(kind, key)
            oldest = recent[-self._item(kind).amount] if len(recent) >= self._item(kind).amount else utcnow()
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
