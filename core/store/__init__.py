"""Where runs are kept: every run, its metrics, tags, notes and studies, in SQLite or any SQLAlchemy database.

- `records`: the plain frozen records that leave the store (`Run`, `Study`), the statuses and the errors;
- `database`: the URL (`LOSSBOARD_DB`, else experiments.db), the engine, and the migrations applied on open;
- `schema`: the tables; `migrations/`: the Alembic revisions that create and change them;
- `sqlstore`: `Store`, one short transaction per public method;
- `reporter`: `StoreReporter`, the trainer's reporter that writes into a store;
- `processes`: whether a run's training process is still alive.

The names below are the store's interface: `from core.store import Store, Run, RunNotFound`.
"""

from core.store.database import default_url
from core.store.processes import pid_alive
from core.store.records import FINAL_STATUSES, INTERRUPTED_ERROR, STATUSES, Run, RunNotFound, Study, StudyNotFound
from core.store.reporter import StoreReporter
from core.store.sqlstore import Store

__all__ = ["FINAL_STATUSES", "INTERRUPTED_ERROR", "STATUSES", "Run", "RunNotFound", "Store", "StoreReporter", "Study",
           "StudyNotFound", "default_url", "pid_alive"]
