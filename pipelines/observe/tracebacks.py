"""A failed item's traceback as a person wants to read it: whole, chained, their code first.

The worker records the full formatted traceback (every exception of the chain, ``raise ...
from`` included). Frames of the engine itself (``pipelines``, ``executors``) and of the
standard library only say how the item was called; they are folded into one line per run
of them, so the user's own frames stand out. ``everything=True`` (``--debug``) keeps them.
"""

from __future__ import annotations

import os
import re
import sysconfig
from pathlib import Path

_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line \d+')
_ENGINE = tuple(str(Path(__file__).resolve().parents[2] / name) + os.sep for name in ("pipelines", "executors"))
_LIBRARIES = tuple({sysconfig.get_paths()[key] + os.sep for key in ("stdlib", "purelib", "platlib")})


def is_engine_frame(path: str) -> bool:
    """A frame of the engine or of a library (not the user's code)."""
    try:
        resolved = str(Path(path).resolve())
    except OSError:
        resolved = path
    return resolved.startswith(_ENGINE) or resolved.startswith(_LIBRARIES)


def frames(lines: list[str]) -> list[tuple[str | None, list[str]]]:
    """Split a formatted traceback into blocks: (frame path, its lines) or (None, other lines)."""
    blocks: list[tuple[str | None, list[str]]] = []
    for line in lines:
        match = _FRAME.match(line)
        if match:
            blocks.append((match.group("path"), [line]))
        elif blocks and blocks[-1][0] is not None and line.startswith("    "):
            blocks[-1][1].append(line)  # the frame's source line and its ^^^ markers
        else:
            blocks.append((None, [line]))
    return blocks


def readable(traceback: str, *, everything: bool = False) -> str:
    """The traceback with engine and library frames folded away (all of it with ``everything``)."""
    out: list[str] = []
    hidden = 0
    for path, lines in frames(traceback.rstrip("\n").splitlines()):
        if path is not None and not everything and is_engine_frame(path):
            hidden += 1
            continue
        if hidden:
            out.append(
                f"  [{hidden} frame{'' if hidden == 1 else 's'} of pipelines or libraries; --debug shows "
                f"{'it' if hidden == 1 else 'them'}]"
            )
            hidden = 0
        if path is not None:
            lines = [lines[0].replace(f'"{path}"', f'"{_short(path)}"', 1), *lines[1:]]
        out.extend(lines)
    return "\n".join(out)


def _short(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return relative if len(relative) < len(path) else path
