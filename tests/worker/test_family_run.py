"""The tokenizer of an encoder family's run (classifier, dual-agent): kept in the run folder
by the first attempt, else the pretrained encoder's own, else built from the run's texts."""

from __future__ import annotations

from pathlib import Path

from platform_core.layout import DataLayout
from platform_core.specs import TrainRunSpec
from tests.worker.dual_agent_helpers import dual_agent_spec
from trainer_worker.dual_agent.tokenizer import train_wordpiece
from trainer_worker.family_run import TOKENIZER_DIR, encoder_tokenizer

TEXTS = ["the cat sat on the mat", "a dog ran to the cat"]


def _spec(pretrained: str | None) -> TrainRunSpec:
    raw = dual_agent_spec()
    if pretrained is not None:
        raw["model"] = {"family": "dual_agent", "pretrained": pretrained}
    return TrainRunSpec.model_validate(raw)


def test_a_from_scratch_encoder_gets_a_vocabulary_of_the_run_texts(tmp_path: Path) -> None:
    tokenizer = encoder_tokenizer(_spec(None), DataLayout(tmp_path), "r1", TEXTS, 200)
    assert {"cat", "dog"} <= set(tokenizer.get_vocab())
    assert not (tmp_path / "runs").exists()  # nothing written before the run folder exists


def test_a_pretrained_encoder_brings_its_own_tokenizer(tmp_path: Path) -> None:
    train_wordpiece(["zebra quokka", "quokka zebra"], 200, tmp_path / "encoder")
    tokenizer = encoder_tokenizer(_spec("data:encoder"), DataLayout(tmp_path), "r1", TEXTS, 200)
    vocab = set(tokenizer.get_vocab())
    assert "quokka" in vocab and "cat" not in vocab


def test_a_later_attempt_loads_the_tokenizer_its_run_kept(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    train_wordpiece(["kept words only"], 200, layout.run_dir("r1") / TOKENIZER_DIR)
    for spec in (_spec(None), _spec("data:missing")):  # before any source of its own
        vocab = set(encoder_tokenizer(spec, layout, "r1", TEXTS, 200).get_vocab())
        assert "kept" in vocab and "cat" not in vocab
