"""The database photo store (`serve --photo-store db`): photos and heat maps as rows, shared by every worker and host.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mpoxscan.web.tables

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stored_photos',
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', mpoxscan.web.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_index('ix_stored_photos_created_at', 'stored_photos', ['created_at'])


def downgrade() -> None:
    op.drop_index('ix_stored_photos_created_at', table_name='stored_photos')
    op.drop_table('stored_photos')
