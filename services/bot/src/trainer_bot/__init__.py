"""Model Trainer Discord bot. Never imports torch, transformers or mlflow."""
