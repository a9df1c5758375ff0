"""Ray's start-up output: its notes held, its errors (and anything not in Ray's formats) shown.

These tests write to file descriptor 2 themselves, as Ray's C++ core does, so they need no Ray.
"""

from __future__ import annotations

import logging
import os

import pytest

from executors import ray_output

NOTE = "[2026-12-07 21:16:53,377 W 13088 13088] network_util.cc:330: Failed to determine local IP via 8.8.8.8:53"
PY_NOTE = "2026-12-07 21:17:19,861\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled"
ERROR = "[2026-12-07 21:16:54,001 E 13088 13088] core_worker.cc:12: cannot reach the raylet"
PY_ERROR = "2026-12-07 21:17:20,000\tERROR worker.py:1 -- the driver lost its node"


def _write_all() -> None:
    for line in (NOTE, "  a continuation of the note", ERROR, "  a continuation of the error", PY_NOTE, PY_ERROR):
        os.write(2, (line + "\n").encode())
    os.write(2, b"Traceback (most recent call last): something of no Ray format\n")


@pytest.fixture
def executors_level():
    log = logging.getLogger("executors")
    saved = log.level
    yield log.setLevel
    log.setLevel(saved)


def test_notes_are_held_and_errors_shown(capfd: pytest.CaptureFixture[str], executors_level) -> None:
    executors_level(logging.WARNING)
    assert ray_output.python_level() == logging.ERROR
    with ray_output.held_start():
        _write_all()
        assert logging.getLogger("ray").level == logging.ERROR
    err = capfd.readouterr().err
    assert err.splitlines() == [
        ERROR,
        "  a continuation of the error",
        PY_ERROR,
        "Traceback (most recent call last): something of no Ray format",
    ]


def test_with_info_asked_for_nothing_is_held(capfd: pytest.CaptureFixture[str], executors_level) -> None:
    executors_level(logging.INFO)
    assert ray_output.python_level() == logging.INFO
    with ray_output.held_start():
        _write_all()
    err = capfd.readouterr().err
    assert NOTE in err and PY_NOTE in err and "a continuation of the note" in err


def test_a_failed_start_still_shows_its_errors_and_puts_rays_level_back(
    capfd: pytest.CaptureFixture[str], executors_level
) -> None:
    executors_level(logging.WARNING)
    ray_logger = logging.getLogger("ray")
    saved = ray_logger.level
    with pytest.raises(RuntimeError, match="no start"), ray_output.held_start():
        _write_all()
        raise RuntimeError("no start")
    assert ray_logger.level == saved
    err = capfd.readouterr().err
    assert ERROR in err and NOTE not in err
