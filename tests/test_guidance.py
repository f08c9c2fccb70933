"""Label-conditional DDPM and classifier-free guidance (issue 12 items 1 and 5), with known answers.

A 1-D two-class Gaussian mixture has closed-form noisy marginals, p_t(x | y) = N(sqrt(abar) mu_y, abar s^2 + 1 - abar)
and p_t(x) their half-half mixture, so the exact eps of each label and of the null label are known; CFG must then
equal the eps of the tilted density p_t(x | y)^(1+w) p_t(x)^(-w) (notes 000, classifier-free guidance).
"""

import math

import pytest
import torch
from torch import nn

from ppl_dgm.errors import InputError
from ppl_dgm.inference import fit_svi
from ppl_dgm.models import DDPM

from .conftest import run_cli

MU, S = torch.tensor([-2.0, 2.0], dtype=torch.float64), 0.3


def _log_px(x, abar, y=None):
    """log p_t(x | y) (y in {0, 1}) or log p_t(x) (y None) of the noisy two-class mixture; x (..., 1) -> (...,)."""
    comp = torch.distributions.Normal(abar.sqrt() * MU, (abar * S**2 + 1 - abar).sqrt())
    lp = comp.log_prob(x)                                                     # (..., 2)
    return lp[..., y] if y is not None else torch.logsumexp(lp, -1) - math.log(2)


