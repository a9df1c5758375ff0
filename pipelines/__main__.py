"""``python -m pipelines`` and the ``pipelines`` command (guarded: spawned workers re-import this module)."""

import signal
from typing import NoReturn

from pipelines.cli.commands import main


def entry() -> NoReturn:
    """Run the command line, then exit with its code, whatever Ctrl-C does after the result."""
    try:
        code = main()
    except KeyboardInterrupt:  # between the command's end and here
        code = 130
    # The exit code is settled. What is left (closing pools, finalizing the interpreter, which
    # puts SIGINT back to its default action) must not turn a late Ctrl-C into a kill by signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(code)


if __name__ == "__main__":
    entry()
