"""The conversation about a case (messages: the expert's questions and requests for a photo, the person's replies,
the conclusion) and the follow-up page's PIN lock (cases.pin_hash) and the person's last visit (cases.person_seen_at).

Cases answered before this revision get their answer as a conclusion message (at the time it was given), and count
as read by the person at that time: no old answer is announced as new.

Only ``down_revision`` names another revision: nothing below depends on what 0005 or 0006 created.

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-26 17:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mpoxscan.web.tables

revision = '0007'
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('author', sa.String(length=8), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('canned', sa.String(length=40), nullable=True),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('photo_file', sa.String(length=80), nullable=True),
    sa.Column('photo_screening', sa.JSON(), nullable=True),
    sa.Column('created_at', mpoxscan.web.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expert_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name='fk_messages_case_id', ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['expert_id'], ['experts.id'], name='fk_messages_expert_id', ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_messages_case_id', 'messages', ['case_id'])
    with op.batch_alter_table('cases') as batch:
        batch.add_column(sa.Column('pin_hash', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('person_seen_at', mpoxscan.web.tables.UTCDateTime(timezone=True), nullable=True))
    op.execute("INSERT INTO messages (case_id, author, kind, canned, text, created_at, expert_id) "
               "SELECT id, 'expert', 'conclusion', verdict, message, answered_at, answered_by_id FROM cases "
               "WHERE status = 'answered' AND answered_at IS NOT NULL")
    op.execute("UPDATE cases SET person_seen_at = answered_at WHERE status = 'answered'")


def downgrade() -> None:
    op.execute("UPDATE cases SET status = 'waiting' WHERE status IN ('asked', 'replied')")  # statuses older code knows
    with op.batch_alter_table('cases') as batch:
        batch.drop_column('person_seen_at')
        batch.drop_column('pin_hash')
    op.drop_index('ix_messages_case_id', table_name='messages')
    op.drop_table('messages')
