"""Fast reads: plain tuples straight from the DBAPI cursor, with the cyclic GC paused while millions of them are
made, and id lists cut into chunks that fit one IN (...) clause."""

from __future__ import annotations

import contextlib
import gc
from typing import Any, Iterator, Sequence

from sqlalchemy.engine import Connection


CHUNK = 500  # ids per IN (...) list


def chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Millions of fresh row tuples would trigger the cyclic GC over and over (half the time of a big read)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"  # qmark: sqlite3; format/pyformat: the others


def fetch(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Plain tuples straight from the DBAPI cursor: no per-row SQLAlchemy objects on the hot read paths."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()
