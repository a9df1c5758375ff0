"""A module that imports a package that is not installed (line 3)."""

import no_such_module_for_pipelines_tests  # noqa: F401

from pipelines import Pipeline

pipeline = Pipeline("broken_import")
