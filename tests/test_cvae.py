"""CVAE, AE and the likelihoods: contracts, closed forms, and the CLI (`fit cvae|ae`, `sample --label`)."""

import json
import math

import pyro
import pyro.poutine as poutine
import pytest
import torch

from ppl_dgm.errors import InputError
from ppl_dgm.inference import elbo_terms, fit_svi
from ppl_dgm.models import AE, CVAE, REGISTRY, VAE

from .conftest import run_cli as run


def test_families_registered():
    assert REGISTRY["cvae"].model is CVAE and REGISTRY["ae"].model is AE and REGISTRY["cvae"].conditional


def test_cvae_sites_shapes_and_labels_reach_both_networks(digits):
    m = CVAE(digits.dim, n_classes=10, latent_dim=3, hidden=[16])
    x, y = digits.x_train[:7], digits.y_train[:7]
    g = poutine.trace(m.guide).get_trace(x, y)
    tr = poutine.trace(poutine.replay(m.model, trace=g)).get_trace(x, y)
    assert g.nodes["z"]["value"].shape == (7, 3) and tr.nodes["x"]["fn"].event_shape == (64,)
    # changing only y changes q(z | x, y) and p(x | z, y)
    loc1, _ = m.encode(x, y)
    loc2, _ = m.encode(x, (y + 1) % 10)
    assert not torch.allclose(loc1, loc2)
    z = torch.zeros(7, 3)
    assert not torch.allclose(m.decode_mean(z, y), m.decode_mean(z, (y + 1) % 10))
    with pytest.raises(InputError, match="needs labels"):
        m.model(x)
    with pytest.raises(InputError, match=r"labels in 0..9"):
        m.encode(x, torch.full((7,), 12))
    assert m.sample(5, y=3).shape == (5, 64)
    rebuilt = CVAE.from_config(m.config)
    assert rebuilt.config == m.config


def test_cvae_fit_class_fidelity_beats_chance(digits):
    from sklearn.linear_model import LogisticRegression

    torch.manual_seed(0)
    m = CVAE(digits.dim, n_classes=10, latent_dim=4, hidden=[128])
    fit_svi(m, (digits.x_train, digits.y_train), epochs=40, batch_size=128, lr=3e-3, progress=False, seed=0)
    clf = LogisticRegression(max_iter=500).fit(digits.x_train.numpy(), digits.y_train.numpy())
    torch.manual_seed(1)
    labels = torch.arange(10).repeat_interleave(20)
    acc = (clf.predict(m.sample(200, y=labels, mean=True).numpy()) == labels.numpy()).mean()
    assert acc > 0.6, acc  # chance is 0.1


def test_ae_guide_is_a_point_mass(digits):
    m = AE(digits.dim, latent_dim=3, hidden=[16])
    x = digits.x_train[:5]
    g = poutine.trace(m.guide).get_trace(x)
    assert torch.equal(g.nodes["z"]["value"], m.encode(x)[0])
    assert float(g.nodes["z"]["fn"].log_prob(g.nodes["z"]["value"]).abs().sum()) == 0.0
    # its "ELBO" is log p(x | g_mu(x)) + log p(g_mu(x)): deterministic, no entropy term
    t1 = elbo_terms(m.model, m.guide, x)
    t2 = elbo_terms(m.model, m.guide, x)
    z = m.encode(x)[0]
    expected = float((m.likelihood_dist(z).log_prob(x).mean() + m.prior(5, x).log_prob(z).mean()).detach())
    assert t1.elbo == pytest.approx(t2.elbo) == pytest.approx(expected, rel=1e-5)


