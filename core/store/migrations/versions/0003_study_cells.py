"""Study cells: each (variant, seed) of a study as a row that workers claim with a lease and a heartbeat.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Additive: one new table, `study_cells`; nothing else changes, so a database of any earlier revision keeps every
run, value and study. A study's cells are written when a worker pool first runs it (`core.store.leases`).
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = ("open", "leased", "done", "stopped")


def upgrade() -> None:
    op.create_table(
        "study_cells",
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cell", sa.Text(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("holder", sa.String(255), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("state IN ({})".format(", ".join(f"'{s}'" for s in STATES)),
                           name=op.f("ck_study_cells_state")),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_study_cells_study_id_studies"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_study_cells_run_id_runs"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("study_id", "position", name=op.f("pk_study_cells")),
    )
    op.create_index("ix_study_cells_state", "study_cells", ["state", "study_id", "position"])


def downgrade() -> None:
    op.drop_index("ix_study_cells_state", table_name="study_cells")
    op.drop_table("study_cells")
