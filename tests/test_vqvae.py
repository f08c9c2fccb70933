"""VQ-VAE (issue 13 items 3, 4, 6; course notes 001 "K-means + VAE"): the straight-through estimator and its
losses, EMA codebook updates, usage and restarts, the ELBO with a point-mass guide, the CLI, and the code maps a
PixelCNN prior is fitted on (``--codes-of``)."""

import json
import math

import numpy as np
import pytest
import torch

from ppl_dgm.errors import InputError
from ppl_dgm.inference import AnalyticELBO, MonteCarloELBO, elbo_terms, fit_svi
from ppl_dgm.models import REGISTRY
from ppl_dgm.models.vqvae import VQVAE, UniformCodes
from ppl_dgm.nn import VectorQuantizer, usage_of
from ppl_dgm.runs import DataSpec, load_run
from ppl_dgm.runs.store import encoded_dataset

from .conftest import run_cli

P, K, D_CODE = 4, 5, 3  # a 2x2 code map of K = 5 codes in R^3


def tiny(ema=False, beta=0.25):
    torch.manual_seed(0)
    m = VQVAE(16, n_codes=K, code_dim=D_CODE, code_shape=(2, 2), hidden=(8,), beta=beta, ema=ema)
    m.quantizer.initialized.fill_(True)  # the test sets the codes; no Forgy start
    return m


def data(n=6):
    return torch.rand(n, 16, generator=torch.Generator().manual_seed(1)).bernoulli()


def grads(module):
    return {n: None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()}


def zero_or_none(g):
    return g is None or not g.abs().max() > 0


# ---------------------------------------------------------------- the straight-through estimator and the losses

def test_reconstruction_gradient_reaches_the_encoder_only_straight_through():
    m, x = tiny(), data()
    z_e = m.encode(x)
    z_e.retain_grad()
    q = m.quantizer(z_e)
    (-m.likelihood_dist(q.z_st.reshape(len(x), -1)).log_prob(x).sum()).backward()
    assert zero_or_none(m.quantizer.codebook.grad)                     # the codebook gets nothing from it
    z_q = q.z_q.detach().reshape(len(x), -1).requires_grad_()          # the decoder's input as a leaf
    (-m.likelihood_dist(z_q).log_prob(x).sum()).backward()
    torch.testing.assert_close(z_e.grad.reshape(len(x), -1), z_q.grad)  # d loss / d z_e = d loss / d z_q
    assert z_q.grad.abs().max() > 0
    torch.testing.assert_close(q.z_st, q.z_q)                          # the value is the code


def test_codebook_gradient_comes_only_from_the_codebook_loss():
    m, x = tiny(), data()
    m.train()
    loss = AnalyticELBO()(m.model, m.guide, x)                         # what fit_svi differentiates
    loss.backward()
    full = m.quantizer.codebook.grad.clone()
    m.zero_grad()
    q = m.quantizer(m.encode(x))
    q.codebook_loss.sum().backward()
    torch.testing.assert_close(full, m.quantizer.codebook.grad)
    assert full.abs().max() > 0


def test_commitment_loss_gives_gradient_only_to_the_encoder():
    m, x = tiny(), data()
    q = m.quantizer(m.encode(x))
    q.commitment_loss.sum().backward()
    g = grads(m)
    assert zero_or_none(g["quantizer.codebook"]) and all(zero_or_none(v) for k, v in g.items() if "decoder" in k)
    assert all(v is not None and v.abs().max() > 0 for k, v in g.items() if k.startswith("encoder") and "weight" in k)


def test_training_loss_is_minus_elbo_plus_the_two_factor_sites():
    """-ELBO = -log p(x | z_q) + P log K, plus sum ||sg z_e - e||^2 + beta sum ||z_e - sg e||^2 in training."""
    m, x = tiny(beta=0.5), data()
    with torch.no_grad():
        q = m.quantizer(m.encode(x))
        rec = m.code_log_likelihood(x, q.codes).sum()
        extra = q.codebook_loss.sum() + 0.5 * q.commitment_loss.sum()
    m.eval()
    assert AnalyticELBO().loss(m.model, m.guide, x) == pytest.approx(float(-rec + len(x) * P * math.log(K)),
                                                                       rel=1e-6)
    m.train()
    want = float(-rec + len(x) * P * math.log(K) + extra)
    for objective in (AnalyticELBO(), MonteCarloELBO()):  # ours, and Pyro's Trace_ELBO (factor sites of the guide)
        assert float(objective(m.model, m.guide, x).detach()) == pytest.approx(want, rel=1e-6)


