"""compose.yaml, the Dockerfiles and the Makefile, checked without a Docker engine: the
services, profiles, health checks, volumes and secrets handling, and that every file a
build or a target names exists."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from platform_core.json_types import JsonObject, JsonValue
from trainer_cli.main import build_parser

ROOT = Path(__file__).parents[1]
DOCKERFILES = {
    "api": ROOT / "services/api/Dockerfile",
    "worker": ROOT / "services/worker/Dockerfile",
    "bot": ROOT / "services/bot/Dockerfile",
}


def _object(value: JsonValue | None) -> JsonObject:
    assert isinstance(value, dict), value
    return value


@pytest.fixture(scope="module")
def compose() -> JsonObject:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    return _object(loaded)


def _services(compose: JsonObject) -> dict[str, JsonObject]:
    return {name: _object(body) for name, body in _object(compose["services"]).items()}


def test_dev_and_prod_profiles_start_redis_api_worker_scheduler_and_bot(
    compose: JsonObject,
) -> None:
    services = _services(compose)
    for profile in ("dev", "prod"):
        started = {name for name, s in services.items() if profile in _list(s.get("profiles"))}
        assert started == {
            "redis",
            "api",
            "worker",
            "scheduler",
            "bot",
            "postgres",
            "mlflow",
        }, profile
    assert _list(services["worker-gpu"]["profiles"]) == ["gpu"]


def test_the_gpu_worker_asks_for_gpus_and_builds_the_cuda_variant(compose: JsonObject) -> None:
    gpu = _services(compose)["worker-gpu"]
    devices = _list(
        _object(_object(_object(gpu["deploy"])["resources"])["reservations"])["devices"]
    )
    assert _list(_object(devices[0])["capabilities"]) == ["gpu"]
    args = _object(_object(gpu["build"])["args"])
    assert "cu" in str(args["TORCH_INDEX_URL"])  # a CUDA wheel index, not the CPU one


def test_every_long_running_service_has_a_healthcheck_and_a_restart_policy(
    compose: JsonObject,
) -> None:
    for name, service in _services(compose).items():
        test = _list(_object(service["healthcheck"])["test"])
        assert test[0] == "CMD" and len(test) > 1, name
        assert service["restart"] == "unless-stopped", name


@pytest.mark.parametrize(
    ("service", "module"),
    [
        ("worker", "trainer_worker.healthcheck"),
        ("worker-gpu", "trainer_worker.healthcheck"),
        ("bot", "trainer_bot.healthcheck"),
    ],
)
def test_worker_and_bot_health_checks_run_their_check_module(
    compose: JsonObject, service: str, module: str
) -> None:
    test = _list(_object(_services(compose)[service]["healthcheck"])["test"])
    assert test == ["CMD", "python", "-m", module]
    assert importlib.util.find_spec(module) is not None


def test_the_scheduler_runs_trainctl_scheduler_and_checks_its_registration(
    compose: JsonObject,
) -> None:
    scheduler = _services(compose)["scheduler"]
    assert _list(scheduler["command"]) == ["trainctl", "scheduler"]
    test = _list(_object(scheduler["healthcheck"])["test"])
    assert test == ["CMD", "python", "-m", "trainer_worker.healthcheck", "scheduler"]


def test_the_bot_waits_for_a_healthy_api(compose: JsonObject) -> None:
    bot = _services(compose)["bot"]
    depends = _object(bot["depends_on"])
    assert _object(depends["api"])["condition"] == "service_healthy"
    assert bot["restart"] == "unless-stopped"


def test_named_volumes_hold_the_data_root_the_hf_cache_and_redis(compose: JsonObject) -> None:
    services = _services(compose)
    assert set(_object(compose["volumes"])) == {
        "data",
        "hf_cache",
        "redis_data",
        "postgres_data",
        "mlflow_artifacts",
    }
    for name in ("api", "worker", "worker-gpu", "bot"):
        assert "data:/data" in _list(services[name]["volumes"]), name
        assert _object(services[name]["environment"])["APP__DATA_ROOT"] == "/data"
    for name in ("worker", "worker-gpu"):
        assert "hf_cache:/hf-cache" in _list(services[name]["volumes"])
        assert _object(services[name]["environment"])["HF_HOME"] == "/hf-cache"
    assert "redis_data:/data" in _list(services["redis"]["volumes"])
    assert "--appendonly" in _list(services["redis"]["command"])


def _interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's `${VAR:-default}`: VAR when set and non-empty, else the default."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: variables.get(m[1]) or m[2], value)


def test_the_redis_url_comes_from_env_with_the_compose_redis_as_default(
    compose: JsonObject,
) -> None:
    # `environment` wins over env_file, so a plain value would hide the one in .env
    other = "redis://:s3cret@other-redis:6380/1"
    for name in ("api", "worker", "worker-gpu", "bot"):
        url = str(_object(_services(compose)[name]["environment"])["APP__REDIS__URL"])
        assert _interpolate(url, {}) == "redis://redis:6379/0", name
        assert _interpolate(url, {"APP__REDIS__URL": ""}) == "redis://redis:6379/0", name
        assert _interpolate(url, {"APP__REDIS__URL": other}) == other, name


def test_the_workers_track_to_the_compose_mlflow_on_the_compose_postgres(
    compose: JsonObject,
) -> None:
    services = _services(compose)
    for name in ("worker", "worker-gpu"):
        uri = str(_object(services[name]["environment"])["APP__TRACKING__URI"])
        assert _interpolate(uri, {}) == "http://mlflow:5000", name
    command = " ".join(str(part) for part in _list(services["mlflow"]["command"]))
    assert "--port 5000" in command and "@postgres:5432/mlflow" in command
    assert "$${POSTGRES_PASSWORD}" in command  # read inside the container, never written here
    depends = _object(services["mlflow"]["depends_on"])
    assert _object(depends["postgres"])["condition"] == "service_healthy"


def test_secrets_come_from_env_file_and_never_from_the_compose_file(compose: JsonObject) -> None:
    for name in ("api", "worker", "worker-gpu", "bot"):
        service = _services(compose)[name]
        assert service["env_file"] == ".env", name
        env = _object(service["environment"])
        assert not [key for key in env if re.search("TOKEN|API_KEY|PASSWORD|SECRET", key)]
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".env", ".venv", ".git", "artifacts"} <= set(ignored)


def test_compose_variables_are_documented_in_env_example(compose: JsonObject) -> None:
    text = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    variables = set(re.findall(r"\$\{(\w+)(?::-[^}]*)?\}", text))
    documented = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert variables, "compose.yaml interpolates its tunables"
    assert [v for v in sorted(variables) if v not in documented] == []


def test_compose_builds_name_existing_dockerfiles(compose: JsonObject) -> None:
    for name, service in _services(compose).items():
        if "build" in service:
            build = _object(service["build"])
            assert (ROOT / str(build["context"]) / str(build["dockerfile"])).is_file(), name


@pytest.mark.parametrize("service", sorted(DOCKERFILES))
def test_dockerfiles_are_multi_stage_non_root_and_copy_what_exists(service: str) -> None:
    text = DOCKERFILES[service].read_text(encoding="utf-8")
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2  # build and runtime stages
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    for source in re.findall(r"^COPY (?!--from)(\S+) ", text, re.MULTILINE):
        assert (ROOT / source).exists(), source
    installs = re.findall(r"^RUN pip install -c (\S+) (.+)$", text, re.MULTILINE)
    assert installs, "the project packages are installed with the pinned constraints"
    for constraints, packages in installs:
        assert (ROOT / constraints).is_file()
        for package in packages.split():
            assert (ROOT / package / "pyproject.toml").is_file(), package


@pytest.mark.parametrize("service", ["api", "bot"])
def test_api_and_bot_images_carry_no_torch(service: str) -> None:
    text = DOCKERFILES[service].read_text(encoding="utf-8")
    instructions = [line for line in text.splitlines() if not line.startswith("#")]
    assert not [line for line in instructions if "torch" in line]
    packages = re.findall(r"^RUN pip install -c \S+ (.+)$", text, re.MULTILINE)[0].split()
    for package in packages:
        meta = tomllib.loads((ROOT / package / "pyproject.toml").read_text(encoding="utf-8"))
        dependencies = meta["project"]["dependencies"]
        assert not [d for d in dependencies if d.startswith(("torch", "transformers"))], package


def test_images_that_run_trainctl_install_the_cli_and_the_worker(compose: JsonObject) -> None:
    """`trainctl` is the CLI package's script; `trainctl worker` needs the worker package."""
    for name, service in _services(compose).items():
        command = service.get("command")
        if not (isinstance(command, list) and command[:1] == ["trainctl"]):
            continue
        dockerfile = ROOT / str(_object(service["build"])["dockerfile"])
        text = dockerfile.read_text(encoding="utf-8")
        packages = re.findall(r"^RUN pip install -c \S+ (.+)$", text, re.MULTILINE)[0].split()
        assert {"./services/cli", "./services/worker"} <= set(packages), name