class ExactMixtureEps(nn.Module):
    """eps*(x_t, t, y) = -sqrt(1 - abar_t) grad log p_t(x_t | y) (y = 2: the null label, the mixture)."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule, self.dummy = schedule, nn.Parameter(torch.zeros(()))

    def forward(self, x, t, y=None):
        abar = self.schedule.at("alpha_bars", t, x)
        y = torch.full(x.shape[:-1], 2) if y is None else torch.as_tensor(y).expand(x.shape[:-1])
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            lp = torch.where(y == 2, _log_px(xx, abar), torch.where(y == 0, _log_px(xx, abar, 0), _log_px(xx, abar, 1)))
            grad = torch.autograd.grad(lp.sum(), xx)[0]
        return -(1 - abar).sqrt() * grad


def _exact_ddpm(T=100):
    m = DDPM(1, timesteps=T, hidden=(4,), n_classes=2).double()
    m.net = ExactMixtureEps(m.schedule)
    return m.eval()


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0])
def test_cfg_is_the_eps_of_the_tilted_density(w):
    """(1 + w) eps(x, y) - w eps(x) = -sqrt(1 - abar) grad log [p_t(x | y)^(1+w) p_t(x)^(-w)] (200 x, 4 t)."""
    m = _exact_ddpm()
    x = torch.linspace(-4, 4, 200, dtype=torch.float64)[:, None].expand(4, 200, 1)
    t = torch.tensor([[1], [10], [50], [100]])
    abar = m.schedule.at("alpha_bars", t, x)
    for y in (0, 1):
        with m.conditioned(torch.full((200,), y), guidance=w):
            guided = m.eps(x, t)
        xx = x.clone().requires_grad_(True)
        tilted = (1 + w) * _log_px(xx, abar, y) - w * _log_px(xx, abar)
        exact = -(1 - abar).sqrt() * torch.autograd.grad(tilted.sum(), xx)[0]
        torch.testing.assert_close(guided, exact, rtol=1e-9, atol=1e-9)


def test_conditional_sampling_without_guidance_draws_the_class():
    """w = 0 with the exact eps: DDPM-100 samples of label y have the mean and sd of N(mu_y, s^2)."""
    m = _exact_ddpm()
    torch.manual_seed(0)
    for y in (0, 1):
        x = m.sample(4000, y=y, guidance=0.0)[:, 0]
        assert float(x.mean()) == pytest.approx(float(MU[y]), abs=0.03)
        assert float(x.std()) == pytest.approx(S, abs=0.03)
    mixed = m.sample(4000, y=torch.arange(4000) % 2)[:, 0]
    assert float((mixed > 0).double().mean()) == pytest.approx(0.5, abs=0.01)


def test_guidance_pushes_samples_away_from_the_other_class():
    """The tilt p(y | x_t)^w weighs most where the classes still overlap (large t): samples of label 1 move away
    from class 0 as w grows (measured 2.00, 2.03, 2.06, 2.08 for w = 0, 1, 3, 7 with mu_1 = 2)."""
    m = _exact_ddpm()
    means = []
    for w in (0.0, 1.0, 3.0, 7.0):
        torch.manual_seed(0)
        means.append(float(m.sample(3000, y=1, guidance=w)[:, 0].mean()))
    assert means == sorted(means) and means[-1] > means[0] + 0.05


def test_label_dropout_learns_both_laws():
    """Trained with p_uncond, one network gives log p(x | y) and log p(x): for separated classes their chain
    ELBOs differ by log p(y | x) - log p(y) = log 2."""
    torch.manual_seed(0)
    centre = torch.tensor([2.0, 0])
    x = torch.cat([torch.randn(400, 2) * 0.2 + centre, torch.randn(400, 2) * 0.2 - centre])
    y = torch.cat([torch.zeros(400), torch.ones(400)]).long()
    m = DDPM(2, timesteps=50, hidden=(64, 64), n_classes=2, coord_freqs=2, p_uncond=0.2)
    fit_svi(m, (x, y), epochs=40, batch_size=128, lr=3e-3, progress=False, seed=0)
    cond, uncond = m.chain_elbo(x[::4], y[::4], seed=0).elbo, m.chain_elbo(x[::4], seed=0).elbo
    assert cond - uncond == pytest.approx(math.log(2), abs=0.12)


def test_labels_and_guidance_are_checked():
    m = DDPM(2, timesteps=10, hidden=(8,), n_classes=3)
    with pytest.raises(InputError, match=r"expected labels in 0..2; got 0..3"):
        m.sample(4, y=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(InputError, match="guidance must be a number >= 0"):
        m.sample(4, y=1, guidance=-1.0)
    with pytest.raises(InputError, match="guidance needs labels"):
        m.sample(4, guidance=2.0)
    with pytest.raises(InputError, match="needs labels y"):
        m.model(torch.zeros(4, 2))
    with pytest.raises(InputError, match="labels need a conditional DDPM"):
        DDPM(2, timesteps=10, hidden=(8,)).sample(4, y=1)


def test_cli_conditional_ddpm_with_guidance(tmp_path, capsys):
    code, _, err = run_cli(["fit", "ddpm", "--conditional", "--epochs", "1", "--timesteps", "10", "--base-channels",
                            "8", "--t-per-step", "2", "--quiet", "--out", tmp_path / "c"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["sample", tmp_path / "c", "-n", "6", "--label", "3", "--guidance", "2", "--out",
                              tmp_path / "s.png"], capsys)
    assert code == 0 and (tmp_path / "s.png").exists(), err
    code, out, err = run_cli(["evaluate", tmp_path / "c", "--json"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["fit", "ddpm", "--epochs", "1", "--timesteps", "10", "--base-channels", "8", "--quiet",
                            "--out", tmp_path / "u"], capsys)
    code, _, err = run_cli(["sample", tmp_path / "u", "-n", "2", "--label", "1", "--out", tmp_path / "x.npy"], capsys)
    assert code == 2 and "needs a conditional run (cvae, or ddpm fitted with --conditional)" in err
    code, _, err = run_cli(["sample", tmp_path / "c", "-n", "2", "--guidance", "1", "--out", tmp_path / "x.npy"],
                           capsys)
    assert code == 2 and "--guidance: expected a --label" in err
    code, _, err = run_cli(["fit", "ddpm", "--conditional", "--dataset", "moons", "--epochs", "1", "--quiet",
                            "--out", tmp_path / "m"], capsys)
    assert code == 2 and "a conditional model needs labelled data (y and y_test); moons has none" in err
    assert not (tmp_path / "m").exists()


class ExactMixtureClassifier(nn.Module):
    """p(y | x_t) of the two-class mixture, exactly, as a noise-conditional classifier on the DDPM's schedule."""

    def __init__(self, ddpm):
        super().__init__()
        from ppl_dgm.models import Classifier

        self.clf = Classifier(1, 2, noise_conditional=True, timesteps=ddpm.timesteps, hidden=(4,)).double()
        self.clf.net = self                          # logits(x_t, t) -> log p_t(x | y) for y = 0, 1 (+ const)
        self.schedule = ddpm.schedule

    def forward(self, x, t, y=None):
        abar = self.schedule.at("alpha_bars", t, x)
        return torch.stack([_log_px(x, abar, 0), _log_px(x, abar, 1)], -1)


