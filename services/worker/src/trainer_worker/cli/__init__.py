"""trainctl's worker-side commands (`worker`, `list-checkpoints`, `cleanup`); the operator
commands over the API are the trainer-cli package's."""
