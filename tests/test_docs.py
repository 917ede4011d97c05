"""Every docstring example in the foundation modules runs and gives what it shows."""

import doctest
import importlib

import pytest

MODULES = ["subnets", "subnets.graph", "subnets.transforms", "subnets.cost", "subnets.zoo",
           "subnets.train", "subnets.checkpoint", "subnets.nested.select", "subnets.io",
           "subnets.data.batches", "subnets.kernels.knapsack"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0
