"""A Ctrl-C after the run has finished ends the command with 0 (or 130), never by the signal.

Once the run's result is printed, the process still closes its pools and finalizes the
interpreter (about half a second with pyarrow loaded), and the interpreter's finalization
puts SIGINT back to its default action: a Ctrl-C there used to kill the process (exit -2).
Here a terminal's Ctrl-C (to the whole process group) lands at steps across that window.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEST_DAGS

DELAYS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6]  # seconds after the last line of the result


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["processes", "threads"])
def test_ctrl_c_after_the_run_finished_exits_0_or_130(executor: str, tmp_path: Path) -> None:
    codes = []
    for i, delay in enumerate(DELAYS):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines",
                "run",
                "cli_squares",
                "--dags",
                str(TEST_DAGS),
                "--store",
                str(tmp_path / f"store-{i}"),
                "--executor",
                executor,
                "--quiet",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("total: ") and "rows" in line:  # the run's last line
                break
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):  # it had already exited
            os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the driver and its workers
        _, err = proc.communicate()
        codes.append(proc.returncode)
        assert proc.returncode in (0, 130), f"Ctrl-C {delay} s after the result: exit {proc.returncode}\n{err}"
    assert codes.count(0) + codes.count(130) == len(DELAYS)
