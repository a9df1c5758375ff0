"""The examples in the stages' docstrings run (those not marked ``+SKIP``)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["aggregate", "files", "http", "images", "json", "serve"])
def test_docstring_examples(name):
    module = importlib.import_module(f"stages.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
