"""Imported only as a forkserver preload: the forkserver dies with the process that started it."""

import os

from executors._lifeline import DRIVER_ENV, die_with_parent

die_with_parent(int(os.environ[DRIVER_ENV]) if os.environ.get(DRIVER_ENV, "").isdigit() else None)
