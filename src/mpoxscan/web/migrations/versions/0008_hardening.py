"""A PIN-locked case's device key (cases.device_key_hash): the sha256 of a secret that the phone which sent the case
keeps, and with which it opens the case without the PIN (so that whoever holds the link cannot lock the sender out
by running up the wrong-PIN limit). Cases sent before this revision have none: they open with their PIN, as before.

Written beside 0008_training_consent (issue 30) and chained after it when both were merged.

Revision ID: 0008_hardening
Revises: 0008_training_consent
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_hardening'
down_revision = '0008_training_consent'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ALTER TABLE ... ADD COLUMN in place on every backend: a batch copy of cases on SQLite would drop the old table,
    # and ON DELETE CASCADE would take every case's photos and messages with it (as 0008_training_consent says).
    op.add_column('cases', sa.Column('device_key_hash', sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE cases DROP COLUMN device_key_hash")  # SQLite 3.35 and later: no copy either
