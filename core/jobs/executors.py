"""Where a study's runs train: the executor (local worker processes, or a Dask cluster), the Dask scheduler's
address and the lease timeout, from the command line or the environment. Imports neither torch nor Dask, so the
dashboard's pages can ask whether a scheduler is configured."""

from __future__ import annotations

import os
import socket
from typing import Mapping

from core.experiment.config import ConfigError
from core.store.database import SCALE_INSTALL
from core.store.leases import DEFAULT_TIMEOUT_S

EXECUTORS = ("local", "dask")
ENV_EXECUTOR = "LOSSBOARD_EXECUTOR"  # local (default) or dask
ENV_SCHEDULER = "LOSSBOARD_DASK_SCHEDULER"  # tcp://HOST:PORT of the Dask scheduler
ENV_LEASE_TIMEOUT = "LOSSBOARD_LEASE_TIMEOUT_S"  # seconds a lease lives without a heartbeat (default 60)


def executor_options(executor: str | None = None, scheduler: str | None = None, *,
                     env: Mapping[str, str] = os.environ) -> tuple[str, str | None]:
    """The executor and scheduler address: as given, else from the environment, else local. A ConfigError names
    the bad option: an unknown executor, dask without a scheduler, or dask not installed."""
    executor = (executor or env.get(ENV_EXECUTOR, "") or "local").strip().lower()
    scheduler = (scheduler or env.get(ENV_SCHEDULER, "") or "").strip() or None
    if executor not in EXECUTORS:
        raise ConfigError("executor", f"must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    if executor == "dask":
        if scheduler is None:
            raise ConfigError("scheduler", f"--executor dask needs the Dask scheduler's address: --scheduler "
                                           f"tcp://HOST:8786 or {ENV_SCHEDULER}")
        check_dask()
    return executor, scheduler


def check_scheduler(scheduler: str, *, timeout_s: float = 5.0) -> None:
    """A ConfigError on `scheduler` when nothing listens at its tcp:// address: said at once, before a study is
    stored (Dask's client retries a refused connection for its whole timeout). Other protocols are left to Dask."""
    address = scheduler.strip()
    if not address.startswith("tcp://"):
        return
    host, _, port = address[len("tcp://"):].rstrip("/").rpartition(":")
    if not host or not (port.isascii() and port.isdigit()):
        raise ConfigError("scheduler", f"must look like tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786); got {scheduler!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError("scheduler", f"cannot reach the Dask scheduler at {scheduler!r}: "
                                       f"{exc.strerror or exc}") from None


def lease_timeout(env: Mapping[str, str] = os.environ) -> float:
    raw = env.get(ENV_LEASE_TIMEOUT, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError("lease_timeout", f"{ENV_LEASE_TIMEOUT} must be a positive number of seconds; got {raw!r}")
    return value


def check_dask() -> None:
    try:
        import distributed  # noqa: F401, PLC0415
    except ImportError:
        raise ConfigError("executor", f"--executor dask needs dask[distributed], which is not installed: "
                                      f"{SCALE_INSTALL}") from None
