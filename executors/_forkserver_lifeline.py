"""Imported only as a forkserver preload: the forkserver dies with the process that started it."""
from executors._lifeline import die_with_parent

die_with_parent()