def test_one_package_declares_the_trainctl_script() -> None:
    declaring = []
    for pyproject in sorted(ROOT.glob("*/*/pyproject.toml")):
        meta = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        if "trainctl" in meta["project"].get("scripts", {}):
            declaring.append(pyproject.parent.relative_to(ROOT).as_posix())
    assert declaring == ["services/cli"]


def test_the_worker_image_pins_torch_from_the_constraints() -> None:
    text = DOCKERFILES["worker"].read_text(encoding="utf-8")
    assert "grep '^torch==' constraints.txt" in text
    assert re.search(r"^torch==2\.13\.0$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)


def _list(value: JsonValue | None) -> list[JsonValue]:
    assert isinstance(value, list), value
    return value


MAKE_TARGETS = {
    "train",
    "resume",
    "clean-artifacts",
    "test",
    "lint",
    "format",
    "docker-build",
    "docker-run",
    "help",
}


def _make_targets() -> dict[str, str]:
    """target -> its one-line recipe."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    found = re.findall(r"^([a-z-]+):[^\n]*## [^\n]+\n\t@?([^\n]+)", text, re.MULTILINE)
    return dict(found)


def test_the_makefile_has_the_seed_targets_each_one_documented_line() -> None:
    targets = _make_targets()
    assert set(targets) == MAKE_TARGETS
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    phony = set(re.findall(r"^\.PHONY: (.+)$", text, re.MULTILINE)[0].split())
    assert phony == MAKE_TARGETS


def test_every_make_target_calls_a_script_or_trainctl_command_that_exists(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for target, recipe in _make_targets().items():
        for script in re.findall(r"(?:\./|bash )(scripts/[\w.-]+)", recipe):
            assert (ROOT / script).is_file(), (target, script)
        for command in re.findall(r"\$\(TRAINCTL\) ([\w-]+)", recipe):
            with pytest.raises(SystemExit) as exit_info:  # argparse exits 0 after --help
                build_parser().parse_args([command, "--help"])
            assert exit_info.value.code == 0, (target, command)
    assert "usage: trainctl" in capsys.readouterr().out
