"""The command line: ``python -m pipelines`` and its read-only views."""
