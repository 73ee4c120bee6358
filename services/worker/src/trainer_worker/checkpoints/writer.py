"""Writing checkpoints in the background: the training thread only takes the snapshot (a
copy to CPU memory); serialising, hashing and writing it run on the writer's own thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from torch import nn

from trainer_worker.checkpoints.snapshot import Snapshot, snapshot
from trainer_worker.checkpoints.store import CheckpointMeta, write_snapshot
from trainer_worker.training.state import TrainState


class CheckpointWriter:
    """Writes snapshots on a background thread, one at a time. Submitting while a write is
    still going waits for it (at most one snapshot is held in memory); a failed write
    surfaces at the next `submit` or `wait`."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last: Snapshot | None = None  # written; its buffers are refilled by `snapshot`

    def snapshot(self, model: nn.Module, state: TrainState) -> Snapshot:
        """Wait for the write in flight, then copy the model and state into the buffers of
        the last snapshot written (allocated once per run, not once per checkpoint)."""
        self.wait()
        return snapshot(model, state, reuse=self._last)

    def submit(
        self,
        directory: Path,
        snap: Snapshot,
        *,
        eval_loss: float | None,
        on_written: Callable[[CheckpointMeta], None],
    ) -> None:
        """Write `snap` in the background; from now on its buffers belong to the writer."""
        self.wait()
        self._last = snap

        def work() -> None:
            try:
                on_written(write_snapshot(directory, snap, eval_loss=eval_loss))
            except BaseException as exc:  # handed to the training thread at its next call
                self._error = exc

        self._thread = threading.Thread(target=work, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
