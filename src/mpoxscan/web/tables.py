"""The service's database tables (SQLAlchemy 2 declarative models). Alembic migrations in migrations/ create them."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no time zone: it comes back naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: use datetime.now(timezone.utc)")
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Expert(Base):
    """A medical expert who answers cases. Passwords are stored as argon2 hashes only."""

    __tablename__ = "experts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginSession(Base):
    """An expert's signed-in browser. Only the sha256 of the cookie's token is stored."""

    __tablename__ = "login_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expert_id: Mapped[int] = mapped_column(ForeignKey("experts.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expert: Mapped[Expert] = relationship()


class Case(Base):
    """A photo a person chose to send, with the answer their phone computed and the server's own re-check.

    ``number`` is what the person quotes (not secret); the follow-up link holds a separate secret token, of which only
    the sha256 is stored, so a copy of the database does not open anyone's follow-up page.
    """

    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(16), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    photo_file: Mapped[str] = mapped_column(String(64))
    photo_sha256: Mapped[str] = mapped_column(String(64))
    model_sha256: Mapped[str] = mapped_column(String(64))
    # What the phone showed the person ("device", or "server" for browsers without WebAssembly).
    computed: Mapped[str] = mapped_column(String(8))
    device_probabilities: Mapped[dict] = mapped_column(JSON)
    # The server screens the stored photo again: the queue is ordered by this, which a client cannot forge.
    predicted: Mapped[str] = mapped_column(String(40))
    probabilities: Mapped[dict] = mapped_column(JSON)
    screening_probability: Mapped[float] = mapped_column(Float, index=True)
    screening_threshold: Mapped[float] = mapped_column(Float)
    # The server's answer (deploy/answer.py): "positive", "negative" or "cannot tell", and why it cannot tell.
    answer: Mapped[str] = mapped_column(String(12), index=True)
    answer_reason: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12), default="waiting", index=True)
    # The person's language (a catalogue code, mpoxscan.web.i18n.LANGUAGES): the expert sees it, and the person's
    # follow-up page shows the expert's answer in it.
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    verdict: Mapped[str | None] = mapped_column(String(40))
    message: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_by_id: Mapped[int | None] = mapped_column(ForeignKey("experts.id", ondelete="SET NULL"))
    answered_by: Mapped[Expert | None] = relationship()
    # The person's answers to the page's optional questions: one column each, a code of the fixed vocabulary
    # (cases.QUESTIONS) or NULL where not answered. Columns rather than one JSON document: the queue shows and could
    # filter by them, and the database refuses a value no version of the code wrote (checked on the way in).
    symptom_duration: Mapped[str | None] = mapped_column(String(16))
    body_site: Mapped[str | None] = mapped_column(String(16))
    fever: Mapped[str | None] = mapped_column(String(8))
    swollen_glands: Mapped[str | None] = mapped_column(String(8))
    mpox_contact: Mapped[str | None] = mapped_column(String(8))
    age_band: Mapped[str | None] = mapped_column(String(8))
    # Every photo of the case (1 to 3), in the order sent; the case's own photo and screening columns above are a
    # summary of them: ``photo_file`` is the first photo (its stem owns every stored file of the case), the
    # screening columns come from the photo with the highest mpox probability, and ``answer`` is the most urgent of
    # the photos' answers (what the queue orders by).
    photos: Mapped[list[CasePhoto]] = relationship(back_populates="case", order_by="CasePhoto.position",
                                                   cascade="all, delete-orphan")

    # An optional PIN chosen at sending locks the follow-up page: only its argon2 hash is kept (migration 0007).
    pin_hash: Mapped[str | None] = mapped_column(String(200))
    # A PIN-locked case's device key: the sha256 of the secret the sending phone keeps, which opens the case without
    # the PIN (cases.check_device_key; migration 0008).
    device_key_hash: Mapped[str | None] = mapped_column(String(64))
    # A case sent with an idempotency key (a phone's queue of cases composed offline): the sha256 of the key, so that
    # the same send repeated finds this case rather than making another (cases.submit_case; migration 0009).
    idempotency_hash: Mapped[str | None] = mapped_column(String(64), index=True, unique=True)
    # When the person last opened their unlocked follow-up page: expert messages after it are "new" to them.
    person_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    messages: Mapped[list[Message]] = relationship(
        back_populates="case", cascade="all, delete-orphan", order_by="(Message.created_at, Message.id)")

    # The second consent (migration 0008), separate from the consent to send and optional: these photos, without the
    # person's name, may be used to improve the screening (`mpoxscan cases export`). Withdrawable on the follow-up
    # page; False unless the person ticked it.
    training_consent: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # The expert's label, given with the conclusion: a class of the served model's taxonomy, or "unsure"; whether a
    # test confirmed it (cases.LABEL_TESTS, e.g. "mpox-pcr") and the test's result (cases.TEST_RESULTS). Who gave it
    # is in the audit log only. NULL for cases concluded before 0008 (never exported, like "unsure").
    label: Mapped[str | None] = mapped_column(String(40))
    label_test: Mapped[str | None] = mapped_column(String(16))
    label_test_result: Mapped[str | None] = mapped_column(String(16))


class CasePhoto(Base):
    """One photo of a case, with what the phone and the server's re-screening answered for it. Stored files follow
    the photo store's naming rule: the first photo is ``<stem>.jpg``, the others ``<stem>.<position>.jpg``, each
    with its heat map beside it (``<stem>.heatmap.png``, ``<stem>.2.heatmap.png``), so that the case's photo stem
    owns them all (deleted and swept with the case)."""

    __tablename__ = "case_photos"
    __table_args__ = (UniqueConstraint("case_id", "position"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 1, 2, 3: the order the person sent them in
    photo_file: Mapped[str] = mapped_column(String(64))
    photo_sha256: Mapped[str] = mapped_column(String(64))
    computed: Mapped[str] = mapped_column(String(8))
    device_probabilities: Mapped[dict] = mapped_column(JSON)
    predicted: Mapped[str] = mapped_column(String(40))
    probabilities: Mapped[dict] = mapped_column(JSON)
    screening_probability: Mapped[float] = mapped_column(Float)
    answer: Mapped[str] = mapped_column(String(12))
    answer_reason: Mapped[str | None] = mapped_column(String(64))
    # The photo's skin tone (ITA, degrees; data.skin.working_ita), measured when it arrives with the training consent
    # (for the export's manifest); NULL without that consent or without enough skin (migration 0008).
    ita: Mapped[float | None] = mapped_column(Float)
    case: Mapped[Case] = relationship(back_populates="photos")


class Message(Base):
    """One turn of the conversation about a case: the expert's question or request for a photo, the person's reply
    (text and/or one photo, stored by the photo store's naming rule as ``<stem>.reply-<id>.jpg``), the expert's
    conclusion (the answer). Deleted with its case (withdrawal, purge)."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(8))  # "expert" or "person"
    kind: Mapped[str] = mapped_column(String(16))  # "question", "photo-request", "reply" or "conclusion"
    # A canned text the person reads in their language (catalogue "request.<code>" or, for a conclusion, the
    # verdict code "verdict.<code>"); ``text`` is the free text beside it.
    canned: Mapped[str | None] = mapped_column(String(40))
    text: Mapped[str | None] = mapped_column(Text)
    photo_file: Mapped[str | None] = mapped_column(String(80))
    # The server's screening of a reply photo (answer, reason, probability), as for the case's own photo.
    photo_screening: Mapped[dict | None] = mapped_column(JSON)
    # The language the expert wrote ``text`` in (a catalogue code; NULL: English, the dashboard's language, for
    # messages written before migration 0009): the person is told when it is not theirs.
    language: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expert_id: Mapped[int | None] = mapped_column(ForeignKey("experts.id", ondelete="SET NULL"))
    case: Mapped[Case] = relationship(back_populates="messages")
    expert: Mapped[Expert | None] = relationship()


class AuditEvent(Base):
    """Who saw and answered what: one row per expert action, never updated or deleted by the app."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    expert_id: Mapped[int | None] = mapped_column(ForeignKey("experts.id", ondelete="SET NULL"))
    # The address typed at a failed login is kept, so that attempts on an account can be read back.
    email: Mapped[str | None] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(32))
    case_number: Mapped[str | None] = mapped_column(String(16), index=True)
    detail: Mapped[str | None] = mapped_column(Text)


class RateLimitHit(Base):
    """One counted attempt of a rate-limited kind (security.RESERVED: sign-ins, PIN checks) by one client, kept in the
    database so that the limit survives a restart and is shared by every worker. ``client`` is the sha256 of the
    address; rows older than the limit's window are deleted as new ones come."""

    __tablename__ = "rate_limit_hits"
    __table_args__ = (Index("ix_rate_limit_hits_kind_client_at", "kind", "client", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    client: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StoredPhoto(Base):
    """A file of the database photo store (``serve --photo-store db``): a case's photo or its heat map, named by the
    photo store's naming rule (``<stem>.jpg``, ``<stem>.heatmap.png``), so that every worker and host reads the same
    photos from the database it already shares. Written and committed before the case row, deleted before it."""

    __tablename__ = "stored_photos"
    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class TrainingWithdrawal(Base):
    """A case whose person withdrew the training consent (or the whole case) after giving it: only the case's export
    id (security.export_id: a keyed hash, not the number), so that `cases export` drops it from an export folder even
    once the case itself is deleted. Cases deleted by the retention purge leave no row: their exported photos stay."""

    __tablename__ = "training_withdrawals"
    export_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    withdrawn_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
