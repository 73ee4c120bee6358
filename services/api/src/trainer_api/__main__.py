"""`python -m trainer_api`: serve the API with uvicorn on the configured host and port."""

from __future__ import annotations

import uvicorn

from platform_core.logging import configure_logging
from platform_core.settings import load_settings
from trainer_api.main import create_app


def main() -> None:
    settings = load_settings()
    configure_logging(
        "model-trainer-api",
        level=settings.logging.level,
        fmt=settings.log_format,
        secret_values=settings.secret_values(),
    )
    uvicorn.run(
        create_app(settings), host=settings.api.host, port=settings.api.port, log_config=None
    )


if __name__ == "__main__":
    main()
