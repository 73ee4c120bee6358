"""Settings: defaults, nested APP__ env, flat aliases, .env, secret files, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from platform_core.errors import AppError, ErrorCode
from platform_core.settings import FLAT_ALIASES, Environment, LogFormat, load_settings

_ENV_NAMES = [*FLAT_ALIASES, "APP_SECRETS_DIR"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run each test in an empty folder (no stray .env) with no APP__/flat variables set."""
    for name in list(os.environ):
        if name.startswith("APP__") or name in _ENV_NAMES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("APP_SECRETS_DIR", str(tmp_path / "no-secrets"))
    monkeypatch.chdir(tmp_path)


def test_defaults_need_nothing_configured() -> None:
    settings = load_settings()
    assert settings.redis.url is None
    assert settings.discord.token is None
    assert settings.security.api_key is None
    assert settings.data_root == Path("artifacts")
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.log_format is LogFormat.TEXT
    assert settings.api_base_url == "http://127.0.0.1:8000"
    assert settings.secret_values() == []


def test_nested_env_and_production_defaults_to_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP__ENVIRONMENT", "production")
    monkeypatch.setenv("APP__REDIS__URL", "redis://:hunter2@redis:6379/0")
    monkeypatch.setenv("APP__API__PORT", "9000")
    monkeypatch.setenv("APP__API__BASE_URL", "https://trainer.example")
    settings = load_settings()
    assert settings.log_format is LogFormat.JSON
    assert settings.redis.url is not None
    assert settings.redis.url.get_secret_value() == "redis://:hunter2@redis:6379/0"
    assert "hunter2" not in repr(settings)
    assert settings.api.port == 9000
    assert settings.api_base_url == "https://trainer.example"


def test_explicit_log_format_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP__ENVIRONMENT", "production")
    monkeypatch.setenv("APP__LOGGING__FORMAT", "text")
    assert load_settings().log_format is LogFormat.TEXT


def test_flat_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://flat:6379/0")
    monkeypatch.setenv("DISCORD_TOKEN", "flat-token")
    monkeypatch.setenv("DISCORD_OWNER_ID", "42")
    monkeypatch.setenv("API_KEY", "flat-key")
    monkeypatch.setenv("DATA_ROOT", "/srv/trainer")
    monkeypatch.setenv("API_KEY_UNRELATED", "")
    settings = load_settings()
    assert settings.discord.owner_id == 42
    assert settings.data_root == Path("/srv/trainer")
    assert sorted(settings.secret_values()) == ["flat-key", "flat-token", "redis://flat:6379/0"]


def test_nested_env_beats_flat_alias_and_empty_flat_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://flat:6379/0")
    monkeypatch.setenv("APP__REDIS__URL", "redis://nested:6379/0")
    monkeypatch.setenv("DISCORD_TOKEN", "")
    settings = load_settings()
    assert settings.redis.url is not None
    assert settings.redis.url.get_secret_value() == "redis://nested:6379/0"
    assert settings.discord.token is None


def test_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("APP__DISCORD__OWNER_ID=7\nAPP__LOGGING__LEVEL=DEBUG\n")
    settings = load_settings()
    assert settings.discord.owner_id == 7
    assert settings.logging.level == "DEBUG"


def test_secret_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "discord__token").write_text("file-token")
    (secrets / "security__api_key").write_text("file-key")
    monkeypatch.setenv("APP_SECRETS_DIR", str(secrets))
    settings = load_settings()
    assert settings.discord.token is not None
    assert settings.discord.token.get_secret_value() == "file-token"
    assert settings.security.api_key is not None
    assert settings.security.api_key.get_secret_value() == "file-key"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("APP__DISCORD__OWNER_ID", "not-a-number", "APP__DISCORD__OWNER_ID"),
        ("APP__API__PORT", "70000", "APP__API__PORT"),
        ("APP__LOGGING__LEVEL", "LOUD", "APP__LOGGING__LEVEL"),
        ("APP__DATA_ROOT", ".", "data_root must name a folder"),
        ("APP__REDIS__CONNECT_TIMEOUT_S", "0", "APP__REDIS__CONNECT_TIMEOUT_S"),
    ],
)
def test_invalid_values_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(AppError) as info:
        load_settings()
    assert info.value.code is ErrorCode.CONFIG_INVALID
    assert expected in info.value.message


