"""The tables, as SQLAlchemy 2.0 declarative models. Only the store's own modules use them; the migrations in
`core/store/migrations` create them (and must keep creating exactly what a revision said, whatever this file becomes).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (BigInteger, CheckConstraint, DateTime, Dialect, Double, ForeignKey, Index, LargeBinary,
                        MetaData, String, Text, TypeDecorator, false, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.store.records import STATUSES


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; stored as naive UTC so every backend sorts them alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store needs timezone-aware datetimes")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), float: Double()}  # Double: 64-bit on every backend


class StudyModel(Base):
    __tablename__ = "studies"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    spec_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class TagModel(Base):
    __tablename__ = "tags"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(255), primary_key=True)


class RunModel(Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint("status IN ({})".format(", ".join(f"'{s}'" for s in STATUSES)), name="status"),
        {"sqlite_autoincrement": True},  # ids of deleted runs are never handed out again
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    config_json: Mapped[str] = mapped_column(Text)
    summary_json: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(String(64))
    dtype: Mapped[str | None] = mapped_column(String(32))
    torch_version: Mapped[str | None] = mapped_column(String(64))
    wall_time_s: Mapped[float | None]
    pid: Mapped[int | None]
    host: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=false())
    progress_step: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    total_steps: Mapped[int | None]
    notes: Mapped[str] = mapped_column(Text, default="", server_default="")
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"), index=True)

    # lazy="raise": tags are always loaded with selectinload, so listing runs can never become N+1 queries
    tags: Mapped[list[TagModel]] = relationship(order_by=TagModel.tag, viewonly=True, lazy="raise")


class MetricKeyModel(Base):
    """Every metric name, stored once; chunks refer to it by id."""

    __tablename__ = "metric_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)


class ChunkModel(Base):
    """One flush of one metric of one run (core.store.chunks): its points as encoded arrays, their summary, and
    what a reader needs to pick chunks without decoding them (step range, count, finite min and max)."""

    __tablename__ = "metric_chunks"
    __table_args__ = (Index("ix_metric_chunks_run_key_step", "run_id", "key_id", "step_first"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key_id: Mapped[int] = mapped_column(ForeignKey("metric_keys.id"))
    n: Mapped[int]
    step_first: Mapped[int] = mapped_column(BigInteger)
    step_last: Mapped[int] = mapped_column(BigInteger)
    v_min: Mapped[float | None]  # finite values only; NULL when the chunk has none
    v_max: Mapped[float | None]
    n_nonfinite: Mapped[int]
    step_data: Mapped[bytes] = mapped_column(LargeBinary)
    epoch_data: Mapped[bytes] = mapped_column(LargeBinary)
    value_data: Mapped[bytes] = mapped_column(LargeBinary)
    time_data: Mapped[bytes] = mapped_column(LargeBinary)
    s_n: Mapped[int]  # points in the summary; 0: no summary (the chunk is too short for one to pay)
    s_step_data: Mapped[bytes | None] = mapped_column(LargeBinary)
    s_epoch_data: Mapped[bytes | None] = mapped_column(LargeBinary)
    s_value_data: Mapped[bytes | None] = mapped_column(LargeBinary)
    s_time_data: Mapped[bytes | None] = mapped_column(LargeBinary)


CELL_STATES: tuple[str, ...] = ("open", "leased", "done", "stopped")


class CellModel(Base):
    """One (variant, seed) of a study as workers claim it (core.store.leases): the run to create (name and
    config), and the lease: its state, the run it made, who holds it and when it last beat. Migration 0003."""

    __tablename__ = "study_cells"
    __table_args__ = (
        CheckConstraint("state IN ({})".format(", ".join(f"'{s}'" for s in CELL_STATES)), name="state"),
        Index("ix_study_cells_state", "state", "study_id", "position"),
    )

    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)  # the grid's order, seed-major
    cell: Mapped[str] = mapped_column(Text)  # the (variant values, seed) as JSON: what the jobs layer matches on
    name: Mapped[str] = mapped_column(String(255))
    config_json: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    holder: Mapped[str | None] = mapped_column(String(255))  # host:pid:token of the worker holding the lease
    heartbeat_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
