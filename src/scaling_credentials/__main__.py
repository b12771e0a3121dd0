"""``python -m scaling_credentials``: the ``scaling-credentials`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
