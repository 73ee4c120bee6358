"""The MLflow side of tracking, on the sender thread only: the client, the run (created once,
continued by every later attempt), batched writes within MLflow's limits, and what MLflow
already holds (for idempotent replay).

`import mlflow` costs about a second of CPU and its SQLite store's module (SQLAlchemy,
Alembic) more than another: on the sender thread that is CPU and GIL taken from a run that
may already train. A worker therefore imports both once, before it forks the work horses
that run its jobs (`preload`); elsewhere (a test, a bench, `trainctl sync-tracking`) the
sender imports them lazily. The API, the bot and the CLI never import this module. The
client's own retries are turned off (`MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`, a short request
timeout): a dead server costs one attempt, and the sender's back-off decides when to try
again, while new metrics go to the run's buffer meanwhile.
"""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

from platform_core.layout import DataLayout
from platform_core.manifests import TrackingRecord
from platform_core.settings import TrackingSettings
from trainer_worker.tracking.event_metrics import MetricRow

if TYPE_CHECKING:  # the client's type only; mlflow itself is imported in `connect`
    from mlflow import MlflowClient

# MLflow's limits per log_batch call (mlflow.utils.validation)
MAX_METRICS_PER_BATCH: Final = 1_000
MAX_PARAMS_PER_BATCH: Final = 100
MAX_TAGS_PER_BATCH: Final = 100
MAX_ENTITIES_PER_BATCH: Final = 1_000  # metrics, params and tags together
RUN_ID_TAG: Final = "trainer.run_id"  # finds a run whose creation answer was lost
T = TypeVar("T")
LOCAL_UI: Final = "http://127.0.0.1:5000"  # what `mlflow ui --backend-store-uri <store>` serves


def store_uri(settings: TrackingSettings, layout: DataLayout) -> str:
    """The configured server, or the default SQLite store under the data root."""
    if settings.uri is not None:
        return settings.uri
    return f"sqlite:///{layout.mlflow_dir / 'mlflow.db'}"


def ui_base(settings: TrackingSettings) -> str:
    if settings.ui_url is not None:
        return settings.ui_url.rstrip("/")
    if settings.uri is not None and settings.uri.startswith(("http://", "https://")):
        return settings.uri.rstrip("/")
    return LOCAL_UI


def preload(settings: TrackingSettings) -> None:
    """Import MLflow and the module of its store now (~2 s of CPU; each job's work horse,
    forked after this, then finds them loaded). Its own store's connection is made by each
    job: a database connection is not shared across a fork."""
    importlib.import_module("mlflow")  # its REST store (a server) comes with it
    if settings.uri is None or not settings.uri.startswith(("http://", "https://")):
        importlib.import_module("mlflow.store.tracking.sqlalchemy_store")  # SQLAlchemy, Alembic


def git_commit() -> str:
    """The code's commit: $GIT_COMMIT (images set it at build time) or the checkout's HEAD."""
    if commit := os.environ.get("GIT_COMMIT"):
        return commit
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, fixed arguments
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return found.stdout.strip() or "unknown"


def create_sqlite_store(path: Path) -> None:
    """Create the default SQLite store at `path` whole or not at all: a new store's
    migrations (~1 s, dozens of DDL statements) run on a file of this process's own, which
    is linked into place only once they are done. Two first runs racing, or a job's process
    ending mid-migration, used to leave a half-made store that every later run failed on
    ("table _alembic_tmp_tags already exists"); now the loser of a race drops its copy and
    uses the winner's."""
    if path.exists():
        return
    from mlflow import MlflowClient  # noqa: PLC0415 - ~1 s import, on the sender thread

    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    draft.unlink(missing_ok=True)
    try:
        MlflowClient(tracking_uri=f"sqlite:///{draft}").search_experiments(max_results=1)
        try:
            os.link(draft, path)  # fails if another process's store got there first
        except FileExistsError:
            pass
        except OSError:  # no hard links on this filesystem (FAT, some network mounts)
            if not path.exists():
                os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)


class MlflowBackend:
    """One run's MLflow client. Every method may raise whatever the client raises when the
    store does not answer; the sender treats any such error as an outage."""

    def __init__(self, settings: TrackingSettings, layout: DataLayout) -> None:
        self._settings = settings
        self._layout = layout
        self._client: MlflowClient | None = None
        self._experiment: str | None = None

    @property
    def uri(self) -> str:
        return store_uri(self._settings, self._layout)

    def connect(self) -> MlflowClient:
        if self._client is not None:
            return self._client
        settings = self._settings
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # the sender's back-off retries
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(settings.request_timeout_s)
        if settings.token is not None:
            os.environ["MLFLOW_TRACKING_TOKEN"] = settings.token.get_secret_value()
        if settings.insecure_tls:
            os.environ["MLFLOW_TRACKING_INSECURE_TLS"] = "true"
        if settings.ca_bundle is not None:
            os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(settings.ca_bundle)
        from mlflow import MlflowClient  # noqa: PLC0415 - ~1 s import, on the sender thread

        if settings.uri is None:
            create_sqlite_store(self._layout.mlflow_dir / "mlflow.db")
        self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def warm_up(self) -> None:
        """Import MLflow, open the store (a new SQLite store runs its migrations) and find
        the experiment: the costly part of the first send, done ahead of it."""
        self._experiment_id()

    def open_run(
        self, run_id: str, known: TrackingRecord | None, tags: dict[str, str]
    ) -> TrackingRecord:
        """The run's MLflow run: the known one (a later attempt continues it, running again),
        one created earlier whose answer was lost (found by its tag), or a new one."""
        client = self.connect()
        if known is not None and known.mlflow_run_id is not None:
            client.update_run(known.mlflow_run_id, status="RUNNING")
            self.set_tags(known.mlflow_run_id, tags)
            return known
        experiment_id = self._experiment_id()
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'", max_results=1
        )
        if found:
            mlflow_run_id = str(found[0].info.run_id)
            self.set_tags(mlflow_run_id, tags)
        else:
            created = client.create_run(
                experiment_id, run_name=run_id, tags={**tags, RUN_ID_TAG: run_id}
            )
            mlflow_run_id = str(created.info.run_id)
        url = f"{ui_base(self._settings)}/#/experiments/{experiment_id}/runs/{mlflow_run_id}"
        return TrackingRecord(mlflow_run_id=mlflow_run_id, experiment_id=experiment_id, ui_url=url)

    def _experiment_id(self) -> str:
        if self._experiment is not None:
            return self._experiment
        client = self.connect()
        name = self._settings.experiment
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            self._experiment = str(experiment.experiment_id)
            return self._experiment
        location = None
        if self._settings.uri is None:  # the default store keeps artifacts under the data root
            location = (self._layout.mlflow_dir / "artifacts").resolve().as_uri()
        from mlflow.exceptions import MlflowException  # noqa: PLC0415 - see connect

        try:
            created = str(client.create_experiment(name, artifact_location=location))
        except MlflowException:  # another run's first send created it meanwhile
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            created = str(experiment.experiment_id)
        self._experiment = created
        return self._experiment

    def log_batch(
        self,
        mlflow_run_id: str,
        rows: Sequence[MetricRow] = (),
        *,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Metrics, params and tags in as few `log_batch` calls as MLflow's limits allow (one,
        for up to 1,000 entities with at most 100 params and 100 tags): each call costs a
        fixed few milliseconds of Python on the sender thread, whatever it carries."""
        from mlflow.entities import Metric, Param, RunTag  # noqa: PLC0415 - see connect

        client = self.connect()
        left_params = sorted((params or {}).items())
        left_tags = sorted((tags or {}).items())
        left_rows = list(rows)
        while left_params or left_tags or left_rows:
            some_params, left_params = _split(left_params, MAX_PARAMS_PER_BATCH)
            some_tags, left_tags = _split(left_tags, MAX_TAGS_PER_BATCH)
            room = MAX_ENTITIES_PER_BATCH - len(some_params) - len(some_tags)
            some_rows, left_rows = _split(left_rows, min(room, MAX_METRICS_PER_BATCH))
            client.log_batch(
                mlflow_run_id,
                metrics=[Metric(r.key, r.value, r.timestamp_ms, r.step) for r in some_rows],
                params=[Param(k, v) for k, v in some_params],
                tags=[RunTag(k, v) for k, v in some_tags],
                synchronous=True,
            )

    def set_tags(self, mlflow_run_id: str, tags: dict[str, str]) -> None:
        self.log_batch(mlflow_run_id, tags=tags)

    def existing(self, mlflow_run_id: str, keys: Iterable[str]) -> set[tuple[str, int]]:
        """The (key, step) pairs MLflow holds for `keys`: what replay must not send again."""
        client = self.connect()
        held: set[tuple[str, int]] = set()
        for key in sorted(set(keys)):
            held |= {(key, int(m.step)) for m in client.get_metric_history(mlflow_run_id, key)}
        return held

    def log_artifact(self, mlflow_run_id: str, path: Path, folder: str | None = None) -> None:
        self.connect().log_artifact(mlflow_run_id, str(path), artifact_path=folder)

    def terminate(self, mlflow_run_id: str, status: str) -> None:
        self.connect().set_terminated(mlflow_run_id, status=status)


def _split(items: list[T], size: int) -> tuple[list[T], list[T]]:
    """The first `size` items, and the rest."""
    return items[:size], items[size:]


def host_name() -> str:
    return socket.gethostname()