def test_elbo_terms_kl_is_h_w_log_k_and_iwae_equals_elbo():
    from ppl_dgm.evaluation import evaluate_model

    m, x = tiny(), data()
    m.eval()
    t = elbo_terms(m.model, m.guide, x)
    assert t.kl == pytest.approx(P * math.log(K), rel=1e-6)
    rec = m.code_log_likelihood(x, m.encode_codes(x)).detach()
    assert t.reconstruction == pytest.approx(float(rec.mean()), rel=1e-6)
    ev = evaluate_model(m, x, iwae_k=7, elbo_particles=2)
    assert ev.log_likelihood == pytest.approx(ev.elbo, rel=1e-6)


def test_uniform_codes_prior():
    e = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, -1.0]])
    p = UniformCodes(e, 2, (4,))
    z = p.sample()
    assert z.shape == (4, 4) and all(any(torch.equal(v, c) for c in e) for v in z.reshape(-1, 2))
    torch.testing.assert_close(p.log_prob(z), torch.full((4,), -2 * math.log(3)))
    off = z.clone()
    off[0, 0] += 0.5
    assert torch.isinf(p.log_prob(off)[0]) and torch.isfinite(p.log_prob(off)[1:]).all()


# ---------------------------------------------------------------- EMA, usage, restarts

def test_ema_update_matches_the_hand_computed_one():
    vq = VectorQuantizer(3, 2, ema_decay=0.5)
    e = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    vq.codebook.copy_(e)
    vq.ema_sum.copy_(e)
    vq.ema_count.fill_(1.0)
    z_e = torch.tensor([[0.1, 0.0], [0.9, 0.1], [1.1, -0.1], [-0.2, 0.2]])
    codes = vq.assign(z_e)
    assert codes.tolist() == [0, 1, 1, 0]
    vq.update(z_e, codes)
    # N = 0.5 * 1 + 0.5 * (2, 2, 0); m = 0.5 e + 0.5 * (sums (-0.1, 0.2), (2.0, 0.0), (0, 0)); e = m / N
    torch.testing.assert_close(vq.ema_count, torch.tensor([1.5, 1.5, 0.5]))
    torch.testing.assert_close(vq.ema_sum, torch.tensor([[-0.05, 0.1], [1.5, 0.0], [2.5, 2.5]]))
    torch.testing.assert_close(vq.codebook, torch.tensor([[-1 / 30, 1 / 15], [1.0, 0.0], [5.0, 5.0]]))
    assert vq.counts.tolist() == [2, 2, 0]


def test_ema_training_step_has_no_codebook_loss_and_moves_the_codes():
    m, x = tiny(ema=True), data()
    m.train()
    before = m.quantizer.codebook.clone()
    with torch.no_grad():
        q = m.quantizer(m.encode(x))
        rec_free = AnalyticELBO().loss(m.model, m.guide, x)  # grad off: no side effects, no factors
    assert torch.equal(m.quantizer.codebook, before)
    loss = AnalyticELBO()(m.model, m.guide, x)                  # a training step: EMA moves the used codes
    assert not torch.equal(m.quantizer.codebook, before)
    assert "codebook" not in dict(m.named_parameters())
    # the codes were moved before z_q was read, so the loss is -ELBO at the new codes plus the commitment
    with torch.no_grad():
        new = m.quantizer(m.encode(x), q.codes)
        want = -float(m.code_log_likelihood(x, q.codes).sum()) + len(x) * P * math.log(K) \
            + 0.25 * float(new.commitment_loss.sum())
    assert float(loss.detach()) == pytest.approx(want, rel=1e-6) and rec_free != pytest.approx(want)


def test_perplexity_and_dead_codes_of_a_constructed_assignment():
    u = usage_of(torch.tensor([2, 2, 0, 0]))
    assert u.perplexity == pytest.approx(2.0) and u.dead == 2
    assert usage_of(torch.tensor([3, 3, 3, 3])).perplexity == pytest.approx(4.0)
    p = torch.tensor([6, 3, 1, 0]) / 10
    assert usage_of(torch.tensor([6, 3, 1, 0])).perplexity == pytest.approx(math.exp(-(p[:3] * p[:3].log()).sum()))
    assert usage_of(torch.zeros(3)).dead == 3


def test_dead_code_restart_and_end_epoch():
    m, x = tiny(), data()
    m.train()
    e0 = torch.arange(K * D_CODE, dtype=torch.float32).reshape(K, D_CODE) * 10  # far apart: z_e picks one or two
    m.quantizer.codebook.data.copy_(e0)
    loss = AnalyticELBO()(m.model, m.guide, x)                                  # counts this minibatch
    counts = m.quantizer.counts.clone()
    used = counts > 0
    assert 0 < int(used.sum()) < K and int(counts.sum()) == len(x) * P and torch.isfinite(loss)
    torch.manual_seed(3)
    out = m.end_epoch()
    assert out["dead_codes"] == out["restarted_codes"] == int((~used).sum())
    assert out["codebook_perplexity"] == pytest.approx(usage_of(counts).perplexity)
    cb = m.quantizer.codebook.detach()
    torch.testing.assert_close(cb[used], e0[used])                       # the used codes stay
    cand = m.encode(x).detach().reshape(-1, D_CODE)
    for row in cb[~used]:                                                # the dead ones sit on encoder outputs
        assert (cand - row).abs().sum(1).min() < 1e-6
    assert int(m.quantizer.counts.sum()) == 0                            # counted afresh next epoch


