"""GPT-2 (Hugging Face transformers) behind the engine's forward contract.

The loop, evaluation and inference only ever call `model(input_ids)` with a (B, T) long
tensor and get (B, T, V) logits back; `GPT2LM` adapts `GPT2LMHeadModel` to that. A model is
either built from a named preset (`tiny`, `small`, `124M`) with the tokenizer's vocabulary,
or loaded from pretrained weights: a folder written by `save_pretrained` (an absolute path,
resolved inside the data root by the caller), or a hub id looked up in an absolute cache folder
first and downloaded (bounded retries) only when missing and not offline.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from torch import Tensor, nn
from transformers import GPT2Config, GPT2LMHeadModel

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import PACKAGED_MODELS, is_hub_id
from trainer_worker.models.encoder import packaged_model_folder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GPT2Spec:
    n_layer: int = 2  # transformer blocks
    n_head: int = 2  # attention heads; must divide n_embd
    n_embd: int = 64  # residual stream width
    n_positions: int = 128  # longest context the position table covers
    dropout: float = 0.0  # nanoGPT: 0 for pretraining; 0.1+ helps when finetuning on little text


GPT2_PRESETS: dict[str, GPT2Spec] = {
    # a few hundred thousand parameters: tests and smoke runs on a laptop CPU
    "tiny": GPT2Spec(n_layer=2, n_head=2, n_embd=64, n_positions=128),
    # a few million parameters: a real but quick CPU run on a small corpus
    "small": GPT2Spec(n_layer=4, n_head=4, n_embd=256, n_positions=256),
    # the original GPT-2 small shape (124M with the 50257-token vocabulary); wants a GPU
    "124M": GPT2Spec(n_layer=12, n_head=12, n_embd=768, n_positions=1024),
}

DOWNLOAD_ATTEMPTS = 2  # huggingface_hub already retries each request 5 times inside one attempt
DOWNLOAD_BACKOFF_S = 2.0  # first pause between attempts; doubles after each failure


class GPT2LM(nn.Module):
    """`GPT2LMHeadModel` seen through the forward contract: (B, T) ids -> (B, T, V) logits."""

    def __init__(self, hf: GPT2LMHeadModel, context_size: int) -> None:
        super().__init__()
        self.hf = hf
        # generation and scoring crop inputs to this many positions
        self.context_size = context_size

    def forward(self, input_ids: Tensor) -> Tensor:
        # use_cache=False: the loop never reuses past key/values, so don't build them
        out = self.hf(input_ids=input_ids, use_cache=False)
        logits = out.logits  # (B, T, V)
        if not isinstance(logits, Tensor):
            raise AppError(ErrorCode.INTERNAL, "GPT-2 forward returned no logits")
        return logits

    def save_pretrained(self, directory: Path) -> None:
        """Write the weights and config in the Hugging Face layout (loadable by `load`)."""
        self.hf.save_pretrained(directory)


def build_gpt2(spec: GPT2Spec, vocab_size: int, eos_id: int | None) -> GPT2LM:
    """A freshly initialised GPT-2 of shape `spec` over the tokenizer's vocabulary."""
    if spec.n_embd % spec.n_head != 0:
        raise AppError(
            ErrorCode.CONFIG_INVALID,
            f"n_embd={spec.n_embd} must be a multiple of n_head={spec.n_head}",
        )
    _check_vocab(vocab_size, eos_id)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        resid_pdrop=spec.dropout,
        embd_pdrop=spec.dropout,
        attn_pdrop=spec.dropout,
        # GPT-2's defaults (50256) lie outside a small trained vocabulary; the tokenizer's
        # end-of-text token plays both roles, as it does in the original GPT-2
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    return GPT2LM(GPT2LMHeadModel(config), spec.n_positions)


def load_gpt2(
    name_or_path: str,
    vocab_size: int,
    eos_id: int | None,
    *,
    cache_dir: Path | None = None,
    attempts: int = DOWNLOAD_ATTEMPTS,
    backoff_s: float = DOWNLOAD_BACKOFF_S,
) -> GPT2LM:
    """Pretrained GPT-2 from a local folder or a hub id (local cache first, then download).

    When the tokenizer's vocabulary differs from the checkpoint's, the embedding table is
    resized to it (new rows freshly initialised), so logits always span the tokenizer ids.
    """
    _check_vocab(vocab_size, eos_id)
    hf = _from_pretrained(name_or_path, cache_dir, attempts, backoff_s)
    embeddings = hf.get_input_embeddings()
    if not isinstance(embeddings, nn.Embedding):
        raise AppError(ErrorCode.MODEL_NOT_FOUND, f"{name_or_path!r} has no token embedding table")
    old_vocab = embeddings.weight.shape[0]
    if old_vocab != vocab_size:
        logger.warning(
            "resizing pretrained embeddings to the tokenizer vocabulary",
            extra={"event": "model.embeddings_resized", "from": old_vocab, "to": vocab_size},
        )
        hf.resize_token_embeddings(vocab_size)
    if eos_id is not None:
        hf.config.bos_token_id = eos_id
        hf.config.eos_token_id = eos_id
    n_positions = getattr(hf.config, "n_positions", None)
    if not isinstance(n_positions, int):
        raise AppError(
            ErrorCode.MODEL_NOT_FOUND,
            f"{name_or_path!r} is not a GPT-2 checkpoint (its config has no n_positions)",
        )
    return GPT2LM(hf, n_positions)