def test_likelihood_closed_forms():
    torch.manual_seed(0)
    x = torch.rand(4, 6)
    z = torch.randn(4, 2)
    cb = VAE(6, latent_dim=2, hidden=[8], likelihood="continuous-bernoulli")
    out = cb.decoder(z)
    lam = torch.sigmoid(out)
    # CB(x | lam) = C(lam) lam^x (1-lam)^(1-x), C(lam) = 2 artanh(1 - 2 lam) / (1 - 2 lam)
    log_c = torch.log(2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam))
    expected = (log_c + x * lam.log() + (1 - x) * (1 - lam).log()).sum(-1)
    assert torch.allclose(cb.likelihood_dist(z).log_prob(x), expected, atol=1e-4)
    assert ((cb.decode_mean(z) > 0) & (cb.decode_mean(z) < 1)).all()

    g = VAE(6, latent_dim=2, hidden=[8], likelihood="gaussian-learned", x_scale=0.5)
    assert g.x_log_scale.shape == (6,) and torch.allclose(g.x_log_scale, torch.full((6,), math.log(0.5)))
    with torch.no_grad():
        g.x_log_scale[0] = 0.0
    mu = g.decoder(z)
    sd = torch.full((6,), 0.5)
    sd[0] = 1.0
    expected = (-0.5 * ((x - mu) / sd) ** 2 - sd.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(g.likelihood_dist(z).log_prob(x), expected, atol=1e-5)
    with pytest.raises(InputError, match="likelihood must be one of"):
        VAE(6, likelihood="poisson")


def test_learned_scale_is_trained(digits):
    torch.manual_seed(0)
    m = VAE(digits.dim, latent_dim=4, hidden=[32], likelihood="gaussian-learned", x_scale=1.0)
    before = m.x_log_scale.detach().clone()
    fit_svi(m, digits.x_train, epochs=5, batch_size=128, lr=1e-2, progress=False)
    assert float((m.x_log_scale.detach() - before).abs().max()) > 0.05
    assert float(m.x_log_scale.mean()) < float(before.mean())  # data sd ~0.3 < 1: the scale shrinks


# -- CLI -------------------------------------------------------------------------------------------------
def test_cli_fit_cvae_sample_label_and_resume(tmp_path, capsys):
    out = tmp_path / "cvae"
    code, _, err = run(["fit", "cvae", "--out", out, "--epochs", "2", "--hidden", "32", "--latent-dim", "3",
                        "--quiet", "--objective", "iwae", "--particles", "3", "--beta", "2"], capsys)
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["family"] == "cvae" and cfg["model"]["n_classes"] == 10
    assert {k: cfg["train"][k] for k in ("objective", "particles", "beta")} == {"objective": "iwae", "particles": 3,
                                                                              "beta": 2.0}
    code, outp, err = run(["sample", out, "--label", 3, "-n", 8, "--out", tmp_path / "s.npy"], capsys)
    assert code == 0, err
    code, _, err = run(["fit", "cvae", "--out", out, "--epochs", "3", "--resume", "--quiet"], capsys)
    assert code == 0, err
    assert len(json.loads((out / "history.json").read_text())) == 3
    assert json.loads((out / "config.json").read_text())["train"]["objective"] == "iwae"
    code, _, err = run(["sample", out, "--label", 12, "--out", tmp_path / "t.png"], capsys)
    assert code == 2 and "labels in 0..9" in err


@pytest.mark.parametrize("args, message", [
    (["fit", "vae", "--objective", "iwae", "--free-bits", "1"], "free bits applies"),
    (["fit", "vae", "--objective", "renyi"], "renyi"),
    (["fit", "vae", "--beta", "-1"], "beta"),
    (["fit", "cvae", "--dataset", "moons", "--likelihood", "gaussian"], "labelled data"),
])
def test_cli_bad_objective_and_data_one_line(tmp_path, capsys, args, message):
    code, _, err = run(args + ["--out", tmp_path / "r", "--epochs", "1", "--quiet"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_cli_fit_ae_and_likelihoods(tmp_path, capsys):
    for fam, extra in (("ae", ["--objective", "elbo"]),
                       ("vae", ["--likelihood", "continuous-bernoulli", "--warmup-epochs", "2", "--free-bits", "0.2"]),
                       ("vae", ["--likelihood", "gaussian-learned"])):
        out = tmp_path / f"{fam}{len(extra)}"
        code, _, err = run(["fit", fam, "--out", out, "--epochs", "2", "--hidden", "16", "--latent-dim", "2",
                            "--quiet", *extra], capsys)
        assert code == 0, err
        assert (out / "samples.png").exists()
    code, _, err = run(["sample", tmp_path / "ae2", "--label", 1, "--out", tmp_path / "x.png"], capsys)
    assert code == 2 and "needs a conditional family (cvae, ddpm); got 'ae'" in err
    pyro.clear_param_store()
