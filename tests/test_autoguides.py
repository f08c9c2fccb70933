"""fit_svi with Pyro users' habits: plain model/guide functions with pyro.param sites, and autoguides.

The model is conjugate, so the fitted posterior is checked against the closed form:
mu ~ N(0, TAU0^2 I_2), x_n ~ N(mu, SIGMA^2 I_2)  =>  p(mu | x) = N(m, s^2 I_2) with
1/s^2 = 1/TAU0^2 + N/SIGMA^2 and m = s^2 sum_n x_n / SIGMA^2.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Predictive
from pyro.infer.autoguide import AutoDiagonalNormal, AutoIAFNormal, AutoLowRankMultivariateNormal, AutoNormal

from ppl_dgm.errors import InputError
from ppl_dgm.inference import StopTraining, fit_svi

TAU0, SIGMA = 2.0, 1.0


def model(x):
    """mu ~ N(0, TAU0^2 I_2); x_n ~ N(mu, SIGMA^2 I_2); x (N, 2).  Written to vectorize over draws of mu."""
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2), TAU0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu.unsqueeze(-2), SIGMA).to_event(1), obs=x)


def param_guide(x):
    loc = pyro.param("loc", torch.zeros(2))
    scale = pyro.param("scale", torch.ones(2), constraint=dist.constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale).to_event(1))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=g) + torch.tensor([1.0, -0.5])
    precision = 1 / TAU0**2 + len(x) / SIGMA**2
    return x, x.sum(0) / SIGMA**2 / precision, math.sqrt(1 / precision)


def _fit(x, guide, epochs, lr=0.05, **kw):
    return fit_svi(model, x, guide=guide, epochs=epochs, batch_size=len(x), lr=lr, lr_schedule="cosine",
                   progress=False, seed=0, **kw)


def test_plain_functions_with_param_sites_reach_the_exact_posterior(data):
    x, mean, sd = data
    res = _fit(x, param_guide, 600)
    assert res.model is model and len(res.history) == 600
    # the Pyro habit: fitted pyro.param values are read by name after the fit
    torch.testing.assert_close(pyro.param("loc").detach(), mean, atol=0.3 * sd, rtol=0)
    torch.testing.assert_close(pyro.param("scale").detach(), torch.full((2,), sd), atol=0, rtol=0.15)


@pytest.mark.parametrize("guide_cls, lr", [(AutoNormal, 0.05), (AutoDiagonalNormal, 0.05),
                                           (AutoLowRankMultivariateNormal, 0.05), (AutoIAFNormal, 0.1)])
def test_autoguide_reaches_the_exact_posterior(data, guide_cls, lr):
    x, mean, sd = data
    guide = guide_cls(model, hidden_dim=[8]) if guide_cls is AutoIAFNormal else guide_cls(model)
    _fit(x, guide, 800, lr=lr)
    predictive = Predictive(model, guide=guide, num_samples=20_000, return_sites=["mu"], parallel=True)
    draws = predictive(x)["mu"].reshape(-1, 2)
    # optimisation noise of ~0.2 posterior sd at most (Monte Carlo error of the draws: 0.007 sd)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.3 * sd, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.full((2,), sd), atol=0, rtol=0.15)
    if guide_cls is AutoNormal:  # read from the guide itself, not from Pyro's param store
        torch.testing.assert_close(guide.median(x)["mu"].detach(), draws.mean(0), atol=0.02 * sd, rtol=0)


@pytest.mark.parametrize("make_guide", [lambda: param_guide, lambda: AutoNormal(model),
                                        lambda: AutoIAFNormal(model, hidden_dim=[8])],
                         ids=["pyro.param", "AutoNormal", "AutoIAFNormal"])
def test_resume_is_exact_for_param_sites_and_autoguides(data, tmp_path, make_guide):
    """Interrupted at epoch 4 and resumed with a fresh guide object: the same parameters as an uninterrupted run."""
    x = data[0]

    def stop_at_4(epoch, record, model):
        if epoch == 4:
            raise StopTraining

    def fitted(guide):
        return {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()} | (
            {f"module.{k}": v.detach().clone() for k, v in guide.state_dict().items()}
            if isinstance(guide, torch.nn.Module) else {})

    full_guide = make_guide()
    full = _fit(x, full_guide, 10, out_dir=tmp_path / "a")
    want = fitted(full_guide)
    half = _fit(x, make_guide(), 10, out_dir=tmp_path / "b", callbacks=[stop_at_4])
    assert half.stopped == "callback" and len(half.history) == 4
    resumed_guide = make_guide()
    resumed = _fit(x, resumed_guide, 10, out_dir=tmp_path / "b", resume=True)
    got = fitted(resumed_guide)
    assert set(got) == set(want) and len(want) >= 2
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert [h["train_elbo"] for h in resumed.history] == [h["train_elbo"] for h in full.history]


def test_model_function_needs_a_guide_and_parameters(data):
    x = data[0]
    with pytest.raises(InputError, match="expected a guide"):
        fit_svi(model, x, progress=False)

    def fixed_guide(x):
        pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    with pytest.raises(InputError, match="expected parameters to fit"):
        fit_svi(model, x, guide=fixed_guide, progress=False)
