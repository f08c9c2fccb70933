"""fit_svi, ELBO terms and the IWAE estimate against closed forms."""

import math
import re

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from ppl_dgm import VAE, fit_svi, load_dataset
from ppl_dgm.errors import InputError, NonFiniteError
from ppl_dgm.evaluation import evaluate_model, iwae_log_likelihood
from ppl_dgm.inference import StopTraining, elbo_terms, load_checkpoint
from ppl_dgm.inference.diagnostics import site_kl


class LinearGaussian(nn.Module):
    """z ~ N(0, I_K); x | z ~ N(W z + b, s^2 I_D); guide N(A x + c, diag d^2) with fixed weights."""

    family = "linear-gaussian"

    def __init__(self, D=5, K=2, seed=0, exact_guide=False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(D, K, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(D, generator=g, dtype=torch.float64))
        self.s = 0.7
        self.A = nn.Parameter(0.3 * torch.randn(K, D, generator=g, dtype=torch.float64))
        self.c = nn.Parameter(0.1 * torch.randn(K, generator=g, dtype=torch.float64))
        self.log_d = nn.Parameter(-0.5 + 0.1 * torch.randn(K, generator=g, dtype=torch.float64))
        self.exact_guide = exact_guide

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.W.shape[1]), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.s).to_event(1), obs=x)

    def posterior(self, x):
        K = self.W.shape[1]
        prec = torch.eye(K, dtype=x.dtype) + self.W.T @ self.W / self.s**2
        cov = torch.linalg.inv(prec)
        mean = (x - self.b) @ self.W @ cov.T / self.s**2
        return mean, cov

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            if self.exact_guide:
                mean, cov = self.posterior(x)
                pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=cov))
            else:
                pyro.sample("z", dist.Normal(x @ self.A.T + self.c, self.log_d.exp()).to_event(1))

    def log_marginal(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.W.shape[0], dtype=x.dtype)
        return dist.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def closed_form_terms(self, x):
        m, d2 = x @ self.A.T + self.c, (2 * self.log_d).exp()
        D = x.shape[1]
        resid = x - m @ self.W.T - self.b
        rec = -0.5 * D * math.log(2 * math.pi * self.s**2) - (
            (resid**2).sum(-1) + (self.W**2 * d2).sum()) / (2 * self.s**2)
        kl = 0.5 * (d2.sum() + (m**2).sum(-1) - m.shape[1] - torch.log(d2).sum())
        return rec.mean().detach(), kl.mean().detach()


@pytest.fixture
def lg_data():
    m = LinearGaussian()
    torch.manual_seed(1)
    with torch.no_grad():
        z = torch.randn(400, 2, dtype=torch.float64)
        x = z @ m.W.T + m.b + m.s * torch.randn(400, 5, dtype=torch.float64)
    return m, x


def test_elbo_terms_match_closed_form(lg_data):
    m, x = lg_data
    rec, kl = m.closed_form_terms(x)
    rec, kl = float(rec), float(kl)
    torch.manual_seed(0)
    runs = [elbo_terms(m.model, m.guide, x, num_particles=5) for _ in range(20)]
    t = runs[0]
    assert t.analytic == {"z": True}
    assert t.n == 400
    assert t.kl == pytest.approx(kl, rel=1e-10)  # analytic KL: exact
    # the reconstruction term is a Monte Carlo average: compare within 4 standard errors
    est = torch.tensor([r.reconstruction for r in runs], dtype=torch.float64)
    se = float(est.std() / math.sqrt(len(est)))
    assert abs(float(est.mean()) - rec) < 4 * se
    assert all(r.elbo == pytest.approx(r.reconstruction - r.kl, abs=1e-12) for r in runs)
    # Pyro's own estimator agrees with the closed form within the same error
    losses = torch.tensor([pyro.infer.TraceMeanField_ELBO(num_particles=5).loss(m.model, m.guide, x)
                           for _ in range(20)], dtype=torch.float64)
    assert abs(float(-losses.mean() / 400) - (rec - kl)) < 4 * se * 1.5


