"""Up to three photos per case (``case_photos``, one row per photo with its own screening) and the person's answers
to the page's optional questions (one column each). Cases already stored get their one photo as photo 1.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

QUESTION_COLUMNS = [('symptom_duration', 16), ('body_site', 16), ('fever', 8), ('swollen_glands', 8),
                    ('mpox_contact', 8), ('age_band', 8)]


def upgrade() -> None:
    op.create_table('case_photos',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('photo_file', sa.String(length=64), nullable=False),
    sa.Column('photo_sha256', sa.String(length=64), nullable=False),
    sa.Column('computed', sa.String(length=8), nullable=False),
    sa.Column('device_probabilities', sa.JSON(), nullable=False),
    sa.Column('predicted', sa.String(length=40), nullable=False),
    sa.Column('probabilities', sa.JSON(), nullable=False),
    sa.Column('screening_probability', sa.Float(), nullable=False),
    sa.Column('answer', sa.String(length=12), nullable=False),
    sa.Column('answer_reason', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('case_id', 'position')
    )
    op.create_index('ix_case_photos_case_id', 'case_photos', ['case_id'])
    # Every case stored so far had one photo: it becomes photo 1, with the screening the case row already holds.
    op.execute("INSERT INTO case_photos (case_id, position, photo_file, photo_sha256, computed, device_probabilities, "
               "predicted, probabilities, screening_probability, answer, answer_reason) "
               "SELECT id, 1, photo_file, photo_sha256, computed, device_probabilities, predicted, probabilities, "
               "screening_probability, answer, answer_reason FROM cases")
    with op.batch_alter_table('cases') as batch:
        for name, length in QUESTION_COLUMNS:
            batch.add_column(sa.Column(name, sa.String(length=length), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cases') as batch:
        for name, _length in reversed(QUESTION_COLUMNS):
            batch.drop_column(name)
    op.drop_index('ix_case_photos_case_id', table_name='case_photos')
    op.drop_table('case_photos')
