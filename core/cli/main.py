"""`python -m core`: train, list, show, export and edit runs, and run studies, from the command line.

Bad input (an unknown preset or field, a value out of range, a broken CSV) exits with code 2 and one line on
stderr naming the field and what is allowed, and creates no run. `--db` is accepted before the subcommand and
after it; when both are given, the one after the subcommand wins (it is the nearer one on the line).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Sequence, TextIO

from core.cli.export import add_export_parser, cmd_export
from core.cli.fix import add_fix_parser, cmd_fix
from core.cli.runs import cmd_delete, cmd_metrics, cmd_note, cmd_runs, cmd_show, cmd_tag
from core.cli.study import add_study_parser, cmd_study
from core.cli.train import cmd_train
from core.cli.worker import add_worker_parser, cmd_worker
from core.experiment.config import PRESETS, ConfigError
from core.experiment.flags import add_config_flags


EXIT_BAD_INPUT = 2
DB_HELP = ("SQLAlchemy URL (or file path) of the run store; default: $LOSSBOARD_DB, else experiments.db at "
           "the project root")


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints the whole usage; one line is clearer
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="Lossboard: train binary classifiers and compare their loss.")
    parser.add_argument("--db", default=None, help=DB_HELP)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one run and store it")
    t.add_argument("--preset", default=None, help=f"start from a named config: {', '.join(PRESETS)}")
    t.add_argument("--config", default=None, help="JSON file of a config (the `config` that `show --json` prints)")
    t.add_argument("--name", default=None, help="run name (default: the preset or a description of the config)")
    t.add_argument("--json", action="store_true", help="print one JSON object with id, status and summary")
    t.add_argument("--dry-run", action="store_true", help="stop after one optimizer step")
    t.add_argument("--run-id", type=int, default=None, help=argparse.SUPPRESS)  # the dashboard pre-creates the run
    add_config_flags(t)

    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--json", action="store_true")
    r.add_argument("--status", default=None, help="only runs with this status")

    s = sub.add_parser("show", help="one run: config, status, summary, metric keys")
    s.add_argument("id", type=int)
    s.add_argument("--json", action="store_true")

    m = sub.add_parser("metrics", help="the stored series of a run")
    m.add_argument("id", type=int)
    m.add_argument("--key", action="append", default=None, help="metric key (repeat for several; default all)")
    m.add_argument("--format", choices=("csv", "json"), default="csv")

    d = sub.add_parser("delete", help="delete a run and its metrics")
    d.add_argument("id", type=int)

    g = sub.add_parser("tag", help="add a tag to a run (--remove to take it off)")
    g.add_argument("id", type=int)
    g.add_argument("tag")
    g.add_argument("--remove", action="store_true")

    n = sub.add_parser("note", help="set a run's note")
    n.add_argument("id", type=int)
    n.add_argument("text")

    add_export_parser(sub)
    add_study_parser(sub)
    add_fix_parser(sub)
    add_worker_parser(sub)
    for command in sub.choices.values():  # where users look first: each subcommand's own --help
        command.add_argument("--db", dest="sub_db", default=None, metavar="URL",
                             help=DB_HELP + "; given here it wins over one given before the subcommand")
    return parser


def db_url(args: argparse.Namespace) -> str | None:
    """The --db the command line gave: after the subcommand, else before it, else None (the environment decides)."""
    return getattr(args, "sub_db", None) or args.db


COMMANDS = {"train": cmd_train, "runs": cmd_runs, "show": cmd_show, "metrics": cmd_metrics, "delete": cmd_delete,
            "tag": cmd_tag, "note": cmd_note, "export": cmd_export, "study": cmd_study, "fix": cmd_fix,
            "worker": cmd_worker}


READ_ONLY = ("runs", "show", "metrics", "export")  # commands that read: a mistyped --db makes no folders for them


def _check_folder(url: str) -> None:
    """A SQLite file in a folder that does not exist is a mistyped --db (a read makes neither folder nor file)."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    from core.store.database import database_url  # noqa: PLC0415

    try:
        parsed = make_url(database_url(url))
    except Exception:  # noqa: BLE001 - the store's own open says what is wrong with the URL
        return
    path = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and path and path != ":memory:" and not path.startswith("file:") \
            and not os.path.isdir(os.path.dirname(os.path.abspath(os.path.expanduser(path)))):
        raise ConfigError("db", f"no database at {path!r}: its folder does not exist")


def main(argv: Sequence[str] | None = None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
         env: dict[str, str] | None = None) -> int:
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    from core.store import RunNotFound, Store, default_url, pid_alive  # noqa: PLC0415 - `--help` loads no store
    from core.store.records import db_reason  # noqa: PLC0415

    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    store = None
    try:
        env = os.environ if env is None else env
        if args.command in READ_ONLY:
            _check_folder(db_url(args) or default_url(env))  # the URL the store opens
        store = Store(db_url(args), env=env)
        try:
            store.mark_interrupted(host=socket.gethostname(), pid_alive=pid_alive)
        except DBAPIError:  # a store that cannot be written now (read-only, locked) can still be read
            pass
        handler = COMMANDS[args.command]
        return handler(args, store, out, err)
    except ConfigError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    except RunNotFound as exc:
        err.write(f"error: {exc.args[0] if exc.args else exc}\n")
        return EXIT_BAD_INPUT
    except ValueError as exc:  # the store's checks (a blank name or tag)
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    except DBAPIError as exc:  # the database refused (read-only, locked past its timeout, full): one line
        where = store.where if store is not None else "the database"
        err.write(f"error: db: {where!r} refused: {db_reason(exc)}\n")
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return 0
