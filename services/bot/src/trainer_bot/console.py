"""Console mode (no `DISCORD_TOKEN`): the bot's commands at a terminal prompt, its notices as
readable lines, each watched run's live status as a line redrawn in place, charts saved as
PNG files it names.

    > /train model=char_lstm tokenizer=tok-1 steps=200
    Queued `run-3f2a9c1b7e04`. I'm watching it and will post updates here.
    Queued · run-3f2a9c1b7e04 · Job: train_model · Queue: training
    run-3f2a9c1b7e04 · running · ██████░░░░ 30% · Step: 60 / 200 · Loss: 2.31 · ...

The commands are the Discord ones (`actions`), typed as `/name arg ...` or `/name key=value`.
Standard input at its end (a container's /dev/null) leaves the notifier running on its own.
"""

from __future__ import annotations

import asyncio
import io
import os
import shlex
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

from platform_core.errors import AppError
from platform_core.http_client import ApiError
from trainer_bot import actions, registry, retraining, studies
from trainer_bot.actions import BotServices, Reply
from trainer_bot.guards import explain
from trainer_bot.senders import embed_text

HELP = """commands:
  /train model=<gpt2|char_lstm> tokenizer=<id> [preset=tiny] [steps=1000] [corpus=<path>]
  /status <run_id>        state, progress and the chart (saved as a PNG)
  /watch <run_id>         follow a run here; /unwatch <run_id> to stop
  /runs [offset]          recent runs, newest first
  /cancel <run_id>        cancel a run (asks first)
  /generate <run_id> <prompt> [max_new_tokens]
  /models [model]         registered models; a model's versions and stages
  /study start model=<family> [space=lr|lr-batch|<json>] [trials=20] [tokenizer=<id>] ...
  /study status <study_id>  a study's trials and best so far (its plot saved as a PNG)
  /retrain <model>        retrain a model on newer data; promoted only when better
  /help, /quit"""
_CLEAR = "\r\x1b[K"
TRAIN_PARAMETERS = ("model", "tokenizer", "preset", "steps", "corpus", "precision")
STUDY_PARAMETERS = (
    "action",
    "study_id",
    "model",
    "space",
    "trials",
    "tokenizer",
    "preset",
    "corpus",
    "steps",
    "parallelism",
    "metric",
    "direction",
    "name",
)
Command = Callable[[dict[str, str]], Awaitable[Reply]]


