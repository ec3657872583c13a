"""Cases keep the server's three-valued answer ("positive", "negative", "cannot tell") and its reason.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cases') as batch:
        batch.add_column(sa.Column('answer', sa.String(length=12), nullable=True))
        batch.add_column(sa.Column('answer_reason', sa.String(length=64), nullable=True))
    # Cases stored before the rule existed were screened on probability alone.
    op.execute("UPDATE cases SET answer = CASE WHEN screening_probability >= screening_threshold "
               "THEN 'positive' ELSE 'negative' END")
    with op.batch_alter_table('cases') as batch:
        batch.alter_column('answer', existing_type=sa.String(length=12), nullable=False)
        batch.create_index('ix_cases_answer', ['answer'])


def downgrade() -> None:
    with op.batch_alter_table('cases') as batch:
        batch.drop_index('ix_cases_answer')
        batch.drop_column('answer_reason')
        batch.drop_column('answer')
