"""A PIN-locked case's device key (cases.device_key_hash): the sha256 of a secret that the phone which sent the case
keeps, and with which it opens the case without the PIN (so that whoever holds the link cannot lock the sender out
by running up the wrong-PIN limit). Cases sent before this revision have none: they open with their PIN, as before.

Revision ID: 0008_hardening
Revises: 0007
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_hardening'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cases') as batch:
        batch.add_column(sa.Column('device_key_hash', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cases') as batch:
        batch.drop_column('device_key_hash')