def test_exact_posterior_guide_gives_log_marginal(lg_data):
    m, x = lg_data
    m.exact_guide = True
    exact = float(m.log_marginal(x).mean().detach())
    t = elbo_terms(m.model, m.guide, x, num_particles=3)
    assert t.analytic == {"z": False}  # MVN vs Normal.to_event: Monte Carlo, but zero variance here
    assert t.elbo == pytest.approx(exact, rel=1e-10)
    ll = iwae_log_likelihood(m.model, m.guide, x, k=7)
    torch.testing.assert_close(ll, m.log_marginal(x).detach(), rtol=1e-10, atol=1e-10)


def test_analytic_and_monte_carlo_kl_agree():
    torch.manual_seed(0)
    q = dist.Normal(torch.randn(50, 4), torch.rand(50, 4) + 0.3).to_event(1)
    p = dist.Normal(torch.zeros(50, 4), torch.ones(50, 4)).to_event(1)
    site = lambda fn, v=None: {"fn": fn, "value": v, "scale": 1.0, "mask": None}  # noqa: E731
    exact, analytic = site_kl(site(q), site(p))
    assert analytic
    draws = torch.stack([(lambda v: (q.log_prob(v) - p.log_prob(v)).sum())(q.sample()) for _ in range(4000)])
    se = float(draws.std() / math.sqrt(len(draws)))
    assert abs(float(draws.mean()) - float(exact)) < 4 * se


def test_linear_gaussian_svi_reaches_log_marginal():
    """With a Gaussian guide rich enough to hold the posterior, maximising the ELBO reaches log p(x)."""
    m = LinearGaussian(D=4, K=2, seed=3)
    with torch.no_grad():  # orthogonal W columns -> diagonal posterior covariance
        q, _ = torch.linalg.qr(torch.randn(4, 2, dtype=torch.float64))
        m.W.copy_(q * torch.tensor([2.0, 1.0], dtype=torch.float64))
        torch.manual_seed(2)
        x = torch.randn(300, 2, dtype=torch.float64) @ m.W.T + m.b + m.s * torch.randn(300, 4, dtype=torch.float64)
    for p in (m.W, m.b):
        p.requires_grad_(False)
    res = fit_svi(m, x, epochs=300, batch_size=300, lr=0.05, progress=False, seed=0)
    exact = float(m.log_marginal(x).mean())
    assert res.history[-1]["train_elbo"] == pytest.approx(exact, abs=0.05)


@pytest.fixture(scope="module")
def digits_vae():
    pyro.clear_param_store()
    ds = load_dataset("digits", binarize="dynamic", seed=0)
    model = VAE(ds.dim, latent_dim=8, hidden=[128], image_shape=ds.shape)
    torch.manual_seed(0)
    init = evaluate_model(model, ds.x_test, iwae_k=1, elbo_particles=1)
    res = fit_svi(model, ds.x_train, test=ds.x_test, epochs=25, batch_size=64, lr=2e-3,
                  transform=ds.batch_transform(), progress=False, seed=0)
    return model, ds, init, res


def test_vae_on_digits_improves_held_out_elbo(digits_vae):
    model, ds, init, res = digits_vae
    first, last = res.history[0], res.history[-1]
    # init: about -64 ln 2 = -44 nats (p = 1/2 everywhere); trained: about -26 nats
    assert init.elbo < -40
    assert last["test_elbo"] > init.elbo + 14
    assert last["test_elbo"] > first["test_elbo"] + 3
    assert last["test_elbo"] == pytest.approx(last["test_reconstruction"] - last["test_kl"], abs=1e-9)


def test_iwae_bounds_and_grows_with_k(digits_vae):
    model, ds, _, _ = digits_vae
    x = ds.x_test[:150]
    torch.manual_seed(0)
    t = elbo_terms(model.model, model.guide, x, num_particles=50)
    means = {k: float(iwae_log_likelihood(model.model, model.guide, x, k=k).mean()) for k in (1, 10, 100, 1000)}
    assert means[1] == pytest.approx(t.elbo, abs=0.3)  # k = 1 is a one-sample ELBO estimate
    assert t.elbo < means[10] < means[100] < means[1000]
    ev = evaluate_model(model, x, iwae_k=200)
    assert ev.log_likelihood >= ev.elbo
    assert ev.bits_per_dim == pytest.approx(-ev.log_likelihood / (64 * math.log(2)))