@pytest.mark.parametrize("w", [1.0, 4.0])
def test_classifier_guidance_is_the_eps_of_the_tilted_density(w):
    """eps(x) - w sqrt(1 - abar) grad log p(y | x_t) = -sqrt(1 - abar) grad log [p_t(x) p_t(y | x)^w]."""
    m = _exact_ddpm()
    clf = ExactMixtureClassifier(m).clf
    x = torch.linspace(-4, 4, 200, dtype=torch.float64)[:, None].expand(4, 200, 1)
    t = torch.tensor([[1], [10], [50], [100]])
    abar = m.schedule.at("alpha_bars", t, x)
    for y in (0, 1):
        with m.conditioned(torch.full((200,), y), guidance=w, classifier=clf):
            guided = m.eps(x, t)
        xx = x.clone().requires_grad_(True)
        log_post = _log_px(xx, abar, y) - math.log(2) - _log_px(xx, abar)               # log p_t(y | x)
        exact = -(1 - abar).sqrt() * torch.autograd.grad((_log_px(xx, abar) + w * log_post).sum(), xx)[0]
        torch.testing.assert_close(guided, exact, rtol=1e-9, atol=1e-9)


def test_classifier_guidance_is_checked():
    from ppl_dgm.models import Classifier

    m = _exact_ddpm()
    with pytest.raises(InputError, match="noise-conditional classifier"):
        m.sample(2, y=0, guidance=1.0, classifier=Classifier(1, 2, noise_conditional=False, timesteps=100))
    with pytest.raises(InputError, match="the DDPM's noise schedule"):
        m.sample(2, y=0, guidance=1.0, classifier=Classifier(1, 2, noise_conditional=True, timesteps=50))


def test_cli_classifier_guidance(tmp_path, capsys):
    common = ["--epochs", "1", "--timesteps", "10", "--quiet"]
    assert run_cli(["fit", "ddpm", *common, "--base-channels", "8", "--out", tmp_path / "d"], capsys)[0] == 0
    code, _, err = run_cli(["fit", "classifier", "--noise-conditional", *common, "--hidden", "16",
                            "--out", tmp_path / "c"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["evaluate", tmp_path / "c", "--json"], capsys)
    import json

    res = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and 0 <= res["accuracy"] <= 1 and [r["t"] for r in res["per_t"]] == [0]
    code, out, err = run_cli(["sample", tmp_path / "d", "-n", "4", "--label", "2", "--guidance", "3", "--classifier",
                              tmp_path / "c", "--out", tmp_path / "g.npy"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["sample", tmp_path / "c", "-n", "4", "--out", tmp_path / "x.npy"], capsys)
    assert code == 2 and "ppl-dgm sample needs a generative family" in err
    code, _, err = run_cli(["sample", tmp_path / "d", "-n", "4", "--label", "2", "--classifier", tmp_path / "c",
                            "--out", tmp_path / "x.npy"], capsys)
    assert code == 2 and "--classifier: expected --label and --guidance" in err