def test_restart_resets_ema_statistics():
    vq = VectorQuantizer(4, 2, ema_decay=0.9)
    vq.ema_count.copy_(torch.tensor([3.0, 0.01, 2.0, 0.01]))
    cand = torch.tensor([[7.0, 7.0], [8.0, 8.0], [9.0, 9.0]])
    torch.manual_seed(0)
    assert vq.restart(torch.tensor([False, True, False, True]), cand) == 2
    rows = vq.codebook[[1, 3]]
    assert all(any(torch.equal(r, c) for c in cand) for r in rows) and not torch.equal(rows[0], rows[1])
    torch.testing.assert_close(vq.ema_count, torch.tensor([3.0, 1.0, 2.0, 1.0]))
    torch.testing.assert_close(vq.ema_sum[[1, 3]], rows)


# ---------------------------------------------------------------- the model's shapes and tools

def test_codes_and_decoding():
    m, x = tiny(), data()
    codes = m.encode_codes(x)
    assert codes.shape == (len(x), 2, 2) and codes.dtype == torch.long
    z_e = m.encode_mean(x)
    assert z_e.shape == (len(x), P * D_CODE)
    torch.testing.assert_close(m.decode_mean(z_e + 1e-4), m.decode_codes(codes))  # decode_mean quantizes first
    torch.testing.assert_close(m.reconstruct(x), m.decode_codes(codes.reshape(len(x), -1).float()))
    with pytest.raises(InputError, match="code indices in 0..4"):
        m.decode_codes(torch.full((1, 2, 2), K))
    assert m.sample(3).shape == (3, 16) and m.sample(3, mean=True).shape == (3, 16)


def test_conv_arch_maps_28x28_to_a_7x7_code_map():
    m = VQVAE(784, n_codes=4, code_dim=2, code_shape=(7, 7), arch="conv", channels=2)
    x = torch.rand(3, 784)
    assert m.encode_codes(x).shape == (3, 7, 7) and m.decode_codes(m.encode_codes(x)).shape == (3, 784)
    with pytest.raises(InputError, match="7x7 code map"):
        VQVAE(784, code_shape=(4, 4), arch="conv")


def test_fit_with_ema_and_restarts_is_deterministic_and_resumes_exactly(tmp_path, digits):
    def fit(epochs, out, resume=False):
        torch.manual_seed(0)
        m = VQVAE(digits.dim, n_codes=16, code_dim=4, hidden=(32,), ema=True)
        r = fit_svi(m, digits.x_train[:400], test=digits.x_test[:100], epochs=epochs, batch_size=64, progress=False,
                    out_dir=out, resume=resume, seed=5)
        return m, r.history

    a, ha = fit(3, tmp_path / "a")
    b, _ = fit(3, tmp_path / "b")
    fit(1, tmp_path / "c")
    c, hc = fit(3, tmp_path / "c", resume=True)
    for other in (b, c):
        for (n, t), (_, u) in zip(a.state_dict().items(), other.state_dict().items()):
            assert torch.equal(t, u), n
    assert [h["codebook_perplexity"] for h in ha] == [h["codebook_perplexity"] for h in hc]
    assert {"codebook_perplexity", "dead_codes", "restarted_codes"} <= set(ha[0])
    assert json.loads((tmp_path / "a" / "history.json").read_text())[-1]["dead_codes"] == ha[-1]["dead_codes"]


# ---------------------------------------------------------------- the CLI and the code maps of a prior

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from ppl_dgm.cli import main

    root = tmp_path_factory.mktemp("vqvae")
    fits = [["fit", "vqvae", "--epochs", "3", "--hidden", "32", "--n-codes", "16", "--code-dim", "4", "--out",
             root / "vq"],
            ["fit", "vae", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--out", root / "vae"]]
    if "pixelcnn" in REGISTRY:
        fits.append(["fit", "pixelcnn", "--codes-of", root / "vq", "--epochs", "2", "--channels", "8", "--layers", "1",
                     "--out", root / "prior"])
    for args in fits:
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in [*args, "--quiet"]])
        assert info.value.code == 0, args
    return root


