"""Markovian HVAE: sites, per-layer Monte Carlo terms, L = 1 is a VAE, training improves the bound."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from ppl_dgm.errors import InputError
from ppl_dgm.evaluation import evaluate_model
from ppl_dgm.inference import fit_svi
from ppl_dgm.inference.diagnostics import elbo_terms
from ppl_dgm.models import REGISTRY
from ppl_dgm.models.hvae import HVAE


def test_sites_shapes_and_per_layer_terms():
    m = HVAE(10, layers=3, latent_dims=(4, 3, 2), hidden=(16,), likelihood="gaussian")
    x = torch.randn(5, 10)
    g = pyro.poutine.trace(m.guide).get_trace(x)
    assert [n for n in g.nodes if n.startswith("z_")] == ["z_1", "z_2", "z_3"]
    assert g.nodes["z_3"]["value"].shape == (5, 2)
    t = elbo_terms(m.model, m.guide, x)
    assert set(t.kl_sites) == {"z_1", "z_2", "z_3"} and not any(t.analytic.values())   # Monte Carlo per layer
    assert t.elbo == pytest.approx(t.reconstruction - sum(t.kl_sites.values()))
    assert m.sample(7).shape == (7, 10) and m.reconstruct(x).shape == (5, 10)
    assert REGISTRY["hvae"].model is HVAE


def test_per_layer_terms_average_to_the_monte_carlo_elbo():
    torch.manual_seed(0)
    m = HVAE(6, layers=2, latent_dims=(3, 2), hidden=(8,), likelihood="gaussian", x_scale=0.5)
    x = torch.randn(2000, 6)
    t = elbo_terms(m.model, m.guide, x, num_particles=4)
    mc = -Trace_ELBO(num_particles=4).loss(m.model, m.guide, x) / 2000
    assert t.elbo == pytest.approx(mc, abs=0.15)


def test_one_layer_is_a_vae_with_analytic_kl_and_errors():
    m = HVAE(6, layers=1, latent_dims=(3,), hidden=(8,))
    t = elbo_terms(m.model, m.guide, torch.rand(4, 6))
    assert t.analytic == {"z_1": True}
    assert HVAE(6, layers=3, latent_dims=(3,)).dims == [3, 3, 3]  # one size for every layer
    with pytest.raises(InputError, match="one positive latent size per layer"):
        HVAE(6, layers=2, latent_dims=(3, 2, 1))
    with pytest.raises(InputError, match="likelihood must be one of"):
        HVAE(6, likelihood="poisson")


def test_training_raises_held_out_log_likelihood():
    from ppl_dgm.data import load_dataset

    ds = load_dataset("digits")
    torch.manual_seed(0)
    m = HVAE(64, layers=2, latent_dims=(8, 4), hidden=(64,))
    before = evaluate_model(m, ds.x_test[:100], iwae_k=20).log_likelihood
    fit_svi(m, ds.x_train, loss=Trace_ELBO(), epochs=3, batch_size=64, lr=2e-3, progress=False)
    after = evaluate_model(m, ds.x_test[:100], iwae_k=20).log_likelihood
    assert after > before + 5
