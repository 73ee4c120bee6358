"""Model builders: GPT-2 presets and pretrained loading, the Char-LSTM, the ModelSpec registry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from pydantic import ValidationError
from transformers import GPT2LMHeadModel

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import BPE_MIN_VOCAB_SIZE, MODEL_PRESETS, PRESET_SHAPES, ModelSpec
from trainer_worker.models import gpt2 as gpt2_module
from trainer_worker.models.char_lstm import CHAR_LSTM_PRESETS, CharLSTM, CharLSTMConfig
from trainer_worker.models.gpt2 import GPT2_PRESETS, GPT2LM, GPT2Spec, build_gpt2, load_gpt2
from trainer_worker.models.registry import (
    build_model,
    context_size,
    count_parameters,
    require_vocab,
)
from trainer_worker.tokenizers.bpe import BYTE_ALPHABET_SIZE, BPEConfig
from trainer_worker.training.evaluate import lm_loss

VOCAB = 97
EOS = 96


def _ids(batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_gpt2_forward_contract_and_special_ids() -> None:
    model = build_model(ModelSpec(family="gpt2", preset="tiny"), VOCAB, EOS)
    assert isinstance(model, GPT2LM)
    logits = model(_ids())
    assert logits.shape == (2, 12, VOCAB)
    assert logits.dtype == torch.float32
    config = model.hf.config
    assert (config.bos_token_id, config.eos_token_id) == (EOS, EOS)
    assert config.n_layer == 2 and config.n_embd == 64
    assert context_size(model) == 128


def test_gpt2_loss_matches_transformers_reference() -> None:
    """Our shift-by-one loss equals the loss GPT2LMHeadModel computes from labels."""
    torch.manual_seed(0)
    model = build_gpt2(GPT2_PRESETS["tiny"], VOCAB, EOS).eval()
    ids = _ids(length=20)
    ours = lm_loss(model(ids)[:, :-1, :], ids[:, 1:])
    reference = model.hf(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_gpt2_presets_have_documented_shapes() -> None:
    shapes = {
        name: (s.n_layer, s.n_head, s.n_embd, s.n_positions) for name, s in GPT2_PRESETS.items()
    }
    assert shapes == {
        "tiny": (2, 2, 64, 128),
        "small": (4, 4, 256, 256),
        "124M": (12, 12, 768, 1024),
    }
    small = build_model(ModelSpec(family="gpt2", preset="small"), VOCAB, EOS)
    assert 3_000_000 < count_parameters(small) < 4_000_000


def test_gpt2_refuses_bad_shapes_and_special_ids() -> None:
    with pytest.raises(AppError) as bad_heads:
        build_gpt2(GPT2Spec(n_head=3, n_embd=64), VOCAB, EOS)
    assert bad_heads.value.code is ErrorCode.CONFIG_INVALID
    with pytest.raises(AppError) as bad_eos:
        build_gpt2(GPT2Spec(), VOCAB, VOCAB)
    assert bad_eos.value.code is ErrorCode.CONFIG_INVALID
    assert "outside the vocabulary" in bad_eos.value.message


def test_pretrained_gpt2_loads_from_a_local_folder(tmp_path: Path) -> None:
    torch.manual_seed(1)
    original = build_gpt2(GPT2_PRESETS["tiny"], VOCAB, EOS).eval()
    original.save_pretrained(tmp_path / "tiny-gpt2")
    loaded = build_model(_resolved(tmp_path / "tiny-gpt2"), VOCAB, EOS)
    loaded.eval()
    ids = _ids()
    torch.testing.assert_close(loaded(ids), original(ids))
    assert context_size(loaded) == 128


def test_pretrained_gpt2_resizes_embeddings_to_the_tokenizer(tmp_path: Path) -> None:
    build_gpt2(GPT2_PRESETS["tiny"], VOCAB, EOS).save_pretrained(tmp_path / "m")
    loaded = build_model(_resolved(tmp_path / "m"), 120, 119)
    assert loaded(torch.zeros((1, 4), dtype=torch.long)).shape == (1, 4, 120)
    assert isinstance(loaded, GPT2LM) and loaded.hf.config.eos_token_id == 119


def test_unknown_hub_id_offline_is_model_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = ModelSpec(family="gpt2", pretrained="no-such-org/no-such-model-xyz")
    with pytest.raises(AppError) as err:
        build_model(spec, VOCAB, EOS, cache_dir=tmp_path / "cache")
    assert err.value.code is ErrorCode.MODEL_NOT_FOUND
    assert "huggingface-cli download no-such-org/no-such-model-xyz --local-dir" in err.value.message


def _resolved(folder: Path) -> ModelSpec:
    """A spec as the worker's resolution leaves a `data:` folder: its absolute path."""
    return ModelSpec(family="gpt2").model_copy(update={"pretrained": str(folder)})