def _small_fit(out, epochs, callbacks=(), resume=False, seed=3):
    ds = load_dataset("digits", binarize="dynamic", seed=0)
    torch.manual_seed(seed)
    model = VAE(ds.dim, latent_dim=4, hidden=[32], image_shape=ds.shape)
    res = fit_svi(model, ds.x_train[:300], test=ds.x_test[:100], epochs=epochs, batch_size=50,
                  lr_schedule="cosine", out_dir=out, resume=resume, seed=seed, progress=False,
                  transform=ds.batch_transform(), callbacks=callbacks)
    return model, res


def test_resume_ends_where_uninterrupted_run_ends(tmp_path):
    full, full_res = _small_fit(tmp_path / "a", 6)

    def stop_at_3(epoch, record, model):
        if epoch == 3:
            raise StopTraining

    half, half_res = _small_fit(tmp_path / "b", 6, callbacks=[stop_at_3])
    assert half_res.stopped == "callback" and len(half_res.history) == 3
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 3
    resumed, res = _small_fit(tmp_path / "b", 6, resume=True, seed=3)
    assert len(res.history) == 6
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert res.history == full_res.history or all(
        r1[k] == r2[k] for r1, r2 in zip(res.history, full_res.history) for k in r1 if k != "seconds")


def test_existing_checkpoint_needs_resume(tmp_path):
    _small_fit(tmp_path, 1)
    with pytest.raises(InputError, match="already holds a checkpoint"):
        _small_fit(tmp_path, 1)


def test_fits_do_not_share_param_store_state():
    """A guide with pyro.param sites starts afresh in every fit (the store is cleared)."""
    x = torch.randn(64, 1) + 3.0

    class Conj(nn.Module):
        def model(self, x):
            mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", dist.Normal(mu, 1.0).expand([x.shape[0], 1]).to_event(1), obs=x)

        def guide(self, x):
            loc = pyro.param("loc", torch.tensor(0.0))
            scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
            pyro.sample("mu", dist.Normal(loc, scale))

    r1 = fit_svi(Conj(), x, epochs=50, batch_size=64, lr=0.05, progress=False, seed=1)
    moved = pyro.param("loc").item()
    assert moved > 1.0  # the param-store parameter was trained
    r2 = fit_svi(Conj(), x, epochs=50, batch_size=64, lr=0.05, progress=False, seed=1)
    assert [h["train_elbo"] for h in r1.history] == [h["train_elbo"] for h in r2.history]


def test_callback_hooks_run_in_order_and_see_complete_records(tmp_path):
    from ppl_dgm.inference import Callback

    class Recorder(Callback):
        def __init__(self):
            self.calls = []

        def on_fit_start(self, run):
            self.calls.append("fit_start")

        def on_epoch_start(self, run):
            self.calls.append(f"epoch_start {run.epoch}")

        def on_step_end(self, run, step, loss):
            self.calls.append("step")
            assert math.isfinite(loss)

        def on_epoch_end(self, run, record):
            self.calls.append(f"epoch_end {record['epoch']}")
            # held-out terms, the clock and the checkpoint ran first
            assert {"test_elbo", "seconds"} <= set(record) and run.checkpoint is not None

        def on_fit_end(self, run):
            self.calls.append(f"fit_end {run.stopped}")

    rec = Recorder()
    _small_fit(tmp_path, 2, callbacks=[rec])  # 300 examples in minibatches of 50: 6 steps per epoch
    assert rec.calls == (["fit_start"] + ["epoch_start 0"] + ["step"] * 6 + ["epoch_end 1"]
                         + ["epoch_start 1"] + ["step"] * 6 + ["epoch_end 2", "fit_end None"])


