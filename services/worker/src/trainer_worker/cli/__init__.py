"""trainctl: the operator CLI (worker, demo; remote commands through the API)."""