def test_a_hub_id_is_never_read_as_a_folder_of_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers opens `./<id>` when such a folder exists; the loader must not."""
    build_gpt2(GPT2_PRESETS["tiny"], VOCAB, EOS).save_pretrained(tmp_path / "outside-model")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = ModelSpec(family="gpt2", pretrained="outside-model")
    with pytest.raises(AppError) as err:
        build_model(spec, VOCAB, EOS, cache_dir=tmp_path / "cache")
    assert err.value.code is ErrorCode.MODEL_NOT_FOUND
    assert "not in the model cache" in err.value.message


def test_a_relative_path_that_is_no_hub_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AppError, match="neither a data-root folder nor a hub id"):
        load_gpt2("models/../x", VOCAB, EOS, cache_dir=tmp_path)


def test_the_hub_cache_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = _FlakyHub(tmp_path, failures=0, error=OSError("unused"))
    monkeypatch.setattr(gpt2_module, "snapshot_download", hub.snapshot_download)
    monkeypatch.chdir(tmp_path)
    load_gpt2("org/tiny", VOCAB, EOS, cache_dir=Path("relative-cache"))
    assert hub.cache_dirs == [tmp_path / "relative-cache"] * 2


class _FlakyHub:
    """Stands in for huggingface_hub.snapshot_download: not cached, then `failures` network
    errors, then a folder holding the real tiny model."""

    def __init__(self, tmp_path: Path, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.folder = tmp_path / "snapshot"
        build_gpt2(GPT2_PRESETS["tiny"], VOCAB, EOS).save_pretrained(self.folder)
        self.calls: list[bool] = []  # local_files_only of each call
        self.cache_dirs: list[Path] = []

    def snapshot_download(self, repo_id: str, **kwargs: object) -> str:
        local_only = kwargs.get("local_files_only") is True
        self.calls.append(local_only)
        cache_dir = kwargs.get("cache_dir")
        assert isinstance(cache_dir, Path) and cache_dir.is_absolute()
        self.cache_dirs.append(cache_dir)
        if local_only:
            raise LocalEntryNotFoundError(f"{repo_id} is not in the cache")
        if self.calls.count(False) <= self.failures:
            raise self.error
        return str(self.folder)


def test_hub_download_retries_transient_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = _FlakyHub(tmp_path, failures=2, error=OSError("connection reset"))
    monkeypatch.setattr(gpt2_module, "snapshot_download", hub.snapshot_download)
    monkeypatch.setattr(gpt2_module, "_hub_offline", lambda: False)
    model = load_gpt2("org/tiny", VOCAB, EOS, attempts=3, backoff_s=0.0)
    assert hub.calls == [True, False, False, False]  # cache first, then 3 download attempts
    assert model(_ids()).shape == (2, 12, VOCAB)


def test_an_unreachable_hub_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """snapshot_download says LocalEntryNotFoundError when the hub cannot be reached."""
    hub = _FlakyHub(tmp_path, failures=1, error=LocalEntryNotFoundError("no connection"))
    monkeypatch.setattr(gpt2_module, "snapshot_download", hub.snapshot_download)
    monkeypatch.setattr(gpt2_module, "_hub_offline", lambda: False)
    load_gpt2("org/tiny", VOCAB, EOS, attempts=2, backoff_s=0.0)
    assert hub.calls == [True, False, False]


def test_hub_download_gives_up_after_bounded_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = _FlakyHub(tmp_path, failures=5, error=OSError("connection reset"))
    monkeypatch.setattr(gpt2_module, "snapshot_download", hub.snapshot_download)
    monkeypatch.setattr(gpt2_module, "_hub_offline", lambda: False)
    with pytest.raises(AppError) as err:
        load_gpt2("org/tiny", VOCAB, EOS, attempts=2, backoff_s=0.0)
    assert err.value.code is ErrorCode.MODEL_NOT_FOUND
    assert "download failed (OSError)" in err.value.message
    assert hub.calls == [True, False, False]


def test_a_missing_repository_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = _FlakyHub(tmp_path, failures=5, error=ValueError("no such repository"))
    monkeypatch.setattr(gpt2_module, "snapshot_download", hub.snapshot_download)
    monkeypatch.setattr(gpt2_module, "_hub_offline", lambda: False)
    with pytest.raises(AppError):
        load_gpt2("org/none", VOCAB, EOS, attempts=3, backoff_s=0.0)
    assert hub.calls == [True, False]


def test_folder_without_weights_is_model_not_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AppError) as err:
        build_model(_resolved(tmp_path / "empty"), VOCAB, EOS)
    assert err.value.code is ErrorCode.MODEL_NOT_FOUND


def test_char_lstm_forward_contract_and_streaming_state() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(family="char_lstm", preset="small"), VOCAB, EOS)
    assert isinstance(model, CharLSTM)
    model.eval()
    ids = _ids(length=10)
    full = model(ids)
    assert full.shape == (2, 10, VOCAB)
    assert context_size(model) is None
    # feeding the ids in two pieces with the carried state gives the same logits
    first, state = model.forward_with_state(ids[:, :6], None)
    second, _ = model.forward_with_state(ids[:, 6:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), full)


def test_char_lstm_config_is_frozen_and_presets_apply() -> None:
    config = CHAR_LSTM_PRESETS["tiny"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_size = 3  # type: ignore[misc]  # asserting that assignment fails
    model = build_model(ModelSpec(family="char_lstm", preset="tiny", dropout=0.2), VOCAB, EOS)
    assert isinstance(model, CharLSTM)
    assert model.config == CharLSTMConfig(
        vocab_size=VOCAB, n_embd=32, hidden_size=64, n_layer=1, dropout=0.2
    )


def test_model_spec_validation() -> None:
    with pytest.raises(ValidationError, match="extra"):
        ModelSpec.model_validate({"family": "gpt2", "layers": 3})
    with pytest.raises(ValidationError, match="unknown gpt2 preset"):
        ModelSpec(family="gpt2", preset="huge")
    with pytest.raises(ValidationError, match="not available for the char_lstm family"):
        ModelSpec(family="char_lstm", pretrained="gpt2")
    with pytest.raises(ValidationError, match="no context limit"):
        ModelSpec(family="char_lstm", context_size=64)
    with pytest.raises(ValidationError):
        ModelSpec.model_validate({"family": "rnn"})
    spec = ModelSpec(family="gpt2", context_size=32)
    with pytest.raises(ValidationError):
        spec.preset = "small"  # type: ignore[misc]  # asserting the model is frozen
    assert context_size(build_model(spec, VOCAB, EOS)) == 32


# importing torch.compile's backend warns about torch internals, not about our code
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_context_size_sees_through_torch_compile() -> None:
    model = build_model(ModelSpec(family="gpt2"), VOCAB, EOS)
    compiled = torch.compile(model)  # compiles lazily: nothing runs here
    assert isinstance(compiled, torch.nn.Module)
    assert context_size(compiled) == 128


def test_require_vocab_refuses_ids_outside_the_model() -> None:
    require_vocab(10, 9)
    with pytest.raises(AppError) as err:
        require_vocab(10, 10)
    assert err.value.code is ErrorCode.DATA_INVALID


def test_hf_class_is_the_transformers_one() -> None:
    model = build_gpt2(GPT2_PRESETS["tiny"], VOCAB, None)
    assert isinstance(model.hf, GPT2LMHeadModel)
    assert model.hf.config.eos_token_id is None


def test_spec_preset_names_match_the_architectures() -> None:
    """platform_core.specs validates preset names without torch; the worker maps each name
    to an architecture. The two lists must be the same."""
    assert set(MODEL_PRESETS["gpt2"]) == set(GPT2_PRESETS)
    assert set(MODEL_PRESETS["char_lstm"]) == set(CHAR_LSTM_PRESETS)


def test_spec_bpe_minimum_matches_the_backend() -> None:
    assert BYTE_ALPHABET_SIZE + len(BPEConfig().special_tokens) == BPE_MIN_VOCAB_SIZE


def test_the_specs_preset_shapes_are_the_workers_presets() -> None:
    """Submissions check context and memory with platform_core's copy of each shape."""
    for name, gpt2 in GPT2_PRESETS.items():
        shape = PRESET_SHAPES["gpt2"][name]
        assert (shape.n_layer, shape.width, shape.n_head, shape.context) == (
            gpt2.n_layer,
            gpt2.n_embd,
            gpt2.n_head,
            gpt2.n_positions,
        )
    for name, lstm in CHAR_LSTM_PRESETS.items():
        shape = PRESET_SHAPES["char_lstm"][name]
        assert (shape.n_layer, shape.width, shape.context) == (lstm.n_layer, lstm.hidden_size, None)
    assert set(PRESET_SHAPES["gpt2"]) == set(GPT2_PRESETS)
    assert set(PRESET_SHAPES["char_lstm"]) == set(CHAR_LSTM_PRESETS)
