"""The GAN (issue 14): the optimal discriminator and the game's value against closed forms, the saturation of the
minimax generator loss, the adversarial trainer on the shared loop (fit, resume, divergence), inversion."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from ppl_dgm.errors import InputError
from ppl_dgm.inference import AdversarialObjective, fit_svi
from ppl_dgm.inference.adversarial import log_d, log_one_minus_d
from ppl_dgm.models.gan import GAN
from ppl_dgm.nn import MLP

P, Q = stats.norm(0.0, 1.0), stats.norm(1.0, 1.5)  # data p and a fixed generator's q


def jsd(p, q) -> float:
    """JSD(p || q) in nats by quadrature."""
    def half_kl(a, b):
        def f(x):
            pa, pb = a.pdf(x), b.pdf(x)
            return pa * np.log(pa / (0.5 * (pa + pb))) if pa > 0 else 0.0
        return integrate.quad(f, -15, 15, limit=200)[0]
    return 0.5 * half_kl(p, q) + 0.5 * half_kl(q, p)


@pytest.fixture(scope="module")
def trained_critic():
    """A discriminator trained by the package's objective on samples of p (real) and q (fake)."""
    torch.manual_seed(0)
    critic = torch.nn.Sequential(MLP(1, (32, 32), 1), torch.nn.Flatten(0))
    opt = torch.optim.Adam(critic.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 3000)
    objective = AdversarialObjective()
    for _ in range(3000):
        real = torch.randn(512, 1)
        fake = 1.0 + 1.5 * torch.randn(512, 1)
        loss = objective.discriminator_loss(critic, real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return critic, objective


def test_discriminator_approaches_the_optimal_one(trained_critic):
    critic, _ = trained_critic
    x = np.linspace(-2.0, 3.0, 51)
    d_star = P.pdf(x) / (P.pdf(x) + Q.pdf(x))
    with torch.no_grad():
        d = torch.sigmoid(critic(torch.tensor(x, dtype=torch.float32)[:, None])).numpy()
    assert np.abs(d - d_star).max() < 0.03


def test_value_at_the_trained_discriminator_is_2_jsd_minus_log_4(trained_critic):
    critic, objective = trained_critic
    expected = 2 * jsd(P, Q) - math.log(4)  # -0.9954...
    torch.manual_seed(1)
    with torch.no_grad():
        v = float(objective.value(critic(torch.randn(200_000, 1)), critic(1.0 + 1.5 * torch.randn(200_000, 1))))
    # the value at the trained D is a lower bound on the value at D* (D* maximizes V); Monte Carlo se ~0.002
    assert v == pytest.approx(expected, abs=0.01)
    assert v < expected + 0.006


def test_value_of_identical_distributions_at_d_half_is_minus_log_4():
    zero = torch.zeros(10)
    assert float(AdversarialObjective.value(zero, zero)) == pytest.approx(-math.log(4))


def test_minimax_generator_gradient_vanishes_where_d_rejects_samples():
    """Notes 004: d/da log(1 - sigma(a)) = -sigma(a) -> 0 as D(G(z)) -> 0, while d/da [-log sigma(a)] -> -1."""
    a = torch.full((4,), -12.0, requires_grad=True)  # D(G(z)) = sigma(-12) = 6e-6
    (g_mm,) = torch.autograd.grad(AdversarialObjective("minimax").generator_loss(a), a)
    (g_ns,) = torch.autograd.grad(AdversarialObjective("non-saturating").generator_loss(a), a)
    assert torch.allclose(g_mm, -torch.sigmoid(a.detach()) / 4, rtol=1e-5)
    assert torch.allclose(g_ns, -(1 - torch.sigmoid(a.detach())) / 4, rtol=1e-5)
    assert g_mm.abs().max() < 1e-5 and g_ns.abs().min() > 0.24

    # through a generator: the same ratio reaches theta
    torch.manual_seed(0)
    gan = GAN(x_dim=2, latent_dim=2, hidden=(8,), output="linear")
    with torch.no_grad():
        gan.discriminator.net[-1].bias.fill_(-40.0)  # D ~ 0 everywhere
    z = torch.randn(64, 2)
    grads = {}
    for loss in ("minimax", "non-saturating"):
        gan.zero_grad()
        AdversarialObjective(loss).generator_loss(gan.discriminator(gan.generate(z))).backward()
        grads[loss] = torch.cat([p.grad.flatten() for p in gan.generator.parameters()]).norm()
    assert grads["minimax"] < 1e-12 < 1e-3 < grads["non-saturating"]


def test_log_d_is_stable():
    a = torch.tensor([-200.0, 0.0, 200.0])
    assert torch.isfinite(log_d(a)).all() and torch.isfinite(log_one_minus_d(a)).all()
    assert float(log_d(a)[1]) == pytest.approx(-math.log(2))


def test_bad_options_are_one_line():
    with pytest.raises(InputError, match="loss must be one of"):
        AdversarialObjective("wasserstein")
    with pytest.raises(InputError, match="gradient_penalty"):
        AdversarialObjective(gradient_penalty=-1.0)
    with pytest.raises(InputError, match="d_steps"):
        AdversarialObjective(d_steps=0)
    with pytest.raises(InputError, match="28x28"):
        GAN(x_dim=64, arch="conv")


def _gaussian_fit(epochs: int, out=None, resume=False, **kw):
    torch.manual_seed(0)
    x = 2.0 + 0.5 * torch.randn(4096, 1)
    gan = GAN(x_dim=1, latent_dim=1, hidden=(32, 32), output="linear")
    res = fit_svi(gan, x, test=x[:512], loss=AdversarialObjective(**kw), epochs=epochs, batch_size=128, lr=2e-3,
                  beta1=0.5, progress=False, out_dir=out, resume=resume, seed=0)
    return gan, res


def test_gan_learns_a_gaussian_on_the_shared_loop():
    gan, res = _gaussian_fit(15)
    torch.manual_seed(3)
    s = gan.sample(20_000)
    assert float(s.mean()) == pytest.approx(2.0, abs=0.1)
    assert float(s.std()) == pytest.approx(0.5, abs=0.1)
    last = res.history[-1]
    assert {"d_loss", "g_loss", "d_real", "d_fake", "test_value", "test_d_real", "test_d_fake"} <= set(last)
    assert "test_elbo" not in last  # no likelihood, no ELBO
    assert abs(last["d_real"] - 0.5) < 0.1 and abs(last["d_fake"] - 0.5) < 0.1
    assert last["train_elbo"] == pytest.approx(-math.log(4), abs=0.1)  # V near equilibrium


def test_resume_ends_where_an_uninterrupted_fit_would(tmp_path):
    a, _ = _gaussian_fit(3, out=tmp_path / "a")
    _gaussian_fit(2, out=tmp_path / "b")
    b, res = _gaussian_fit(3, out=tmp_path / "b", resume=True)
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_r1_penalty_and_spectral_norm_train():
    gan, res = _gaussian_fit(1, gradient_penalty=1.0, d_steps=2)
    assert math.isfinite(res.history[-1]["d_loss"])
    sn = GAN(x_dim=4, latent_dim=2, hidden=(16,), output="linear", spectral_norm=True)
    sn.train()
    for _ in range(20):  # the power iteration runs in training-mode forwards
        sn.discriminator(torch.randn(8, 4))
    w = sn.discriminator.net[0].weight.detach()
    assert float(torch.linalg.matrix_norm(w, ord=2)) == pytest.approx(1.0, abs=0.02)


def test_inversion_recovers_generated_examples():
    torch.manual_seed(0)
    gan = GAN(x_dim=6, latent_dim=3, hidden=(32,), output="linear")
    x = gan.sample(8)
    z = gan.encode_mean(x, steps=400)
    assert z.shape == (8, 3)
    with torch.no_grad():
        assert float((gan.decode_mean(z) - x).pow(2).sum(1).max()) < 1e-3
    assert torch.equal(z, gan.encode_mean(x, steps=400))  # deterministic given the seed
