"""The shared trace walk: guide trace -> replayed model, per-row log-densities, importance weights.

Model: z_n ~ N(0, 1), x_n ~ N(z_n, S^2); exact posterior p(z_n | x_n) = N(x_n / (1 + S^2), S^2 / (1 + S^2)),
evidence p(x_n) = N(0, 1 + S^2).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_dgm.errors import InputError
from ppl_dgm.inference.traces import (
    data_frame,
    importance_log_weights,
    per_row_log_prob,
    plate_size,
    sample_sites,
    trace_pair,
)

S = 1.5


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, S), obs=x)


def make_guide(widen=1.0):
    """q(z_n | x_n): the exact posterior, its scale times ``widen``."""
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x / (1 + S**2), widen * S / math.sqrt(1 + S**2)))
    return guide


def test_trace_pair_replays_the_guide_draws_and_sums_per_row():
    x = torch.linspace(-2, 2, 7)
    g_tr, m_tr = trace_pair(model, make_guide(2.0), x)
    z = g_tr.nodes["z"]["value"]
    assert m_tr.nodes["z"]["value"] is z  # the model is replayed on the guide's draw
    assert [n for n, _ in sample_sites(m_tr)] == ["z", "x"]  # the plate's subsample site is left out
    assert plate_size(m_tr) == 7 and data_frame(m_tr.nodes["x"]).dim == -1
    log_p = dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, S).log_prob(x)
    torch.testing.assert_close(per_row_log_prob(m_tr, 7), log_p)
    log_q = dist.Normal(x / (1 + S**2), 2.0 * S / math.sqrt(1 + S**2)).log_prob(z)
    torch.testing.assert_close(per_row_log_prob(g_tr, 7), log_q)


def test_importance_weights_of_the_exact_posterior_are_the_evidence_in_every_chunk():
    x = torch.linspace(-3, 3, 100)
    chunks = list(importance_log_weights(model, make_guide(), x, k=9, max_rows=40))  # 40 rows per pass
    assert [i for i, _ in chunks] == [0, 40, 80]
    log_w = torch.cat([lw for _, lw in chunks], 1)
    assert log_w.shape == (9, 100) and log_w.dtype == torch.float64
    # q(z | x) = p(z | x): log p(x, z) - log q(z | x) = log p(x) for every draw
    evidence = dist.Normal(0.0, math.sqrt(1 + S**2)).log_prob(x).double()
    torch.testing.assert_close(log_w, evidence.expand(9, 100), rtol=0, atol=1e-5)


def test_sites_outside_the_data_plate_and_bad_k_are_refused():
    def global_model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def global_guide(x):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    x = torch.zeros(4)
    assert plate_size(trace_pair(global_model, global_guide, x).guide) == 1
    with pytest.raises(InputError, match="IWAE needs every sample site inside the 'data' plate; got site 'mu'"):
        next(importance_log_weights(global_model, global_guide, x, k=2))
    with pytest.raises(InputError, match="k .* must be a positive integer; got 0"):
        next(importance_log_weights(model, make_guide(), x, k=0))
