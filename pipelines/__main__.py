"""``python -m pipelines``: the command line (guarded: spawned workers re-import this module)."""
import signal

from pipelines.cli import main

if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:  # between the command's end and here
        code = 130
    # The exit code is settled. What is left (closing pools, finalizing the interpreter, which
    # puts SIGINT back to its default action) must not turn a late Ctrl-C into a kill by signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(code)
