"""Data parallelism of the NumPyro loop with ``jax.sharding``: on 2 host devices (XLA_FLAGS, set in a fresh process
before JAX is imported) the fit equals the 1-device fit; more devices than JAX sees are refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")
pytest.importorskip("equinox")

SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax, numpy as np
    from sklearn.datasets import load_digits
    from ppl_dgm.numpyro.inference.svi import fit
    from ppl_dgm.numpyro.models.vae import VAE

    x = (load_digits().data / 16.0).astype(np.float32)
    out = {}
    for d in (1, 2):
        params, history = fit(VAE(64, latent_dim=4, hidden=(64,)), x[:1001], x_test=x[1001:1201], epochs=3,
                              batch_size=128, binarize=True, progress=False, devices=d)
        leaves = jax.tree_util.tree_leaves(params)
        out[d] = {"leaves": [np.asarray(a).ravel().tolist() for a in leaves], "history": history,
                  "shardings": sorted({str(getattr(a.sharding, "spec", "single device")) for a in leaves})}
    print(json.dumps({"devices": len(jax.devices()), **{str(k): v for k, v in out.items()}}))
""")


def test_two_host_devices_give_the_one_device_fit():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2
    one, two = out["1"], out["2"]
    assert two["shardings"] in (["P()"], ["PartitionSpec()"])  # parameters replicated
    for a, b in zip(one["leaves"], two["leaves"]):
        scale = max(1e-6, max(abs(v) for v in a))
        assert max(abs(u - v) for u, v in zip(a, b)) / scale < 1e-6
    for h1, h2 in zip(one["history"], two["history"]):
        assert abs(h1["train_elbo"] - h2["train_elbo"]) < 1e-4 and abs(h1["test_elbo"] - h2["test_elbo"]) < 1e-4


def test_devices_beyond_what_jax_sees_are_refused():
    import jax

    from ppl_dgm.errors import InputError
    from ppl_dgm.numpyro.inference.svi import data_parallel

    with pytest.raises(InputError, match="expected an integer from 1 to"):
        data_parallel(len(jax.devices()) + 1, 128)
