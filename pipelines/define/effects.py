"""Side effects: stages whose stored results are not all there is to them.

A stage that writes files, sends messages or updates a database leaves effects that its
checkpoint does not hold. Reusing its checkpoint is right only while those effects still
stand, which the engine cannot see unless the stage says so:

* ``reuse="never"``: every new run computes the stage again (a resume keeps the work of the
  run it continues, whose effects happened);
* ``outputs=``: the files it makes; while all exist its results are reused, once one is
  missing the stage is computed again.

Either way the stage's batch keys do not change, so the stages after it are reused as
usual when it computes the same values again.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

from pipelines.define.model import Stage


def outputs_of(stage: Stage, params: Any) -> list[str]:
    """The files ``stage`` declares it makes, for these params."""
    if not callable(stage.outputs):
        return list(stage.outputs)
    try:
        takes = bool(inspect.signature(stage.outputs).parameters)
    except (TypeError, ValueError):
        takes = True
    declared: Any = stage.outputs(params) if takes else stage.outputs()
    if isinstance(declared, (str, os.PathLike)):
        declared = [declared]
    return [os.fspath(p) for p in declared or ()]


def why_recompute(stage: Stage, params: Any, *, resumed: bool) -> str:
    """Why ``stage``'s stored results must not be reused ("" when they may be)."""
    if stage.reuse == "never" and not resumed:
        return "side effects (reuse='never')"
    missing = [p for p in outputs_of(stage, params) if not os.path.exists(p)] if stage.outputs else []
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"output {missing[0]}{more} missing"
    return ""


def not_reusable(stages: Mapping[str, Stage], params: Any, *, resumed: bool) -> dict[str, str]:
    """The stages to compute again because of their side effects, each with the reason."""
    reasons = {
        name: why_recompute(stage, params, resumed=resumed)
        for name, stage in stages.items()
        if stage.reuse != "auto" or stage.outputs
    }
    return {name: why for name, why in reasons.items() if why}
