"""Language models trained by the engine: GPT-2 (transformers) and a character LSTM."""
