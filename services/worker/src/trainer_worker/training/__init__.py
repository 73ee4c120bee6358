"""The training engine: one loop for every model family, plus its devices, data and state."""
