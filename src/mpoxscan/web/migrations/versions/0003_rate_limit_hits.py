"""Failed sign-ins counted in the database (rate_limit_hits): the sign-in limit survives restarts and is shared by
every worker.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mpoxscan.web.tables

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rate_limit_hits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('client', sa.String(length=64), nullable=False),
    sa.Column('at', mpoxscan.web.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_rate_limit_hits_kind_client_at', 'rate_limit_hits', ['kind', 'client', 'at'])


def downgrade() -> None:
    op.drop_index('ix_rate_limit_hits_kind_client_at', table_name='rate_limit_hits')
    op.drop_table('rate_limit_hits')
