"""Metrics as columnar chunks: every series kept as encoded arrays, one row per flush of one metric.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Creates `metric_keys` (each metric name once) and `metric_chunks`, converts every row of `metrics` into chunks
and drops `metrics`. The conversion streams one (run, metric) at a time, `ROWS_PER_CHUNK` rows per chunk, so memory
stays bounded whatever the size of the database: nothing but one chunk's rows and the list of (run, metric) pairs
is held. Values, NULL (the old store's NaN), +-Inf, steps, epochs and wall times are kept exactly, in the order the
old store read them (by step, then by row id). Runs, tags, notes and studies are not touched.

The chunks are encoded with `core.store.chunks.chunk_row`; every encoding starts with a tag byte, so whatever that
module becomes, it keeps reading what this revision wrote.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import sqlalchemy as sa
from alembic import op

from core.store.chunks import Points, chunk_row

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROWS_PER_CHUNK = 4096  # rows read, encoded and written at a time: a few hundred kB of memory


def upgrade() -> None:
    op.create_table(
        "metric_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_metric_keys_name")),
    )
    chunks = op.create_table(
        "metric_chunks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("step_first", sa.BigInteger(), nullable=False),
        sa.Column("step_last", sa.BigInteger(), nullable=False),
        sa.Column("v_min", sa.Double(), nullable=True),
        sa.Column("v_max", sa.Double(), nullable=True),
        sa.Column("n_nonfinite", sa.Integer(), nullable=False),
        sa.Column("step_data", sa.LargeBinary(), nullable=False),
        sa.Column("epoch_data", sa.LargeBinary(), nullable=False),
        sa.Column("value_data", sa.LargeBinary(), nullable=False),
        sa.Column("time_data", sa.LargeBinary(), nullable=False),
        sa.Column("s_n", sa.Integer(), nullable=False),
        sa.Column("s_step_data", sa.LargeBinary(), nullable=True),
        sa.Column("s_epoch_data", sa.LargeBinary(), nullable=True),
        sa.Column("s_value_data", sa.LargeBinary(), nullable=True),
        sa.Column("s_time_data", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_metric_chunks_run_id_runs"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["key_id"], ["metric_keys.id"], name=op.f("fk_metric_chunks_key_id_metric_keys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_chunks")),
    )
    op.create_index("ix_metric_chunks_run_key_step", "metric_chunks", ["run_id", "key_id", "step_first"])

    conn = op.get_bind()
    keys = sa.table("metric_keys", sa.column("id", sa.Integer()), sa.column("name", sa.String()))
    names = [row[0] for row in conn.execute(sa.text("SELECT DISTINCT key FROM metrics ORDER BY key"))]
    for name in names:
        conn.execute(keys.insert().values(name=name))
    key_ids = dict(conn.execute(sa.select(keys.c.name, keys.c.id)).all())
    pairs = conn.execute(sa.text("SELECT DISTINCT run_id, key FROM metrics ORDER BY run_id, key")).all()
    read = sa.text("SELECT step, epoch, value, wall_time FROM metrics WHERE run_id = :run_id AND key = :key "
                   "ORDER BY step, id")
    for run_id, key in pairs:
        result = conn.execution_options(stream_results=True).execute(read, {"run_id": run_id, "key": key})
        while rows := result.fetchmany(ROWS_PER_CHUNK):
            step, epoch, value, wall = zip(*rows)
            points = Points(np.array(step, dtype=np.int64), np.array(epoch, dtype=np.int64),
                            np.array([np.nan if v is None else v for v in value], dtype=np.float64),
                            np.array(wall, dtype=np.float64))
            conn.execute(chunks.insert().values(run_id=run_id, key_id=key_ids[key], **chunk_row(points)))
        result.close()
    op.drop_index("ix_metrics_run_key_step", table_name="metrics")
    op.drop_table("metrics")


def downgrade() -> None:
    raise NotImplementedError("metric chunks cannot be turned back into rows; restore a backup of the database")
