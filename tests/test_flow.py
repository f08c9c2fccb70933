"""The flow family: layers against autograd, the Gaussian's exact likelihood, the dequantization bound, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from ppl_dgm.errors import InputError
from ppl_dgm.inference import fit_svi
from ppl_dgm.models.flow import Dequantized, Flow, FlowConfig, grid_index, grid_levels
from ppl_dgm.nn.flows import ConditionalFlowStack, autoregressive_flow, coupling_flow
from ppl_dgm.runs import train_run
from ppl_dgm.runs.store import DataSpec

from .conftest import run_cli as run

LN2 = math.log(2.0)


def _jacobian_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det d fn(x_n) / d x_n| row by row by autograd, shape (N,)."""
    return torch.stack([torch.linalg.slogdet(jacobian(lambda v: fn(v[None])[0], row))[1] for row in x])


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)  # the conftest restores float32 after the test


LAYERS = [("coupling", "realnvp"), ("coupling", "spline"), ("autoregressive", "iaf"),
          ("autoregressive", "spline-ar")]


@pytest.mark.parametrize("builder, kind", LAYERS)
@pytest.mark.parametrize("dim", [4, 6])
def test_layer_log_det_is_autograds_and_inverse_inverts(builder, kind, dim, float64):
    torch.manual_seed(0)
    f = (coupling_flow(dim, 3, [16], kind, bound=3.0, identity_init=False) if builder == "coupling"
         else autoregressive_flow(dim, 3, [16], kind, bound=3.0))
    x = torch.randn(5, dim)
    y, log_det = f(x)
    assert log_det.shape == (5,)
    torch.testing.assert_close(log_det, _jacobian_logdet(lambda v: f(v)[0], x), rtol=1e-9, atol=1e-9)
    assert log_det.abs().max() > 1e-2  # the layers are not the identity
    torch.testing.assert_close(f.inverse(y.clone()), x, rtol=1e-9, atol=1e-9)  # clone: no cached inverse


