"""Model Trainer REST API (FastAPI). Never imports torch, transformers or mlflow."""
