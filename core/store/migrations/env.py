"""Alembic environment of the run store. There is no alembic.ini: build the config with
`core.store.database.alembic_config()` and either pass an open connection in `config.attributes["connection"]`
(what `Store` does) or set `sqlalchemy.url` (what a one-off `command.revision(..., autogenerate=True)` needs).

`render_as_batch=True` lets later revisions alter SQLite tables (copy-and-move), so write them with
`op.batch_alter_table(...)`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from core.store.database import make_engine
from core.store.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
