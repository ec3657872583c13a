"""The second consent and the expert's label (issue 30): cases.training_consent (optional, never given by default),
cases.label / label_test / label_test_result (a class of the model's taxonomy or "unsure", and the test that
confirmed it), and training_withdrawals (the export ids of cases whose training consent was withdrawn).

Cases stored before this revision have no training consent and no label: no export ever holds them.

Revision ID: 0008_training_consent
Revises: 0007
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mpoxscan.web.tables

revision = "0008_training_consent"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("training_consent", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("label", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("label_test", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("label_test_result", sa.String(length=16), nullable=True))
    op.create_table("training_withdrawals",
                    sa.Column("export_id", sa.String(length=64), nullable=False),
                    sa.Column("withdrawn_at", mpoxscan.web.tables.UTCDateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint("export_id"))


def downgrade() -> None:
    op.drop_table("training_withdrawals")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("label_test_result")
        batch.drop_column("label_test")
        batch.drop_column("label")
        batch.drop_column("training_consent")