def _from_pretrained(
    name_or_path: str, cache_dir: Path | None, attempts: int, backoff_s: float
) -> GPT2LMHeadModel:
    return _load_folder(
        fetch_pretrained(name_or_path, cache_dir, attempts, backoff_s), name_or_path
    )


def fetch_pretrained(
    name_or_path: str,
    cache_dir: Path | None,
    attempts: int = DOWNLOAD_ATTEMPTS,
    backoff_s: float = DOWNLOAD_BACKOFF_S,
    *,
    repo_type: Literal["model", "dataset"] = "model",
) -> Path:
    """The local folder of a pretrained model (or a hub dataset): an absolute path is a
    folder the caller resolved inside the data root; a `PACKAGED_MODELS` name is the folder
    inside that installed package; anything else must be a hub id, taken
    from the local cache first, else downloaded into an absolute cache with `attempts`
    bounded retries. A relative string is never read against the working directory
    (transformers would open `./<id>` when it exists)."""
    what = "pretrained model" if repo_type == "model" else "dataset"
    if Path(name_or_path).is_absolute():
        return Path(name_or_path)
    if repo_type == "model" and name_or_path in PACKAGED_MODELS:
        return packaged_model_folder(name_or_path)
    if not is_hub_id(name_or_path):
        raise AppError(
            ErrorCode.MODEL_NOT_FOUND,
            f"{what} {name_or_path!r} is neither a data-root folder nor a hub id",
        )
    cache = (cache_dir or Path(hub_constants.HF_HUB_CACHE)).expanduser().resolve()
    try:
        return _snapshot(name_or_path, cache, local_only=True, repo_type=repo_type)
    except (OSError, ValueError):
        logger.info(
            "pretrained files not in the local cache",
            extra={"event": "model.cache_miss", "model": name_or_path},
        )
    why = "offline mode is on"
    last_error: Exception | None = None
    if not _hub_offline():
        for attempt in range(1, attempts + 1):
            try:
                return _snapshot(name_or_path, cache, local_only=False, repo_type=repo_type)
            # huggingface_hub's HTTP errors are OSErrors; malformed ids are ValueErrors
            except (OSError, ValueError) as e:
                why, last_error = f"the download failed ({type(e).__name__})", e
                if _is_permanent(e) or attempt == attempts:
                    break
                logger.warning(
                    "download failed; retrying",
                    extra={"event": "model.download_retry", "model": name_or_path, "n": attempt},
                )
                time.sleep(backoff_s * 2 ** (attempt - 1))
    flag = " --repo-type dataset" if repo_type == "dataset" else ""
    raise AppError(
        ErrorCode.MODEL_NOT_FOUND if repo_type == "model" else ErrorCode.DATA_NOT_FOUND,
        f"{what} {name_or_path!r} is not in the {repo_type} cache, and {why}. "
        "Download it by hand on a machine with internet access: "
        f"`huggingface-cli download{flag} {name_or_path} --local-dir models/{name_or_path}` "
        f"(under the data root), then name `data:models/{name_or_path}` "
        "(for a dataset: the file's path).",
    ) from last_error


def _snapshot(
    repo_id: str, cache: Path, *, local_only: bool, repo_type: Literal["model", "dataset"]
) -> Path:
    """The absolute folder of `repo_id`'s files in `cache` (downloaded unless `local_only`):
    a model's weights and config, a dataset's JSONL / CSV files."""
    patterns = ["*.json", "*.safetensors", "*.bin", "*.txt"]
    folder = snapshot_download(
        repo_id,
        cache_dir=cache,
        local_files_only=local_only,
        repo_type=repo_type,
        allow_patterns=patterns if repo_type == "model" else ["*.jsonl", "*.csv", "*.json"],
    )
    return Path(folder)


def _load_folder(folder: Path, name: str) -> GPT2LMHeadModel:
    try:
        return GPT2LMHeadModel.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise AppError(
            ErrorCode.MODEL_NOT_FOUND,
            f"{name!r} holds no loadable GPT-2 weights ({type(e).__name__})",
        ) from e


def _hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return flag in {"1", "true", "yes", "on"} or hub_constants.is_offline_mode()


def _is_permanent(error: BaseException) -> bool:
    """A missing repository or file does not appear by retrying."""
    if isinstance(error, LocalEntryNotFoundError):
        return False  # the hub could not be reached: a network error
    if isinstance(error, ValueError):
        return True  # a malformed repo id stays malformed
    permanent = (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, permanent):
            return True
        cause = cause.__cause__
    return False


def _check_vocab(vocab_size: int, eos_id: int | None) -> None:
    if vocab_size < 2:
        raise AppError(ErrorCode.CONFIG_INVALID, f"vocab_size must be >= 2, got {vocab_size}")
    if eos_id is not None and not 0 <= eos_id < vocab_size:
        raise AppError(
            ErrorCode.CONFIG_INVALID,
            f"eos id {eos_id} lies outside the vocabulary of {vocab_size} tokens",
        )