class TerminalOutput:
    """Notices as lines; live status lines redrawn in place on a terminal (one line per
    update elsewhere, so a pipe or a file reads well too)."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.redraw = stream.isatty()
        self._live = ""

    def notice(self, text: str) -> None:
        if self.redraw and self._live:
            self.stream.write(_CLEAR)
        self.stream.write(text + "\n")
        if self.redraw and self._live:
            self.stream.write(self._live)
        self.stream.flush()

    def live(self, text: str) -> None:
        if self.redraw:
            self._live = text
            self.stream.write(_CLEAR + text)
        else:
            self.stream.write(f"live: {text}\n")
        self.stream.flush()


class Console:
    """The prompt: reads commands, runs them through `actions`, prints their replies."""

    def __init__(
        self,
        services: BotServices,
        user_id: int,
        output: TerminalOutput,
        chart_dir: Path,
        *,
        confirm: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.services = services
        self.user_id = user_id
        self.output = output
        self.chart_dir = chart_dir
        self._confirm = confirm
        # name -> (its parameters in order, how many of them are required, what runs it)
        self._commands: dict[str, tuple[tuple[str, ...], int, Command]] = {
            "train": (TRAIN_PARAMETERS, 2, self._train),
            "status": (("run_id",), 1, self._status),
            "watch": (("run_id",), 1, self._watch),
            "unwatch": (("run_id",), 1, self._unwatch),
            "runs": (("offset",), 0, self._runs),
            "cancel": (("run_id",), 1, self._cancel),
            "generate": (("run_id", "prompt", "max_new_tokens"), 2, self._generate),
            "models": (("model",), 0, self._models),
            "study": (STUDY_PARAMETERS, 1, self._study),
            "retrain": (("model",), 1, self._retrain),
        }

    async def run(self, lines: asyncio.StreamReader) -> bool:
        """Answer each line until `/quit` (True) or the end of input (False)."""
        self.output.notice("console mode: type /help for the commands")
        self._confirm = self._confirm or (lambda question: self._ask(lines, question))
        while raw := await lines.readline():
            line = raw.decode("utf-8", errors="replace").strip()
            if line in {"/quit", "/exit"}:
                return True
            if line:
                await self.execute(line)
        return False

    async def execute(self, line: str) -> None:
        """Run one command line and print what it answers (or why it failed)."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.output.notice(f"cannot read that line: {exc}")
            return
        name = words[0].removeprefix("/")
        if name == "help" or name not in self._commands:
            self.output.notice(HELP if name == "help" else f"unknown command /{name}\n{HELP}")
            return
        parameters, required, command = self._commands[name]
        try:
            values = _arguments(parameters, required, words[1:])
            reply = await command(values)
        except (ApiError, AppError, TimeoutError) as exc:
            self.output.notice(explain(exc))
            return
        except UsageError as exc:
            self.output.notice(f"/{name}: {exc}\n{HELP}")
            return
        self.show(reply)

    def show(self, reply: Reply) -> None:
        if reply.text:
            self.output.notice(reply.text.replace("`", ""))
        if reply.embed is not None:
            self.output.notice(embed_text(reply.embed))
        if reply.chart is not None:
            self.chart_dir.mkdir(parents=True, exist_ok=True)
            path = self.chart_dir / reply.chart.filename
            path.write_bytes(reply.chart.data)
            self.output.notice(f"chart saved to {path}")

    async def _ask(self, lines: asyncio.StreamReader, question: str) -> bool:
        self.output.notice(f"{question} [y/N]")
        return (await lines.readline()).decode().strip().lower() in {"y", "yes"}

    # ---- the commands -----------------------------------------------------------------------

    async def _train(self, values: dict[str, str]) -> Reply:
        return await actions.train(
            self.services,
            user_id=self.user_id,
            model=values["model"],
            tokenizer=values["tokenizer"],
            preset=values.get("preset", "tiny"),
            corpus=values.get("corpus"),
            steps=_int(values.get("steps", "1000"), "steps"),
            precision=values.get("precision", "auto"),
        )

    async def _status(self, values: dict[str, str]) -> Reply:
        return await actions.status(self.services, values["run_id"])

    async def _watch(self, values: dict[str, str]) -> Reply:
        return await actions.watch(self.services, values["run_id"])

    async def _models(self, values: dict[str, str]) -> Reply:
        return await registry.models(self.services, values.get("model"))

    async def _retrain(self, values: dict[str, str]) -> Reply:
        return await retraining.retrain(self.services, values["model"])

    async def _unwatch(self, values: dict[str, str]) -> Reply:
        return await actions.unwatch(self.services, values["run_id"])

    async def _runs(self, values: dict[str, str]) -> Reply:
        return await actions.runs(self.services, _int(values.get("offset", "0"), "offset"))

    async def _cancel(self, values: dict[str, str]) -> Reply:
        run_id = values["run_id"]
        run, refusal = await actions.cancellable(self.services, run_id)
        if refusal is not None:
            return Reply(refusal)
        assert self._confirm is not None
        if not await self._confirm(f"Cancel {run_id} ({run.status})?"):
            return Reply(f"`{run_id}` keeps running.")
        return Reply(await actions.cancel(self.services, run_id))

    async def _generate(self, values: dict[str, str]) -> Reply:
        tokens = _int(values.get("max_new_tokens", "64"), "max_new_tokens")
        return await actions.generate(self.services, values["run_id"], values["prompt"], tokens)

    async def _study(self, values: dict[str, str]) -> Reply:
        """`/study status <study_id>` or `/study start model=... [space=...] ...`."""
        action = values["action"]
        if action == "status" and "study_id" in values:
            return await studies.status(self.services, values["study_id"])
        if action != "start" or "model" not in values:
            raise UsageError("/study status <study_id>, or /study start model=<family> ...")
        return await studies.start(
            self.services,
            user_id=self.user_id,
            model=values["model"],
            space=values.get("space", studies.DEFAULT_SPACE),
            trials=_int(values.get("trials", str(studies.DEFAULT_TRIALS)), "trials"),
            tokenizer=values.get("tokenizer"),
            preset=values.get("preset", "tiny"),
            corpus=values.get("corpus"),
            steps=_int(values.get("steps", str(studies.DEFAULT_STEPS)), "steps"),
            parallelism=_int(values.get("parallelism", "1"), "parallelism"),
            metric=values.get("metric", "eval_loss"),
            direction=values.get("direction", "minimize"),
            name=values.get("name"),
        )


class UsageError(Exception):
    """A command line that does not fit the command."""


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{name} must be a whole number, not {text!r}") from None


def _arguments(parameters: tuple[str, ...], required: int, words: list[str]) -> dict[str, str]:
    """`words` as named values: `key=value` by name, the others in the parameters' order."""
    values: dict[str, str] = {}
    positional = iter(parameters)
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key in parameters:
            values[key] = value
            continue
        name = next((p for p in positional if p not in values), None)
        if name is None:
            raise UsageError(f"too many arguments: {word!r}")
        values[name] = word
    missing = [p for p in parameters[:required] if p not in values]
    if missing:
        raise UsageError(f"missing {', '.join(missing)}")
    return values


async def stdin_reader() -> asyncio.StreamReader | None:
    """Standard input as a stream; None when it cannot be read that way."""
    try:
        fileno = sys.stdin.fileno()
        mode = os.fstat(fileno).st_mode
    except (OSError, ValueError, io.UnsupportedOperation):  # closed, or not a real file
        return None
    # a terminal, a pipe or a socket; not a regular file nor /dev/null, which the event loop
    # cannot poll (a container's standard input: the notifier then runs on its own)
    if not (os.isatty(fileno) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader
