"""One settings model for every service.

Sources, highest priority first: constructor arguments, `APP__...` environment variables
(nested with `__`, e.g. `APP__REDIS__URL`), the well-known flat names operators expect
(`REDIS_URL`, `DISCORD_TOKEN`, `DISCORD_OWNER_ID`, `API_KEY`, `DATA_ROOT`, `MLFLOW_TRACKING_URI`,
`MLFLOW_TRACKING_TOKEN`), a `.env` file, and secret files (`<secrets dir>/redis__url`,
`<secrets dir>/tracking__token`, default dir `/run/secrets`, overridable with
`APP_SECRETS_DIR`). `.env.example` documents every key.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from platform_core.errors import AppError, ErrorCode

# Flat names that operators and container platforms set by habit -> nested field path.
FLAT_ALIASES: dict[str, tuple[str, str | None]] = {
    "REDIS_URL": ("redis", "url"),
    "DISCORD_TOKEN": ("discord", "token"),
    "DISCORD_OWNER_ID": ("discord", "owner_id"),
    "API_KEY": ("security", "api_key"),
    "DATA_ROOT": ("data_root", None),
    "MLFLOW_TRACKING_URI": ("tracking", "uri"),
    "MLFLOW_TRACKING_TOKEN": ("tracking", "token"),
}


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(_Section):
    url: SecretStr | None = None  # unset: the project starts its own redis-server
    connect_timeout_s: float = Field(default=2.0, gt=0, le=60)  # fail fast, never hang
    events_stream: str = "trainer:events"
    # ~100k events is days of progress events at one per second, a few tens of MB.
    events_maxlen: int = Field(default=100_000, ge=1_000)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: LogFormat | None = None  # None: JSON in production, text in development


class SecuritySettings(_Section):
    api_key: SecretStr | None = None  # unset: the API accepts every caller (laptop default)
    max_request_bytes: int = Field(default=1_048_576, ge=1_024)  # 1 MiB covers any job spec


class TrainingSettings(_Section):
    # The activation memory a submitted model run may need (specs.TrainRunSpec.
    # activation_bytes, a conservative fp32 estimate): 96 GiB fits the largest single GPU
    # of the documented hardware (141 GB) with room for weights and optimizer state.
    max_activation_gib: float = Field(default=96.0, gt=0, le=100_000, allow_inf_nan=False)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65_535)
    base_url: str | None = None  # how clients reach the API; default http://host:port


class DiscordSettings(_Section):
    token: SecretStr | None = None  # unset: console mode, DMs are written to the log
    owner_id: int | None = Field(default=None, ge=1)
    # a run's live status message is edited at most this often (seconds)
    live_update_s: float = Field(default=10.0, ge=1)
    notify_best_eval: bool = False  # a new best eval loss gets a message of its own


class WorkerSettings(_Section):
    # attempts a run may start in all (RQ's retries of a transient failure and requeues after
    # a dead worker alike) before a requeue gives up and ends it failed: a run that crashes
    # its worker every time (a full disk, a poisoned input) must not loop for ever; raise it
    # for preemptible machines that die often
    max_attempts: int = Field(default=3, ge=1, le=1_000)


class ClassifySettings(_Section):
    # the arXiv API's query endpoint; a mirror or a test server replaces it
    arxiv_url: str = Field(default="https://export.arxiv.org/api/query", min_length=8)
    # arXiv's terms of use: no more than one request every three seconds
    arxiv_min_interval_s: float = Field(default=3.0, ge=0.0, le=600.0)


class TrackingSettings(_Section):
    """MLflow experiment tracking of every run (trainer_worker.tracking, docs/tracking.md)."""

    enabled: bool = True  # off: runs train without tracking and the worker never imports MLflow
    # None: a SQLite store under the data root (sqlite:///<data_root>/mlflow/mlflow.db), with
    # artifacts beside it; nothing to start. A remote server: https://mlflow.example.com
    uri: str | None = Field(default=None, min_length=1, max_length=2_048)
    token: SecretStr | None = None  # the remote server's bearer token (MLFLOW_TRACKING_TOKEN)
    insecure_tls: bool = False  # True: do not verify the server's TLS certificate (self-signed)
    ca_bundle: Path | None = None  # a CA bundle that verifies the server's certificate
    experiment: str = Field(default="model-trainer", min_length=1, max_length=256)
    # how UI links are built (GET /runs/{id}); None: the server's URI, or for the SQLite
    # store what `mlflow ui --backend-store-uri <store>` serves
    ui_url: str | None = Field(default=None, min_length=1, max_length=2_048)
    # how long the end of a run waits for the sender to hand MLflow what it holds; past it the
    # rest stays in the run's buffer and the run says so (it still completes)
    final_wait_s: float = Field(default=30.0, ge=0, le=3_600, allow_inf_nan=False)
    # one HTTP request's time limit: a dead server costs a retry slot, never a stuck sender
    request_timeout_s: int = Field(default=10, ge=1, le=600)


class StudySettings(_Section):
    # Optuna's storage for every study: unset, a journal file in each study's folder (nothing
    # to start; workers sharing the data root share it); e.g. postgresql://user@host/db for
    # workers on many machines. A secret: it may carry a password.
    storage_url: SecretStr | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="APP__",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        secrets_dir_missing="ok",
        secrets_nested_delimiter="__",
        secrets_prefix="",
    )

    environment: Environment = Environment.DEVELOPMENT
    data_root: Path = Path("artifacts")  # tokenizers/, runs/, studies/, redis/ live here
    redis: RedisSettings = RedisSettings()
    logging: LoggingSettings = LoggingSettings()
    security: SecuritySettings = SecuritySettings()
    training: TrainingSettings = TrainingSettings()
    api: ApiSettings = ApiSettings()
    discord: DiscordSettings = DiscordSettings()
    worker: WorkerSettings = WorkerSettings()
    classify: ClassifySettings = ClassifySettings()
    tracking: TrackingSettings = TrackingSettings()
    studies: StudySettings = StudySettings()

    @field_validator("data_root")
    @classmethod
    def _data_root_not_empty(cls, value: Path) -> Path:
        if str(value).strip() in {"", "."}:
            raise ValueError("data_root must name a folder, not the current directory")
        return value.expanduser()

    @property
    def log_format(self) -> LogFormat:
        if self.logging.format is not None:
            return self.logging.format
        if self.environment is Environment.PRODUCTION:
            return LogFormat.JSON
        return LogFormat.TEXT

    @property
    def api_base_url(self) -> str:
        return self.api.base_url or f"http://{self.api.host}:{self.api.port}"

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log formatter to mask verbatim."""
        secrets = [
            self.redis.url,
            self.security.api_key,
            self.discord.token,
            self.tracking.token,
            self.studies.storage_url,
        ]
        return [s.get_secret_value() for s in secrets if s is not None]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _FlatAliasSource(settings_cls),
            dotenv_settings,
            NestedSecretsSettingsSource(file_secret_settings),
        )


