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


SCHEMES = ("tcp", "tls", "ws", "wss", "inproc", "ucx")  # the protocols Dask's addresses name
SOCKETS = ("tcp", "tls", "ws", "wss")  # ... those a HOST:PORT socket can be checked for


def check_scheduler(scheduler: str, *, timeout_s: float = 5.0) -> None:
    """A ConfigError on `scheduler` unless a Dask scheduler answers there: said at once, before a study is stored
    (Dask's client retries a refused connection for its whole timeout). An address without a protocol is tcp://,
    as Dask reads it; an unknown protocol, a port nothing listens on, or a listener that is not a Dask scheduler
    (a database's port) are each refused in one line."""
    address = scheduler.strip()
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme not in SCHEMES:
        raise ConfigError("scheduler", f"{scheduler!r} is not a Dask address: use tcp://HOST:PORT (e.g. "
                                       f"tcp://127.0.0.1:8786; {', '.join(s + '://' for s in SCHEMES)})")
    if scheme not in SOCKETS:
        return
    host, _, port = rest.rstrip("/").rpartition(":")
    if not host or not (port.isascii() and port.isdigit()):
        raise ConfigError("scheduler", f"must look like tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786); got {scheduler!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError("scheduler", f"cannot reach the Dask scheduler at {scheduler!r}: "
                                       f"{exc.strerror or exc}") from None
    if scheme == "tcp":
        _identify(f"tcp://{rest}", scheduler, timeout_s)


def _identify(address: str, given: str, timeout_s: float) -> None:
    """Ask what listens at `address` (Dask's "identity" call): a ConfigError unless it is a Dask scheduler."""
    import asyncio  # noqa: PLC0415

    try:
        from distributed.comm import connect  # noqa: PLC0415
    except ImportError:
        return  # check_dask says what to install

    async def identity() -> object:
        comm = await connect(address, timeout=timeout_s)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await asyncio.wait_for(comm.read(), timeout_s)
        finally:
            comm.abort()

    try:  # bounded as a whole: a listener that never answers holds Dask's own handshake for ever
        answer = asyncio.run(asyncio.wait_for(identity(), 2 * timeout_s))
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, nothing there speaks Dask
        raise ConfigError("scheduler", f"no Dask scheduler answered at {given!r} (something else listens there?): "
                                       f"{type(exc).__name__}{': ' + str(exc) if str(exc) else ''}") from None
    if not (isinstance(answer, dict) and answer.get("type") == "Scheduler"):
        raise ConfigError("scheduler", f"what answered at {given!r} is not a Dask scheduler")


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