def test_non_finite_stops_names_site_and_keeps_checkpoint(tmp_path):
    def poison(epoch, record, model):
        if epoch == 2:
            with torch.no_grad():
                model.encoder[0].weight[0, 0] = float("nan")

    with pytest.raises(NonFiniteError) as info:
        _small_fit(tmp_path, 5, callbacks=[poison])
    msg = str(info.value)
    assert "epoch 3, step 1" in msg and "param encoder.0.weight" in msg and "guide z" in msg
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_fit_svi_rejects_bad_options():
    m = VAE(4, 2, [8])
    with pytest.raises(InputError, match="optimizer must be one of 'adam', 'clipped_adam'; got 'sgd'"):
        fit_svi(m, torch.rand(10, 4), optimizer="sgd", progress=False)
    for kw, match in [(dict(epochs=0), "expected epochs as a positive integer; got 0"),
                      (dict(batch_size=2.5), "expected batch_size as a positive integer; got 2.5"),
                      (dict(lr=float("nan")), "expected lr as a finite number > 0; got nan"),
                      (dict(clip_norm=0.0), "expected clip_norm as a finite number > 0; got 0.0"),
                      (dict(seed=-1), "expected seed as an integer >= 0; got -1"),
                      (dict(held_out_examples=0), "expected held_out_examples as a positive integer; got 0")]:
        with pytest.raises(InputError, match=re.escape(match)):
            fit_svi(m, torch.rand(10, 4), progress=False, **kw)
    with pytest.raises(InputError, match="device 'cuda' was asked for"):
        if torch.cuda.is_available():
            raise InputError("device 'cuda' was asked for (skipped: CUDA present)")
        fit_svi(m, torch.rand(10, 4), device="cuda", progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_fit_and_evaluate():
    ds = load_dataset("digits", binarize="static")
    m = VAE(ds.dim, 4, [32])
    fit_svi(m, ds.x_train, test=ds.x_test, epochs=2, device="cuda", progress=False)
    assert m.device.type == "cuda"
    assert math.isfinite(evaluate_model(m, ds.x_test, iwae_k=10).log_likelihood)


def test_progress_bar_redraws_at_its_interval_and_ends_on_the_last_epoch(capsys):
    import time

    torch.manual_seed(0)
    t0 = time.perf_counter()
    fit_svi(VAE(4, 2, [8]), torch.rand(40, 4), epochs=30, batch_size=20, progress=True)
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    redraws = err.count("\r")
    assert redraws <= seconds / 0.5 + 4, (redraws, seconds)  # not one per epoch (30)
    assert "60/60" in err.splitlines()[-1] and "epoch 30/30 elbo" in err.splitlines()[-1]


def test_fit_svi_takes_numpy_rows_and_refuses_other_containers_in_one_line():
    torch.manual_seed(0)
    x = np.random.default_rng(0).random((40, 4))  # float64 NumPy: cast to the model's float32, as a tensor would be
    fit = fit_svi(VAE(4, 2, [8]), x, epochs=1, batch_size=20, progress=False)
    assert math.isfinite(fit.history[-1]["train_elbo"])
    for bad, got in [(5, "got int"), ("abc", "got str"), ([[0.1] * 4] * 10, "got list")]:
        with pytest.raises(InputError, match="expected training data as a tensor .* or a tuple of them; " + got):
            fit_svi(VAE(4, 2, [8]), bad, epochs=1, progress=False)


def test_vae_refuses_a_wrong_width_in_one_line():
    """Before: torch's 'mat1 and mat2 shapes cannot be multiplied' from inside the encoder."""
    from ppl_dgm.inference.diagnostics import elbo_terms

    vae = VAE(4, 2, [8])
    for call, match in [(lambda: vae.encode(torch.rand(5, 3)), r"expected x of shape \(N, 4\); got shape \(5, 3\)"),
                        (lambda: elbo_terms(vae.model, vae.guide, torch.rand(5, 3)), r"expected x of shape \(N, 4\)"),
                        (lambda: vae.decode_mean(torch.rand(5, 3)), r"expected z of shape \(N, 2\)"),
                        (lambda: vae.sample(-1), "expected n as an integer >= 0; got -1")]:
        with pytest.raises(InputError, match=match):
            call()
