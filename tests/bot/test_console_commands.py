"""Console mode beyond the commands `test_console.py` types: the console-only commands and
usage errors, live lines redrawn in place on a real terminal (a pty), and which standard
inputs the console reads from."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.conftest import LiveApi
from tests.bot.test_console import type_lines
from trainer_bot.console import HELP, TerminalOutput

pytestmark = pytest.mark.integration
HELP_LINES = HELP.splitlines()


def test_console_only_commands_and_usage_errors(
    live_api: LiveApi, redis_url: str, known: None, tmp_path: Path
) -> None:
    printed = type_lines(
        live_api,
        redis_url,
        tmp_path / "charts",
        "/help",
        "/unwatch run-1",
        "/watch run-1",
        "/unwatch run_id=run-1",
        '/status "run-1',
        "/runs many",
        "/status run-1 run-2",
        "/generate run-1 hello max_new_tokens=lots",
        "/generate run-nope hello 4",
        "/models",
        "/models nope",
        "/cancel run-1",
        "",
    )
    assert printed[0] == "console mode: type /help for the commands"
    assert printed[1 : 1 + len(HELP_LINES)] == HELP_LINES
    rest = printed[1 + len(HELP_LINES) :]
    assert rest[0] == "I wasn't watching run-1."
    assert rest[1] == "Watching run-1."
    watched_lines = rest.index("Stopped watching run-1.")  # key=value names the parameter
    after = rest[watched_lines + 1 :]
    assert after[0] == "cannot read that line: No closing quotation"

    usages = [line for line in after if line.startswith("/")]
    assert usages == [
        "/runs: offset must be a whole number, not 'many'",
        "/status: too many arguments: 'run-2'",
        "/generate: max_new_tokens must be a whole number, not 'lots'",
    ]
    api_answers = [line for line in after if line.startswith("The trainer API said: ")]
    assert len(api_answers) == 2  # the unknown run to generate from, the unknown model
    assert all(line.endswith("(NOT_FOUND)") for line in api_answers)
    assert "Models · No model is registered yet." in after
    assert after[-1] == "run-1 is already completed."  # nothing to ask: it has ended


def test_live_lines_are_redrawn_in_place_on_a_terminal() -> None:
    """On a terminal a notice clears the live line, prints, and draws the live line again;
    the terminal here is a real pseudo-terminal."""
    leader, follower = os.openpty()
    with os.fdopen(follower, "w", encoding="utf-8") as stream:
        output = TerminalOutput(stream)
        assert output.redraw
        output.notice("before any live line")
        output.live("run-1 · running · 10%")
        output.live("run-1 · running · 20%")
        output.notice("Queued run-2.")
        chunks = []
        while select.select([leader], [], [], 0.5)[0]:
            chunks.append(os.read(leader, 4096))
    os.close(leader)
    written = b"".join(chunks).decode("utf-8")
    clear = "\r\x1b[K"
    assert written == (
        "before any live line\r\n"
        f"{clear}run-1 · running · 10%"
        f"{clear}run-1 · running · 20%"
        f"{clear}Queued run-2.\r\n"
        "run-1 · running · 20%"
    )


def test_a_pipe_gets_one_line_per_live_update(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with path.open("w", encoding="utf-8") as stream:
        output = TerminalOutput(stream)
        output.live("run-1 · running · 10%")
        output.notice("done")
    assert path.read_text(encoding="utf-8") == "live: run-1 · running · 10%\ndone\n"


STDIN_PROBE = """
import asyncio
from trainer_bot.console import stdin_reader

async def main() -> None:
    reader = await stdin_reader()
    if reader is None:
        print("none")
        return
    print("line:", (await reader.readline()).decode().strip())

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("stdin", "answer"),
    [
        ("pipe", "line: /status run-1"),
        ("devnull", "none"),  # a container's standard input: the notifier runs on its own
        ("file", "none"),  # a regular file cannot be polled by the event loop
        ("closed", "none"),
    ],
)
def test_standard_input_is_read_from_a_pipe_and_left_alone_otherwise(
    tmp_path: Path, stdin: str, answer: str
) -> None:
    typed = tmp_path / "typed.txt"
    typed.write_text("/status run-1\n", encoding="utf-8")
    probe = ("import sys; sys.stdin.close()\n" if stdin == "closed" else "") + STDIN_PROBE
    sources = {"pipe": subprocess.PIPE, "devnull": subprocess.DEVNULL, "closed": None}
    with typed.open("rb") as regular_file:
        process = subprocess.Popen(
            [sys.executable, "-c", probe],
            stdin=sources.get(stdin, regular_file),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = process.communicate(b"/status run-1\n" if stdin == "pipe" else None, 60)
    assert process.returncode == 0, err
    assert out.decode().strip() == answer
