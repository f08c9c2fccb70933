"""ELBO terms against closed forms, active units and planted collapse, gap, SNR, convergence, diagnose CLI."""

from __future__ import annotations

import json
import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger

from ppl_dgm.cli import main
from ppl_dgm.inference import fit_svi
from ppl_dgm.inference.diagnostics import elbo_terms
from ppl_dgm.inference.diagnostics_derived import (
    PosteriorCollapseWarning,
    active_units,
    collapse_warnings,
    convergence,
    elbo_iwae_gap,
    gradient_snr,
)
from ppl_dgm.models.vae import VAE

TAU0, SIGMA = 2.0, 1.5


def normal_model(x):
    """mu ~ N(0, TAU0^2); x_n ~ N(mu, SIGMA^2), n = 1..N."""
    mu = pyro.sample("mu", dist.Normal(0.0, TAU0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu, SIGMA), obs=x)


def normal_guide(m, s):
    def guide(x):
        pyro.sample("mu", dist.Normal(m, s))
    return guide


def test_conjugate_terms_equal_closed_form_and_pyro_elbo():
    x = torch.tensor([0.3, 1.2, -0.4, 2.0, 0.9, 1.1])
    n, m, s = len(x), 0.7, 0.4
    P = 3000
    terms = elbo_terms(normal_model, normal_guide(m, s), x, num_particles=P)
    # KL(N(m, s^2) || N(0, TAU0^2)) per example: analytic, exact
    kl = math.log(TAU0 / s) + (s**2 + m**2) / (2 * TAU0**2) - 0.5
    assert terms.analytic == {"mu": True}
    assert terms.kl_sites["mu"] == pytest.approx(kl / n, abs=1e-6)
    # E_q[log p(x | mu)] per example = -log(sqrt(2 pi) sigma) - (S + (xbar - m)^2 + s^2) / (2 sigma^2)
    xbar, S = float(x.mean()), float(((x - x.mean()) ** 2).mean())
    rec = -math.log(math.sqrt(2 * math.pi) * SIGMA) - (S + (xbar - m) ** 2 + s**2) / (2 * SIGMA**2)
    d = xbar - m
    se = math.sqrt((4 * d**2 * s**2 + 2 * s**4) / (4 * SIGMA**4) / P)
    assert terms.log_likelihood["x"] == pytest.approx(rec, abs=4 * se)
    assert terms.elbo == pytest.approx(terms.reconstruction - terms.kl, abs=1e-9)
    assert terms.n == n
    # Pyro's own estimate of the same ELBO (total, not per example)
    pyro_elbo = -TraceMeanField_ELBO(num_particles=P, vectorize_particles=True).loss(
        normal_model, normal_guide(m, s), x)
    assert pyro_elbo == pytest.approx(n * terms.elbo, abs=n * 6 * se)
    assert n * terms.elbo == pytest.approx(n * (rec - kl / n), abs=n * 4 * se)


def test_kl_per_dim_closed_form():
    K, N = 4, 30
    g = torch.Generator().manual_seed(1)
    loc, scale = torch.randn(N, K, generator=g), torch.rand(N, K, generator=g) + 0.3

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(N, K), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    terms = elbo_terms(model, guide, torch.zeros(N), num_particles=2)
    expected = (0.5 * (scale**2 + loc**2 - 1) - scale.log()).mean(0)
    np.testing.assert_allclose(terms.kl_per_dim["z"], expected.numpy(), rtol=1e-5)
    assert sum(terms.kl_per_dim["z"]) == pytest.approx(terms.kl_sites["z"], rel=1e-5)