def test_identity_init_and_each_layer_alone_matches_autograd(float64):
    """Couplings start as the identity (a fresh flow model is N(0, I) up to a permutation); every transform of a
    stack (couplings and permutations) one at a time, through Pyro's own log_abs_det_jacobian."""
    torch.manual_seed(1)
    for kind in ("realnvp", "spline"):
        f, x = coupling_flow(6, 1, [8], kind), torch.randn(4, 6)
        y, log_det = f(x)
        torch.testing.assert_close(y, x, rtol=0, atol=1e-3)
        torch.testing.assert_close(log_det, torch.zeros(4), rtol=0, atol=1e-3)
    for kind in ("realnvp", "spline"):
        for t in coupling_flow(6, 2, [8], kind, identity_init=False).transforms:
            x = torch.randn(4, 6)
            lad = t.log_abs_det_jacobian(x, t(x))
            torch.testing.assert_close(lad.expand(4), _jacobian_logdet(t, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dim", [2, 5, 10, 64])
def test_every_coordinate_is_transformed_in_each_pair_of_layers(dim):
    """A coupling keeps x_a = the first D // 2 coordinates; the permutations must move every coordinate into the
    transformed half x_b in layer 2j or 2j + 1 (the reversal between them swaps the halves).  With random
    permutations alone about 2^-8 of the coordinates escape all 8 layers (their samples are the base's: we saw
    such pixels lit in half the Fashion-MNIST samples)."""
    f = coupling_flow(dim, 8, [4])
    where = torch.arange(dim)  # position of each original coordinate in the current layer's input
    transformed = []
    for i in range(8):
        transformed.append(where >= dim // 2)
        if i < 7:
            perm = getattr(f, f"perm_{i}")  # new position j holds old position perm[j]
            where = torch.argsort(perm)[where]
    for i in range(0, 8, 2):
        assert (transformed[i] | transformed[i + 1]).all(), i


def test_conditional_couplings_match_autograd(float64):
    torch.manual_seed(2)
    stack, c = ConditionalFlowStack(4, 3, 3, [16]), torch.randn(5, 3)
    with torch.no_grad():  # away from the identity the couplings start at
        for w in stack.parameters():
            w.add_(0.3 * torch.randn_like(w))

    def f(v, context):
        ld = v.new_zeros(v.shape[0])
        for t in stack.condition(context):
            w = t(v)
            ld, v = ld + t.log_abs_det_jacobian(v, w), w
        return v, ld

    x = torch.randn(5, 4)
    y, ld = f(x, c)
    auto = torch.stack([torch.linalg.slogdet(jacobian(lambda v, ci=ci: f(v[None], ci[None])[0][0], xi))[1]
                        for xi, ci in zip(x, c)])
    torch.testing.assert_close(ld, auto, rtol=1e-9, atol=1e-9)
    assert ld.abs().min() > 1e-2


@pytest.mark.parametrize("dequantization", ["none", "uniform"])
def test_density_chain_log_prob_is_the_change_of_variables(dequantization, float64):
    """p(y) of the model (flow + standardization or logit map) equals N(0, I) at f^-1(y) times autograd's
    |det| of the whole map base -> data."""
    torch.manual_seed(3)
    levels = 5 if dequantization == "uniform" else None
    m = Flow(4, "spline", 2, [8], dequantization=dequantization, levels=levels, data_loc=[1.0, -1.0, 0.0, 2.0],
             data_scale=[0.5, 2.0, 1.0, 3.0]).double()
    with torch.no_grad():  # away from the identity the layers start at
        for w in m.flow.parameters():
            w.add_(0.3 * torch.randn_like(w))
    p = m.density()
    z = torch.randn(6, 4)

    def to_data(v):
        for t in p.transforms:
            v = t(v)
        return v

    y = to_data(z)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) - _jacobian_logdet(to_data, z)
    torch.testing.assert_close(p.log_prob(y.clone()), expected, rtol=1e-7, atol=1e-7)


def _gaussian(d: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = a @ a.T + 0.3 * torch.eye(d, dtype=torch.float64)
    mean = torch.linspace(-2.0, 3.0, d, dtype=torch.float64)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(mean, cov), mean + z @ torch.linalg.cholesky(cov).T


def test_flow_reaches_the_gaussians_exact_log_likelihood(tmp_path):
    """Data from N(mu, Sigma), full covariance, D = 3: train_run's flow scores 2,000 held-out rows as the true
    density does.  The paired difference mean_n [log p_true(x_n) - log p_flow(x_n)] estimates
    KL(p_true || p_flow) >= 0 (its noise is small: both densities move together); a Gaussian fitted by maximum
    likelihood is p / (2 n) ~ 0.001 nats off at n = 4,000 (p = 9), and the flow (4 couplings of ReLU MLPs,
    20 epochs, cosine learning rate) was measured 0.004 off.  The tolerance, 0.02 nats on a log-likelihood of
    -5.3, refuses a diagonal-covariance fit (0.9 nats off) and any error in a log-determinant."""
    mvn, x = _gaussian(3, 6000, seed=0)
    x_train, x_test = x[:4000], x[4000:]
    np.savez(tmp_path / "g.npz", x=x_train.float().numpy(), x_test=x_test.float().numpy())
    opts = FlowConfig(epochs=20, layers=4, hidden=(32, 32), batch_size=256, lr=3e-3, lr_schedule="cosine")
    run_ = train_run("flow", opts, DataSpec(path=str(tmp_path / "g.npz")), out=tmp_path / "run", progress=False,
                     echo=lambda s: None)
    true_ll = float(mvn.log_prob(x_test).mean())
    flow_ll = float(run_.model.log_prob(x_test.float()).double().mean())
    diag = torch.distributions.Normal(x_train.mean(0), x_train.std(0))
    diag_ll = float(diag.log_prob(x_test).sum(-1).mean())
    assert abs(true_ll + float(mvn.entropy())) < 0.1  # the held-out rows are typical (SE ~ 0.03)
    assert true_ll - diag_ll > 0.5  # the covariance matters: a diagonal fit cannot pass
    assert -0.01 < true_ll - flow_ll < 0.02, (true_ll, flow_ll)


# ------------------------------------------------------------------------------------ dequantization

def test_grid_levels_and_refusal():
    assert grid_levels(torch.arange(17.0) / 16) == 17
    assert grid_levels(torch.tensor([0.0, 1.0])) == 2
    assert grid_levels(torch.arange(256.0) / 255) == 256
    assert grid_levels(torch.tensor([0.0, 0.3333, 1.0])) is None
    assert grid_levels(torch.tensor([0.0, 2.0])) is None
    with pytest.raises(InputError, match=r"expected 17 levels k \* 0.0625, k = 0..16 .*got 0.03 at index \(1,\)"):
        grid_index(torch.tensor([0.0, 0.03]), 17, 1 / 16)


@pytest.mark.parametrize("dim, levels", [(2, 3), (4, 17)])
def test_dequantized_likelihood_of_a_fresh_flow_in_closed_form(dim, levels, float64):
    """A fresh flow is the identity (up to a permutation), so p(y) = prod_d N(h(y_d)) h'(y_d) with h = g^-1 the
    logit map, h(y) = logit(a + (1 - 2a) y) / c, and the mass of the cell of k is a product of normal
    probabilities, P(k) = prod_d [Phi(h(b_d)) - Phi(h(a_d))], [a_d, b_d) = [k_d, k_d + 1) / L.  Checked: the
    dequantized log p(x | u) = log p((k + u) / L) - D log L at given u, also next to the ends of [0, 1) where
    p spikes; log_prob with S = 4,000 importance draws (q uniform) converges to log P(k) on inner cells (there
    the weights are bounded; at the end cells they are heavy-tailed); one draw is below log P(k) on average
    (Jensen; checked on the end cells, where the gap is wide); and all L^D cells hold
    (Phi(h(1)) - Phi(h(0)))^D <= 1 of the mass."""
    from ppl_dgm.models.flow import LOGIT_ALPHA as a
    from ppl_dgm.models.flow import LOGIT_SCALE as c

    torch.manual_seed(4)
    m = Flow(dim, "realnvp", 2, [8], dequantization="uniform", levels=levels).double()
    normal = torch.distributions.Normal(0.0, 1.0)

    def h(y):
        s = a + (1 - 2 * a) * y
        return torch.log(s / (1 - s)) / c, torch.log((1 - 2 * a) / (c * s * (1 - s)))  # h and log h'

    k = torch.randint(0, levels, (6, dim)).double()
    k[0], k[1] = 0, levels - 1
    u = torch.rand(6, dim)
    u[0], u[1] = 1e-5, 1 - 1e-5
    hy, log_dh = h((k + u) / levels)
    expected = (normal.log_prob(hy) + log_dh).sum(-1) - dim * math.log(levels)
    torch.testing.assert_close(Dequantized(m.density(), levels, 1 / (levels - 1), u).log_prob(k / (levels - 1)),
                               expected, rtol=1e-9, atol=1e-9)

    inner = torch.randint(1, levels - 1, (4, dim)).double()
    log_mass = (normal.cdf(h((inner + 1) / levels)[0]) - normal.cdf(h(inner / levels)[0])).log().sum(-1)
    x = inner / (levels - 1)
    torch.manual_seed(0)
    torch.testing.assert_close(m.log_prob(x, particles=4000), log_mass, rtol=0, atol=0.01)
    ends = k[:2]  # all-0 and all-top cells: p spikes at their edges, so Jensen's gap is wide
    ends_mass = (normal.cdf(h((ends + 1) / levels)[0]) - normal.cdf(h(ends / levels)[0])).log().sum(-1)
    one = m.log_prob((ends / (levels - 1)).repeat(1000, 1)).reshape(1000, 2).mean(0)
    assert (one < ends_mass - 0.1).all(), (one, ends_mass)
    total = (normal.cdf(h(torch.ones(1))[0]) - normal.cdf(h(torch.zeros(1))[0])) ** dim
    assert 0.99 < float(total) <= 1.0  # a fresh flow leaks 2 Phi(-logit(1e-6) / 4) = 6e-4 per dimension


def _categorical_pixels(n: int, seed: int):
    """Independent pixels on 4 levels with known probabilities; returns x (n, 3) in {0, 1/3, 2/3, 1} and the
    entropy in bits/dim."""
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.25, 0.15, 0.1], [0.05, 0.7, 0.2, 0.05]], dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    k = torch.stack([torch.multinomial(p, n, replacement=True, generator=g) for p in probs], 1)
    bits = -(probs * probs.log2()).sum() / 3
    log_p = probs.log().gather(1, k.T).T.sum(1)  # (n,) exact log P(x_n)
    return (k.float() / 3), float(bits), log_p


def test_dequantized_bits_per_dim_bound_the_discrete_entropy():
    """Three independent pixels on 4 levels with known probabilities: the reported bits/dim (3,000 held-out
    rows, one draw of u each) is >= the true entropy H minus its Monte Carlo error (3 standard errors of the
    rows' -log2 P(x) / D), and close to it once the flow fits: within 0.1 bits/dim, the price of modelling
    piecewise-constant cells with a smooth flow (spline couplings: measured 0.036 with uniform noise, 0.039
    with variational dequantization: at this budget the learned q(u | x) does not beat uniform noise)."""
    x, h_bits, _ = _categorical_pixels(3000, seed=0)
    x_test, _, log_p_test = _categorical_pixels(3000, seed=1)
    se = float((-log_p_test / (3 * LN2)).std()) / math.sqrt(len(x_test))
    bpd = {}
    for dequantization in ("uniform", "variational"):
        torch.manual_seed(0)
        m = Flow(3, "spline", 4, [32, 32], dequantization=dequantization, levels=4)
        fit_svi(m, x, epochs=15, batch_size=256, lr=3e-3, seed=0, progress=False)
        torch.manual_seed(0)
        bpd[dequantization] = -float(m.log_prob(x_test).double().mean()) / (3 * LN2)
        assert bpd[dequantization] >= h_bits - 3 * se, (dequantization, bpd, h_bits, se)
        assert bpd[dequantization] < h_bits + 0.1, (dequantization, bpd, h_bits)


def test_off_grid_data_are_refused_in_one_line():
    m = Flow(4, "realnvp", 1, [4], dequantization="uniform", levels=17)
    with pytest.raises(InputError, match="expected 17 levels"):
        m.log_prob(torch.full((2, 4), 0.3))
    with pytest.raises(InputError, match="expected levels in 2..256; got None"):
        Flow(4, dequantization="uniform")


def test_samples_sit_on_the_grid_and_n_parameters():
    torch.manual_seed(0)
    m = Flow(4, "realnvp", 2, [8], dequantization="uniform", levels=17)
    x = m.sample(50)
    assert x.shape == (50, 4) and grid_index(x, 17, 1 / 16) is not None
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert m.n_parameters == sum(p.numel() for p in m.flow.parameters()) > 0
    d = Dequantized(m.density(), 17, 1 / 16, torch.zeros(3, 4))
    assert d.batch_shape == (3,) and d.event_shape == (4,)


# ------------------------------------------------------------------------------------ the command

def test_cli_fit_evaluate_sample_on_moons_and_digits(tmp_path, capsys):
    tiny = ["--epochs", "1", "--layers", "2", "--hidden", "16", "--quiet"]
    for dataset, flow in (("moons", "realnvp"), ("digits", "spline")):
        out = tmp_path / dataset
        code, _, err = run(["fit", "flow", "--dataset", dataset, "--flow", flow, *tiny, "--out", out], capsys)
        assert code == 0, err
        cfg = json.loads((out / "config.json").read_text())["model"]
        code, text, err = run(["evaluate", out, "--json"], capsys)
        assert code == 0, err
        res = json.loads(text)
        d = 2 if dataset == "moons" else 64
        assert res["dim"] == d and math.isclose(res["bits_per_dim"], -res["log_likelihood"] / (d * LN2))
        code, _, err = run(["sample", out, "-n", "8", "--out", tmp_path / f"{dataset}.png"], capsys)
        assert code == 0, err
        code, _, err = run(["sample", out, "-n", "8", "--out", tmp_path / f"{dataset}.npy"], capsys)
        s = np.load(tmp_path / f"{dataset}.npy")
        if dataset == "digits":
            assert cfg["dequantization"] == "uniform" and cfg["levels"] == 17 and cfg["step"] == 1 / 16
            assert 0 <= res["bits_per_dim"] <= 2 * math.log2(17)  # a bound on 17-level data: far from 0
            np.testing.assert_allclose(s * 16, np.round(s * 16), atol=1e-5)
        else:
            assert cfg["dequantization"] == "none" and cfg["levels"] is None and s.shape == (8, 2)
        for cmd in (["diagnose", out], ["latent", out, "interpolate", "--out", tmp_path / "i.png"]):
            code, _, err = run(cmd, capsys)
            assert code == 2 and len(err.strip().splitlines()) == 1 and "got 'flow'" in err, err


def test_cli_dequantization_follows_the_data_and_refuses_in_one_line(tmp_path, capsys):
    """Data on a grid (here 4 grey levels) are dequantized by default and refused as continuous; data off any grid
    are modelled exactly by default and refused by a dequantization; either refusal is one line and writes
    nothing."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "cont.npy", rng.uniform(size=(20, 4, 4)).astype(np.float32))
    np.save(tmp_path / "grid.npy", (rng.integers(0, 4, size=(20, 4, 4)) / 3).astype(np.float32))
    tiny = ["--epochs", "1", "--layers", "1", "--hidden", "4", "--quiet"]
    for data, bad, default in (("cont", "uniform", "none"), ("grid", "none", "uniform")):
        code, _, err = run(["fit", "flow", "--data", tmp_path / f"{data}.npy", *tiny, "--dequantization", bad,
                            "--out", tmp_path / f"{data}-bad"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / f"{data}-bad").exists()
        assert ("expected grey levels in [0, 1] on a grid" if data == "cont" else "takes 4 levels") in err, err
        code, _, err = run(["fit", "flow", "--data", tmp_path / f"{data}.npy", *tiny, "--out", tmp_path / data],
                           capsys)
        assert code == 0, err
        assert json.loads((tmp_path / data / "config.json").read_text())["model"]["dequantization"] == default
