"""`python -m trainer_cli ARGS` is `trainctl ARGS` (the demo starts its worker this way)."""

import sys

from trainer_cli.main import main

if __name__ == "__main__":
    sys.exit(main())
