"""A real MLflow tracking server of a test's own: MLflow's own server code (`mlflow server`,
shipped by mlflow-skinny; Flask from the dev requirements) over a SQLite store in the test's
folder, on a fixed free port. `stop()` kills it (the port closes: connection refused) and
`start()` brings it back on the same port with the same store: an outage, as a client sees
one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.redis_server import free_port

START_TIMEOUT_S = 120.0  # a fresh store runs its migrations first; slow on a loaded machine


class StoppableMlflow:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store_uri(self) -> str:
        return f"sqlite:///{self.folder / 'server.db'}"

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.store_uri,
            "--default-artifact-root",
            (self.folder / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = (self.folder / "server.log").open("ab")
        self._process = subprocess.Popen(
            command, env=env, stdout=log, stderr=log, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.answers():
            if self._process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: see {self.folder / 'server.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError("mlflow server did not answer")
            time.sleep(0.2)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGKILL the server and its workers (its own session): the port closes at once."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=30)
        self._process = None
        while self.answers():  # a worker that outlived its parent for a moment
            time.sleep(0.05)

    def __enter__(self) -> StoppableMlflow:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
