"""A character-level LSTM language model in plain torch.

Embedding -> n-layer LSTM -> dropout -> linear head, with the same forward contract as
GPT-2: (B, T) ids -> (B, T, V) logits. It has no position table, so no context limit;
`forward_with_state` carries the hidden state across calls for streaming use.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor, nn

from platform_core.errors import AppError, ErrorCode

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (n_layer, B, hidden_size)


@dataclass(frozen=True)
class CharLSTMConfig:
    vocab_size: int = 256  # replaced by the tokenizer's vocabulary size when built
    n_embd: int = 64  # width of the character embedding fed to the first LSTM layer
    hidden_size: int = 256  # LSTM state width; the main capacity knob
    n_layer: int = 2  # stacked LSTM layers
    dropout: float = 0.1  # between LSTM layers and before the head (Karpathy's char-rnn used 0-0.5)


CHAR_LSTM_PRESETS: dict[str, CharLSTMConfig] = {
    # tests and smoke runs: trains in seconds on one CPU core
    "tiny": CharLSTMConfig(n_embd=32, hidden_size=64, n_layer=1, dropout=0.0),
    # a classic char-rnn size for a few MB of text on CPU
    "small": CharLSTMConfig(n_embd=64, hidden_size=256, n_layer=2, dropout=0.1),
    # Karpathy's char-rnn "large" shape; wants a GPU or patience
    "medium": CharLSTMConfig(n_embd=128, hidden_size=512, n_layer=3, dropout=0.2),
}


class CharLSTM(nn.Module):
    # no position table: generation and scoring never need to crop the context
    context_size: int | None = None

    def __init__(self, config: CharLSTMConfig) -> None:
        super().__init__()
        if config.vocab_size < 2:
            raise AppError(
                ErrorCode.CONFIG_INVALID, f"vocab_size must be >= 2, got {config.vocab_size}"
            )
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.lstm = nn.LSTM(
            input_size=config.n_embd,
            hidden_size=config.hidden_size,
            num_layers=config.n_layer,
            batch_first=True,
            # torch only applies inter-layer dropout, and warns when there is one layer
            dropout=config.dropout if config.n_layer > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, input_ids: Tensor) -> Tensor:
        logits, _ = self.forward_with_state(input_ids, None)
        return logits

    def forward_with_state(
        self, input_ids: Tensor, state: LSTMState | None
    ) -> tuple[Tensor, LSTMState]:
        x = self.embed(input_ids)  # (B, T, n_embd)
        out, (h, c) = self.lstm(x, state)  # out: (B, T, hidden_size)
        logits = self.head(self.drop(out))  # (B, T, V)
        return logits, (h, c)


def build_char_lstm(
    preset: CharLSTMConfig, vocab_size: int, dropout: float | None = None
) -> CharLSTM:
    """A freshly initialised Char-LSTM of the preset's shape over the tokenizer's vocabulary."""
    config = replace(preset, vocab_size=vocab_size)
    if dropout is not None:
        config = replace(config, dropout=dropout)
    return CharLSTM(config)
