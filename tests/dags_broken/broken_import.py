"""A module that imports a package that is not installed (line 4)."""
from pipelines import Pipeline

import no_such_module_for_pipelines_tests  # noqa: F401

pipeline = Pipeline("broken_import")
