"""A case sent from a phone's queue carries an idempotency key (cases.idempotency_hash: the sha256 of the key, unique),
so that a send repeated after a lost answer finds the case it made instead of making a second one; and the language
an expert's message was written in (messages.language), so that the person is told when it is not theirs.

Revision ID: 0009_offline_send
Revises: 0008_hardening
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_offline_send"
down_revision = "0008_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place on every backend (ALTER TABLE ... ADD COLUMN, CREATE UNIQUE INDEX): no batch copy of cases, whose
    # ON DELETE CASCADE would take every case's photos and messages with it (see 0008_training_consent).
    op.add_column("cases", sa.Column("idempotency_hash", sa.String(length=64), nullable=True))
    op.create_index("ix_cases_idempotency_hash", "cases", ["idempotency_hash"], unique=True)
    op.add_column("messages", sa.Column("language", sa.String(length=8), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE messages DROP COLUMN language")
    op.drop_index("ix_cases_idempotency_hash", table_name="cases")
    op.execute("ALTER TABLE cases DROP COLUMN idempotency_hash")
