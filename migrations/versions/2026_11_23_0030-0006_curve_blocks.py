"""curve blocks: packed read copies of figure rows, by range of epochs

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 00:30:00

Jobs stored before this revision have no blocks; their curves are read from the rows, as
before (correct, only slower for long jobs).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "curve_blocks",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("first_epoch", sa.Integer(), nullable=False),
        sa.Column("last_epoch", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("layout", sa.String(length=400), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_curve_blocks_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "first_epoch", name=op.f("pk_curve_blocks")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Stored out of line but not compressed: a read decompressing 3 MB of pglz costs more
        # than reading it (bench/curves_read.py).
        op.execute("ALTER TABLE curve_blocks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("curve_blocks")