def test_invalid_secret_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP__DISCORD__OWNER_ID", "s3cr3t-not-an-id")
    with pytest.raises(AppError) as info:
        load_settings()
    assert "s3cr3t" not in info.value.message


def test_env_example_documents_every_key() -> None:
    example = (Path(__file__).parents[2] / ".env.example").read_text()
    settings = load_settings()
    for section, value in settings.model_dump().items():
        if isinstance(value, dict):
            for key in value:
                assert f"APP__{section.upper()}__{key.upper()}" in example
        else:
            assert f"APP__{section.upper()}" in example
    for flat in FLAT_ALIASES:
        assert flat in example


def test_tracking_defaults_to_the_local_store_and_reads_a_server_token_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tracking = load_settings().tracking
    assert tracking.enabled and tracking.uri is None and tracking.token is None
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "tracking__token").write_text("mlflow-file-token")
    monkeypatch.setenv("APP_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    monkeypatch.setenv("APP__TRACKING__CA_BUNDLE", "/etc/ssl/mlflow-ca.pem")
    settings = load_settings()
    assert settings.tracking.uri == "https://mlflow.example.com"
    assert settings.tracking.ca_bundle == Path("/etc/ssl/mlflow-ca.pem")
    assert settings.secret_values() == ["mlflow-file-token"]  # masked in every log


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APP__TRACKING__FINAL_WAIT_S", "nan"),
        ("APP__TRACKING__FINAL_WAIT_S", "-1"),
        ("APP__TRACKING__REQUEST_TIMEOUT_S", "0"),
        ("APP__TRACKING__ENABLED", "maybe"),
        ("APP__TRACKING__EXPERIMENT", ""),
    ],
)
def test_bad_tracking_values_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(AppError) as info:
        load_settings()
    assert info.value.code is ErrorCode.CONFIG_INVALID and name in info.value.message


def test_settings_are_built_again_only_when_a_source_changed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker asks for its settings once a job: the same sources give the same object, and
    any change (a variable, `.env`, a secret file, a new secret in a sub-folder) shows at once."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    monkeypatch.setenv("APP_SECRETS_DIR", str(secrets))
    first = load_settings()
    assert load_settings() is first  # nothing changed: not parsed again

    monkeypatch.setenv("APP__API__PORT", "8100")
    assert load_settings().api.port == 8100
    (tmp_path / ".env").write_text("APP__API__PORT=8200\n")
    monkeypatch.delenv("APP__API__PORT")
    assert load_settings().api.port == 8200
    (tmp_path / ".env").write_text("APP__API__PORT=8300\n")  # rewritten: a new size or time
    assert load_settings().api.port == 8300

    (secrets / "security__api_key").write_text("key-one")
    key = load_settings().security.api_key
    assert key is not None and key.get_secret_value() == "key-one"
    (secrets / "security__api_key").write_text("key-two!")
    key = load_settings().security.api_key
    assert key is not None and key.get_secret_value() == "key-two!"

    monkeypatch.setenv("APP__API__PORT", "99999")  # a bad value is still a clear error
    with pytest.raises(AppError) as caught:
        load_settings()
    assert "APP__API__PORT" in caught.value.message


def test_settings_load_in_a_working_folder_that_was_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A process whose working folder went away (a test's temp folder, a redeployed
    release) still reads its settings: there is no `.env` there to read."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    monkeypatch.setenv("APP__API__PORT", "8400")
    assert load_settings().api.port == 8400
