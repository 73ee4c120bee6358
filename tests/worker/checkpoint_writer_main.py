"""Saves checkpoints of a ~24 MB model in a loop until killed: the kill-during-save test."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from trainer_worker.checkpoints import save_checkpoint
from trainer_worker.training.seeding import capture_rng_state
from trainer_worker.training.state import TrainState


def main(directory: str) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(1024, 2048), torch.nn.Linear(2048, 1024))
    generator = torch.Generator().manual_seed(0)
    step = 0
    sys.stdout.write("ready\n")  # imports done: the test times its kill from here
    sys.stdout.flush()
    while True:
        step += 1
        state = TrainState(
            step=step,
            optimizer={},
            scaler=None,
            rng=capture_rng_state(generator),
            tokens_seen=step,
            best_eval_loss=None,
            evals_without_improvement=0,
        )
        save_checkpoint(Path(directory), model, state, eval_loss=float(step))


if __name__ == "__main__":
    main(sys.argv[1])
