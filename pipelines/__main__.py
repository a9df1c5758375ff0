"""``python -m pipelines``: the command line (guarded: spawned workers re-import this module)."""
from pipelines.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
