"""Model Trainer shared core: settings, logging, errors, events, event bus, HTTP client, Redis."""