def local_model(x):
    """z_n ~ N(0, 1), x_n ~ N(z_n, SIGMA^2): p(z | x) = N(x / (1 + SIGMA^2), SIGMA^2 / (1 + SIGMA^2))."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, SIGMA), obs=x)


def local_guide(widen):
    def guide(x):
        v = SIGMA**2 / (1 + SIGMA**2)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x / (1 + SIGMA**2), widen * math.sqrt(v)))
    return guide


def test_gap_is_zero_for_the_exact_posterior_and_bounds_the_kl():
    x = torch.linspace(-2, 2, 40)
    exact = elbo_iwae_gap(local_model, local_guide(1.0), x, k=50)
    log_px = dist.Normal(0.0, math.sqrt(1 + SIGMA**2)).log_prob(x).double().numpy()
    np.testing.assert_allclose(exact.per_example_iwae, log_px, atol=1e-4)
    assert abs(exact.gap) < 1e-4
    wide = elbo_iwae_gap(local_model, local_guide(2.0), x, k=1000)
    kl = 0.5 * (4 - 1 - math.log(4))  # KL(q || p(z|x)) with q twice as wide: 0.807 nats
    assert (wide.per_example_iwae >= wide.per_example_elbo).all()
    assert 0.6 < wide.gap < kl + 3 * wide.gap_se
    assert wide.elbo == pytest.approx(float(log_px.mean()) - kl, abs=0.1)


class ScaleSite(Messenger):
    """Multiply the log-density of one site by ``scale`` (a beta on the KL of "z")."""

    def __init__(self, name, scale):
        super().__init__()
        self.name, self.scale = name, scale

    def _process_message(self, msg):
        if msg["name"] == self.name:
            msg["scale"] = msg["scale"] * self.scale


def beta_loss(beta):
    elbo = TraceMeanField_ELBO()

    def loss(model, guide, *args):
        return elbo.differentiable_loss(ScaleSite("z", beta)(model), ScaleSite("z", beta)(guide), *args)
    return loss


def _train(ds, beta):
    torch.manual_seed(0)
    vae = VAE(ds.dim, latent_dim=4, hidden=(32,))
    fit_svi(vae, ds.x_train, epochs=4, batch_size=64, lr=3e-3, loss=beta_loss(beta), progress=False, seed=0)
    return vae


def test_planted_collapse_is_detected(digits):
    x = digits.x_test
    collapsed = _train(digits, 200.0)
    au = active_units(collapsed.guide, x)
    terms = elbo_terms(collapsed.model, collapsed.guide, x)
    assert au["z"].active == 0 and au["z"].dim == 4
    assert max(au["z"].variance) < 0.01
    with pytest.warns(PosteriorCollapseWarning, match="posterior collapse in site 'z'"):
        msgs = collapse_warnings(au, terms.kl_sites)
    assert len(msgs) == 1
    healthy = _train(digits, 1.0)  # the control: the same training with beta = 1 uses its latents
    au_ok = active_units(healthy.guide, x)
    assert au_ok["z"].active >= 2
    assert collapse_warnings(au_ok, elbo_terms(healthy.model, healthy.guide, x).kl_sites, warn=False) == []


def test_gradient_snr_groups_and_batch_size(digits):
    torch.manual_seed(0)
    vae = VAE(digits.dim, latent_dim=4, hidden=(32,))
    small = gradient_snr(vae, digits.x_train, num_draws=12, batch_size=8, seed=0)
    full = gradient_snr(vae, digits.x_train, num_draws=12, batch_size=1024, seed=0)
    assert set(small) == {"encoder", "decoder"}
    assert small["decoder"]["n_params"] == sum(p.numel() for p in vae.decoder.parameters())
    for g in small:  # a 128x larger minibatch: less noise, higher SNR (about sqrt(128) ~ 11x)
        assert full[g]["snr"] > 3 * small[g]["snr"]
    assert all(p.grad is None for p in vae.parameters())


def test_convergence_from_history():
    up = [{"epoch": e, "test_elbo": -100 + 0.5 * e} for e in range(1, 31)]
    c = convergence(up)
    assert c.status == "improving" and c.slope == pytest.approx(0.5) and c.metric == "test_elbo"
    rng = np.random.default_rng(0)
    flat = [{"epoch": e, "train_elbo": -100 + 0.01 * rng.standard_normal()} for e in range(1, 31)]
    c = convergence(flat)
    assert c.status == "converged" and c.metric == "train_elbo" and abs(c.slope) < 0.01
    down = [{"epoch": e, "test_elbo": -90 - 0.3 * e} for e in range(1, 31)]
    assert convergence(down).status == "worsening"
    assert convergence(up[:2]).status == "too short"
    # a held-out ELBO jittering by +-0.2 nats around a slope of 0.01 nats/epoch: the slope is within
    # its standard error, so no verdict of a trend (the sign alone would have said "improving")
    jitter = [{"epoch": e, "test_elbo": -10 + 0.01 * e + 0.2 * rng.standard_normal()} for e in range(1, 41)]
    c = convergence(jitter)
    assert c.status == "converged" and 0.005 < c.slope_se < 0.012 and c.relative_change > 2e-3


def test_diagnose_cli(tmp_path, capsys):
    run = str(tmp_path / "run")
    with pytest.raises(SystemExit) as e:
        main(["fit", "vae", "--out", run, "--epochs", "2", "--hidden", "32", "--latent-dim", "4", "--quiet"])
    assert e.value.code == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert set(history[-1]["test_kl_sites"]) == {"z"}
    assert history[-1]["test_kl_sites"]["z"] == pytest.approx(history[-1]["test_kl"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["diagnose", run, "--iwae-k", "20", "--max-examples", "150"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "active units z:" in out and "ELBO-IWAE gap (k=20)" in out and "gradient SNR" in out
    report = json.loads((tmp_path / "run" / "diagnostics.json").read_text())
    assert {"terms", "active_units", "gap", "snr", "convergence", "warnings"} <= set(report)
    assert report["n"] == 150 and len(report["terms"]["kl_per_dim"]["z"]) == 4
    assert report["gap"]["gap"] >= 0 and report["gap"]["iwae"] >= report["gap"]["elbo"]
    assert set(report["snr"]) == {"encoder", "decoder"}
    for f in ("terms.png", "kl_per_dim.png", "gap.png"):
        assert (tmp_path / "run" / f).stat().st_size > 10_000
    idata = az.from_netcdf(str(tmp_path / "run" / "posterior.nc"))
    assert idata.posterior["z"].dims == ("chain", "draw", "obs", "z_dim")
    assert json.loads(idata.posterior.attrs["config"])["family"] == "vae"
    with pytest.raises(SystemExit) as e:
        main(["diagnose", str(tmp_path / "nope")])
    assert e.value.code == 2
