"""Cases keep the person's language (a catalogue code: en, fr, pt, es, sw); older cases were all in English.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cases') as batch:
        # The server default fills the rows already there: before this, the pages were in English only.
        batch.add_column(sa.Column('language', sa.String(length=8), nullable=False, server_default='en'))


def downgrade() -> None:
    with op.batch_alter_table('cases') as batch:
        batch.drop_column('language')
