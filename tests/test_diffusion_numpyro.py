"""The NumPyro twin of DDPM gives the Pyro model's ELBO for the same weights."""

import numpy as np
import pytest
import torch

from ppl_dgm.models.diffusion import DDPM

pytest.importorskip("numpyro")


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    m = DDPM(2, timesteps=30, hidden=(16, 16)).double().eval()
    for p in m.net.parameters():          # non-trivial weights (the output layer is not zero-initialised)
        p.data.normal_(0, 0.3)
    from ppl_dgm.numpyro.models import diffusion as nd

    return m, nd, nd.schedule_tables(m), nd.params_from_torch(m)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_chain_elbo_parity_same_noise(pair, variance):
    m, nd, _, params = pair
    m.variance = variance
    tab = nd.schedule_tables(m)
    x = torch.randn(50, 2, dtype=torch.float64)
    noise = torch.randn(30, 50, 2, dtype=torch.float64)
    ref = m.chain_elbo(x, noise=noise)
    elbo, L_T, L = nd.chain_elbo(x.numpy(), tab, params, noise.numpy())
    assert float(elbo) == pytest.approx(ref.elbo, rel=1e-6)  # the torch time features are float32
    np.testing.assert_allclose(np.asarray(L), ref.L, rtol=1e-6, atol=1e-7)
    m.variance = "beta"


def test_numpyro_program_estimates_the_same_elbo(pair):
    import jax
    from numpyro.infer import TraceMeanField_ELBO

    m, nd, tab, params = pair
    x = np.random.default_rng(1).standard_normal((4000, 2))
    ref = m.chain_elbo(torch.tensor(x), seed=0).elbo
    loss = TraceMeanField_ELBO().loss(jax.random.PRNGKey(0), {}, nd.model, nd.guide, x, tab, params, 30)
    assert -float(loss) / len(x) == pytest.approx(ref, rel=0.01)   # one Monte Carlo draw per step and example