def test_cli_fit_evaluate_sample_latent_diagnose(runs, tmp_path, capsys):
    code, out, err = run_cli(["evaluate", runs / "vq", "--json"], capsys)
    res = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and res["iwae_k"] == 1 and res["log_likelihood"] == pytest.approx(res["elbo"], rel=1e-6), err
    assert res["kl"] == pytest.approx(4 * math.log(16))
    assert res["elbo"] == pytest.approx(res["reconstruction"] - res["kl"])
    code, out, _ = run_cli(["evaluate", runs / "vq"], capsys)
    assert code == 0 and "k=1 " in out
    history = load_run(runs / "vq").history
    assert len(history) == 3 and all(0 < h["codebook_perplexity"] <= 16 and 0 <= h["dead_codes"] <= 16
                                     for h in history)
    code, _, err = run_cli(["sample", runs / "vq", "-n", "5", "--out", tmp_path / "s.npy"], capsys)
    assert code == 0 and np.load(tmp_path / "s.npy").shape == (5, 8, 8), err
    code, _, err = run_cli(["latent", runs / "vq", "reconstruct", "--out", tmp_path / "r.png"], capsys)
    assert code == 0 and (tmp_path / "r.png").is_file(), err
    code, out, err = run_cli(["diagnose", runs / "vq", "--iwae-k", "3", "--max-examples", "40"], capsys)
    assert code == 0 and f"KL {4 * math.log(16):.3f}" in out and "ELBO-IWAE gap (k=3): 0.000" in out, err
    assert "quantizer nan" in out  # the ELBO gives the codebook no gradient: no SNR
    assert {p.name for p in (runs / "vq").glob("*.png")} >= {"elbo.png", "samples.png", "reconstructions.png"}


def test_code_maps_are_the_vqvae_runs_data(runs):
    vq = load_run(runs / "vq")
    ds = encoded_dataset(vq, codes=True)
    own = vq.dataset()
    assert ds.shape == (2, 2) and ds.kind == "image" and ds.levels == 16 and ds.x_train.dtype == torch.float32
    torch.testing.assert_close(ds.x_test, vq.model.encode_codes(own.x_test).flatten(1).float())
    assert torch.equal(ds.y_test, own.y_test) and len(ds.x_train) == len(own.x_train)
    assert set(ds.x_train.unique().tolist()) <= set(range(16))
    torch.testing.assert_close(DataSpec(codes_of=str(runs / "vq")).load().x_test, ds.x_test)
    with pytest.raises(InputError, match="--codes-of: expected a vqvae run"):
        encoded_dataset(load_run(runs / "vae"), codes=True)


@pytest.mark.skipif("pixelcnn" not in REGISTRY, reason="the pixelcnn family is not registered yet")
def test_pixelcnn_prior_over_codes_samples_images_and_bounds_log_p(runs, tmp_path, capsys):
    prior = load_run(runs / "prior")
    assert prior.shape == (2, 2) and prior.sample_shape == (8, 8) and prior.decoder.path.name == "vq"
    code, _, err = run_cli(["sample", runs / "prior", "-n", "6", "--out", tmp_path / "s.npy"], capsys)
    x = np.load(tmp_path / "s.npy")
    assert code == 0 and x.shape == (6, 8, 8) and 0 <= x.min() and x.max() <= 1, err
    torch.manual_seed(0)
    codes = prior.model.sample(6)
    torch.manual_seed(0)
    torch.testing.assert_close(prior.decode(prior.model.sample(6)), prior.decoder.model.decode_codes(codes.long()))
    code, out, err = run_cli(["evaluate", runs / "prior", "--json"], capsys)
    two = json.loads(out.strip().splitlines()[-1])["two_stage"]
    _, vq_out, _ = run_cli(["evaluate", runs / "vq", "--json"], capsys)
    vq = json.loads(vq_out.strip().splitlines()[-1])
    assert code == 0 and two["reconstruction"] == pytest.approx(vq["reconstruction"], rel=1e-6), err
    assert two["uniform_prior_elbo"] == pytest.approx(vq["elbo"], rel=1e-6)
    assert two["elbo"] == pytest.approx(two["reconstruction"] + two["log_prior"], rel=1e-9)
    code, out, _ = run_cli(["evaluate", runs / "prior"], capsys)
    assert code == 0 and "images: log p(x) >=" in out
    code, _, err = run_cli(["fit", "pixelcnn", "--codes-of", runs / "vq", "--dataset", "digits", "--out",
                            tmp_path / "x"], capsys)
    assert code == 2 and "--codes-of takes the VQ-VAE run's own data" in err
    code, _, err = run_cli(["evaluate", runs / "prior", "--dataset", "digits"], capsys)
    assert code == 2 and "scores its encoder run's own held-out data" in err
