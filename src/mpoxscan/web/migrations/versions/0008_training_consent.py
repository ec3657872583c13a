"""The second consent and the expert's label (issue 30): cases.training_consent (optional, never given by default),
cases.label / label_test / label_test_result (a class of the model's taxonomy or "unsure", and the test that
confirmed it), case_photos.ita (the skin tone, measured on arrival for cases with that consent), and
training_withdrawals (the export ids of cases whose training consent was withdrawn).

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
    # Plain ALTER TABLE ... ADD COLUMN on every backend: on SQLite a batch that copies the table would drop the old
    # one, and the foreign keys' ON DELETE CASCADE would take every case's photos and messages with it. Hence a
    # constant default ("0": false on SQLite and PostgreSQL alike), which SQLite adds in place.
    for column in (sa.Column("training_consent", sa.Boolean(), nullable=False, server_default="0"),
                   sa.Column("label", sa.String(length=40), nullable=True),
                   sa.Column("label_test", sa.String(length=16), nullable=True),
                   sa.Column("label_test_result", sa.String(length=16), nullable=True)):
        op.add_column("cases", column)
    op.add_column("case_photos", sa.Column("ita", sa.Float(), nullable=True))
    if sa.inspect(op.get_bind()).has_table("training_withdrawals"):
        return  # kept by a downgrade (see below), with the withdrawals it holds
    op.create_table("training_withdrawals",
                    sa.Column("export_id", sa.String(length=64), nullable=False),
                    sa.Column("withdrawn_at", mpoxscan.web.tables.UTCDateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint("export_id"))


def downgrade() -> None:
    # training_withdrawals stays: an export made before holds cases that were withdrawn since, and without their
    # export ids, once upgraded again, it would keep those that were deleted as if the retention purge had deleted
    # them (the older schema never reads the table; the upgrade above takes it as it is).
    op.execute("ALTER TABLE case_photos DROP COLUMN ita")
    for name in ("label_test_result", "label_test", "label", "training_consent"):
        # ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later) for the same reason as above: no copy of the table.
        op.execute(f"ALTER TABLE cases DROP COLUMN {name}")
