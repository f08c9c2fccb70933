"""The shared samplers with exact scores plugged in: mixture weights (Langevin), Gaussian moments (PC, ODE), DDPM."""

import pytest
import torch

from ppl_dgm.errors import InputError
from ppl_dgm.models.samplers import denoise, langevin_sample, pc_sample

from .test_score import MU, SIGMA, W, exact_score_model, gaussian_ddpm, gaussian_score, mixture_score


def _check_gaussian(x, atol_mean=0.08, atol_cov=0.15):
    torch.testing.assert_close(x.mean(0), MU, atol=atol_mean, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), SIGMA, atol=atol_cov, rtol=0)


def test_annealed_langevin_with_the_exact_mixture_score_reproduces_the_weights():
    """Fraction of samples in the right component (x > -0.5) vs w_2 = 0.75; n = 4000 (sd of the fraction 0.007)."""
    torch.manual_seed(0)
    m = exact_score_model(mixture_score, x_dim=1, sigma_max=10.0, sigma_min=0.05, levels=20)
    tr = langevin_sample(m.score_field(), 4000, steps=50, record=5)
    frac = float((tr.x > -0.5).double().mean())
    assert abs(frac - float(W[1])) < 0.03, frac
    assert tr.xs.shape == (5, 4000, 1) and tr.steps[0] == 20 and tr.steps[-1] == 0


@pytest.mark.parametrize("sampler", ["pc", "ode"])
def test_pc_and_ode_on_a_known_gaussian_give_its_moments(sampler):
    torch.manual_seed(0)
    m = exact_score_model(gaussian_score(MU, SIGMA), sigma_max=20.0, sigma_min=0.01, levels=100)
    x = m.sample(3000, sampler=sampler)
    _check_gaussian(x)


@pytest.mark.parametrize("sampler", ["langevin", "pc", "ode"])
def test_ddpm_through_the_score_samplers_gives_the_gaussian(sampler):
    """A DDPM's exact eps-network used through the eps <-> score identity (T = 200)."""
    torch.manual_seed(0)
    m = gaussian_ddpm(T=200)
    x = m.sample(2000, sampler=sampler, **({"steps": 20} if sampler == "langevin" else {}))
    _check_gaussian(x)


def test_tweedie_of_a_ddpm_is_its_x0_prediction():
    """denoise on the VE field at sigma_t equals DDPM.denoise at t on x_t = x-bar / sqrt(1 + sigma_t^2)."""
    m = gaussian_ddpm(T=50)
    field = m.score_field()
    t = 20
    sigma = field.sigmas[m.timesteps - t]
    x_bar = torch.randn(5, 2, dtype=torch.float64)
    x_t = x_bar / (1 + sigma**2).sqrt()
    torch.testing.assert_close(denoise(field, x_bar, sigma), m.denoise(x_t, t))


def test_sampler_arguments_are_checked():
    m = exact_score_model(gaussian_score(MU, SIGMA))
    with pytest.raises(InputError, match="steps must be a positive integer"):
        m.sample(3, steps=0)
    with pytest.raises(InputError, match="rtol must be a positive number"):
        m.sample(3, sampler="ode", rtol=0)
    with pytest.raises(InputError, match="n must be a positive integer"):
        m.sample(0)
    assert pc_sample(m.score_field(), 3, steps=0, record=3).xs.shape == (3, 3, 2)
