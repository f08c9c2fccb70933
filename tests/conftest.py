"""Shared fixtures: every test starts with an empty Pyro param store and fixed seeds."""

from __future__ import annotations

import os
import sys

import matplotlib
import pyro
import pytest
import torch

matplotlib.use("Agg")
# Small models run fastest (and identically on every machine) on one thread; CI boxes are shared.
torch.set_num_threads(1)
os.environ.setdefault("PYTHONHASHSEED", "0")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _fresh_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.set_default_dtype(torch.float32)
    yield
    pyro.clear_param_store()
    jax = sys.modules.get("jax")
    if jax is not None:  # a float64 JAX twin turns on jax_enable_x64, a process-wide flag: switch it back off
        jax.config.update("jax_enable_x64", False)


def fashion_available() -> bool:
    return os.path.isdir(FASHION_DIR) and any(f.startswith("train-images") for f in os.listdir(FASHION_DIR))


needs_fashion = pytest.mark.skipif(not fashion_available(), reason="Fashion-MNIST IDX files not installed")


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits, statically binarized (seed 0)."""
    from ppl_dgm.data import load_dataset

    return load_dataset("digits", binarize="static", seed=0)


def run_cli(args, capsys):
    """Run ``ppl-dgm ARGS`` in-process; returns (exit status, stdout, stderr)."""
    from ppl_dgm.cli import main

    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err