class _FlatAliasSource(EnvSettingsSource):
    """Reads the flat names in FLAT_ALIASES from the environment into nested fields."""

    def __call__(self) -> dict[str, object]:
        flat: dict[str, object] = {}
        nested: dict[str, dict[str, str]] = {}
        for name, (section, field) in FLAT_ALIASES.items():
            raw = os.environ.get(name)
            if not raw:
                continue
            if field is None:
                flat[section] = raw
            else:
                nested.setdefault(section, {})[field] = raw
        return {**flat, **nested}


def load_settings() -> Settings:
    """Build Settings from the environment; a bad value becomes CONFIG_INVALID naming the key.
    Built again only when a source changed since the last call (the environment, the working
    folder's `.env`, a file in the secrets folder): a worker asks once per job, and parsing
    every source costs about a millisecond."""
    secrets_dir = os.environ.get("APP_SECRETS_DIR", "/run/secrets")
    sources = _sources_key(secrets_dir)
    last = _LAST_SETTINGS.get(secrets_dir)
    if last is not None and last[0] == sources:
        return last[1]
    settings = _build_settings(secrets_dir)
    _LAST_SETTINGS.clear()  # one entry: the settings as the sources are now
    _LAST_SETTINGS[secrets_dir] = (sources, settings)
    return settings


_SourcesKey = tuple[object, ...]
_LAST_SETTINGS: dict[str, tuple[_SourcesKey, Settings]] = {}


def _sources_key(secrets_dir: str) -> _SourcesKey:
    """What the settings are read from, as far as telling a change goes: the environment,
    and the size and modification time of `.env` and of each secret file."""
    return (
        tuple(sorted(os.environ.items())),
        _dotenv_stamp(),
        tuple(sorted(filter(None, map(_stamp, _entries(Path(secrets_dir)))))),
    )


def _dotenv_stamp() -> tuple[str, int, int] | None:
    """The working folder's `.env`: its path, time and size (None: none there)."""
    try:
        return _stamp(Path.cwd() / ".env")
    except OSError:  # the working folder was removed: pydantic-settings finds no .env either
        return None


def _entries(folder: Path) -> list[Path]:
    """Every file and folder below `folder`, nested secrets included; none when there is no
    such folder (the usual case outside containers: rglob finds nothing there)."""
    return list(folder.rglob("*"))


def _stamp(path: Path) -> tuple[str, int, int] | None:
    try:
        stat = path.stat()
    except OSError:  # no such file (a working folder since removed included)
        return None
    return str(path), stat.st_mtime_ns, stat.st_size


def _build_settings(secrets_dir: str) -> Settings:
    try:
        return Settings(_secrets_dir=secrets_dir)
    except ValidationError as exc:
        # Name the environment variable, never the value (it may be a secret).
        problems = "; ".join(
            f"APP__{'__'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise AppError(ErrorCode.CONFIG_INVALID, f"invalid settings: {problems}") from exc
