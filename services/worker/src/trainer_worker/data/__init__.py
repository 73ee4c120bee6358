"""Training data: loading a text corpus from the data root and splitting off a holdout."""
