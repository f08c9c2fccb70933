"""The autoregressive families fvsbn and pixelcnn (course notes 002 §1): masks, exact normalisation, maximum
likelihood recovery of a known FVSBN, the pixel-by-pixel samplers, and the commands."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from ppl_dgm.data import load_dataset
from ppl_dgm.errors import InputError
from ppl_dgm.inference import fit_svi
from ppl_dgm.models.fvsbn import FVSBN, FVSBNConfig
from ppl_dgm.models.pixelcnn import PixelCNN
from ppl_dgm.nn import GatedPixelCNN, MaskedConv2d, free_parameters
from ppl_dgm.runs import DataSpec, load_run, train_run

from .conftest import run_cli as run


def dependence(f, x: torch.Tensor) -> torch.Tensor:
    """G[i, j] = sum over channels of |d f(x)_i / d x_j| for pixels i, j in raster order: (D, D)."""
    jac = torch.autograd.functional.jacobian(f, x)  # (1, C_out, H, W, 1, C_in, H, W) or (1, D, 1, D)
    d = x[0, 0].numel() if x.ndim == 4 else x.shape[1]
    if x.ndim == 4:
        return jac.abs().sum((0, 1, 4, 5)).reshape(d, d)
    return jac.abs().sum((0, 2)).reshape(d, d)


def raster_pairs(d: int):
    i, j = torch.meshgrid(torch.arange(d), torch.arange(d), indexing="ij")
    return j >= i, j < i  # the pixels output i must not read, and those it must


# ---------------------------------------------------------------- masks


def test_gated_pixelcnn_reads_every_earlier_pixel_and_no_later_one():
    """Over a whole 7x7 image: d logits_i / d x_j is 0 for every j >= i and non-zero for every j < i (no blind
    spot), for a 7x7 type-A first layer and 3 gated blocks of 3x3 (reach 3 + 3 = 6 in every direction)."""
    torch.manual_seed(0)
    net = PixelCNN(49, (7, 7), levels=3, channels=6, layers=3, kernel_size=3, first_kernel_size=7).net.double()
    assert isinstance(net, GatedPixelCNN)  # its input: the one-hot code of each pixel (3 channels)
    g = dependence(net, torch.randn(1, 3, 7, 7, dtype=torch.double))
    later, earlier = raster_pairs(49)
    assert net.reach == 6
    assert float(g[later].max()) == 0.0
    assert float(g[earlier].min()) > 1e-10


def test_plain_masked_convolutions_have_a_blind_spot():
    """The original PixelCNN's stack (full masks, A then B) never reads the pixels above-right of the output: for
    output (3, 3) of a 7x7 image after 7 layers of 3x3, pixels (2, 5), (2, 6), (1, 6) stay unread although (0, 6)
    three rows up is read; it is causal nonetheless."""
    torch.manual_seed(0)
    layers = [MaskedConv2d(2, 8, 3, "A", "full"), torch.nn.Tanh()]
    for _ in range(6):
        layers += [MaskedConv2d(8, 8, 3, "B", "full"), torch.nn.Tanh()]
    g = dependence(torch.nn.Sequential(*layers).double(), torch.randn(1, 2, 7, 7, dtype=torch.double))
    later, earlier = raster_pairs(49)
    out = g[3 * 7 + 3].reshape(7, 7)
    assert float(g[later].max()) == 0.0
    assert out[2, 5] == 0 and out[2, 6] == 0 and out[1, 6] == 0 and out[0, 6] > 0 and out[2, 4] > 0


def test_fvsbn_logit_i_reads_exactly_the_earlier_pixels():
    torch.manual_seed(0)
    m = FVSBN(10).double()
    g = dependence(m.logits, torch.rand(1, 10, dtype=torch.double))
    later, earlier = raster_pairs(10)
    assert float(g[later].max()) == 0.0 and float(g[earlier].min()) > 0
    assert torch.equal(g, m.regression.masked_weight.detach().abs())  # the strictly lower triangle of W


def test_masks_and_free_parameters():
    assert MaskedConv2d(1, 1, 5, "A", "vertical").weight.shape[-2:] == (2, 5)  # only the rows above
    assert MaskedConv2d(1, 1, 5, "B", "horizontal").weight.shape[-2:] == (1, 3)
    conv = MaskedConv2d(2, 3, 3, "A", "full")  # 4 of the 9 entries: the row above and the pixel on the left
    assert conv.weight.shape[-2:] == (2, 3) and free_parameters(conv) == 2 * 3 * 4 + 3
    assert FVSBN(64).n_parameters == 64 + 64 * 63 // 2
    with pytest.raises(InputError, match="odd integer >= 3"):
        MaskedConv2d(1, 1, 4)


# ---------------------------------------------------------------- exact likelihood


def all_images(d: int, levels: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(levels), repeat=d)), dtype=torch.double)


def sharpened(model):
    """The model in float64 with its weights scaled up, so that p(x) is far from uniform."""
    torch.manual_seed(1)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3).add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("make, d, levels", [
    (lambda: FVSBN(10), 10, 2),
    (lambda: PixelCNN(9, (3, 3), 2, channels=4, layers=2), 9, 2),
    (lambda: PixelCNN(6, (2, 3), 3, channels=4, layers=1), 6, 3),
])
def test_probabilities_of_every_image_sum_to_one(make, d, levels):
    model = sharpened(make())
    with torch.no_grad():
        lp = model.log_prob(all_images(d, levels))
    assert abs(float(lp.exp().sum()) - 1) < 1e-5
    assert float(lp.max() - lp.min()) > 3  # not the uniform distribution


def known_fvsbn(d: int = 8) -> FVSBN:
    torch.manual_seed(3)
    true = FVSBN(d)
    with torch.no_grad():
        true.regression.weight.normal_(0, 1.5)
        true.regression.bias.normal_(0, 1)
    return true


def test_fvsbn_fitted_by_fit_svi_recovers_the_held_out_log_likelihood():
    """Maximum likelihood (fit_svi, empty guide) on N = 20,000 samples of a known 8-pixel FVSBN: on 5,000
    held-out samples its mean log-likelihood is the true model's, less KL(p || q_fitted), which is about
    k / 2N = 36 / 40,000 nats for the k = 36 free parameters of an exact maximum-likelihood fit; plus the noise of
    the paired mean difference (4 standard errors; one is ~0.001 nats here); plus 0.003 nats for stopping at an
    SGD iterate (lr 0.05, batches of 500): the fit ends ~0.001 nats *below* the true model on its own training
    data, where the exact maximum would be ~0.001 above."""
    true = known_fvsbn()
    torch.manual_seed(4)
    x_train, x_test = true.sample(20_000), true.sample(5_000)
    fitted = FVSBN(8)
    result = fit_svi(fitted, x_train, epochs=15, batch_size=500, lr=0.05, progress=False, seed=0)
    with torch.no_grad():
        diff = fitted.log_prob(x_test).double() - true.log_prob(x_test).double()
        mean, se = float(diff.mean()), float(diff.std() / math.sqrt(len(diff)))
        entropy = -float(true.log_prob(x_test).double().mean())
    assert 3.0 < entropy < 5.5  # far from log 256 = 5.55 (uniform) and from 0 (deterministic)
    assert se < 0.005
    assert -(36 / 40_000) - 4 * se - 0.003 < mean < 4 * se, (mean, se)
    assert abs(result.history[-1]["train_elbo"] + entropy) < 0.05  # the training objective is log p(x) too


# ---------------------------------------------------------------- sampling


@pytest.mark.parametrize("make, d, levels", [
    (lambda: FVSBN(4), 4, 2),
    (lambda: PixelCNN(6, (2, 3), 2, channels=4, layers=1), 6, 2),
    (lambda: PixelCNN(4, (2, 2), 3, channels=4, layers=1), 4, 3),
])
def test_samples_follow_exp_log_prob(make, d, levels):
    """Chi-square goodness of fit of 20,000 seeded samples to exp(log_prob) over every image, and total variation
    below 0.05 (its expectation is about sqrt(K / (2 pi n)) ~ 0.01-0.03 for K = 16..81 images)."""
    model = sharpened(make())
    images = all_images(d, levels)
    with torch.no_grad():
        p = model.log_prob(images).exp().numpy()
    torch.manual_seed(0)
    x = model.sample(20_000)
    codes = (x.long() * levels ** torch.arange(d - 1, -1, -1)).sum(1).numpy()  # row of ``images``
    counts = np.bincount(codes, minlength=len(images))
    keep = p * len(x) >= 5
    chi2 = float((((counts - len(x) * p) ** 2) / (len(x) * p))[keep].sum())
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3
    assert 0.5 * np.abs(counts / len(x) - p).sum() < 0.05


def test_cached_row_sampler_computes_the_full_networks_logits():
    """The sampler's vertical terms of a row (computed on the rows within reach only) and its horizontal pass on
    the row up to the pixel give the logits of the full forward pass, for every pixel of a 6x5 image."""
    torch.manual_seed(0)
    model = PixelCNN(30, (6, 5), 3, channels=5, layers=1, first_kernel_size=3).double()
    assert model.net.reach == 2  # so the crop above rows 3..5 matters
    x = torch.randint(0, 3, (4, 30)).double()
    full = model.logits(x).reshape(4, 6, 5, 3)
    img = x.long().reshape(4, 6, 5)
    for i in range(6):
        terms = model._row_terms(img, i)
        for j in range(5):
            assert torch.allclose(model._pixel_logits(img, terms, i, j), full[:, i, j], atol=1e-10)


def test_discrete_data_are_checked():
    with pytest.raises(InputError, match=r"expected discrete values in \{0, 1\}; got values in \[0, 0.5\], not all"):
        FVSBN(3).log_prob(torch.tensor([[0.0, 0.5, 0.5]]))
    with pytest.raises(InputError, match=r"\{0, ..., 2\}; got values in \[0, 3\]"):
        PixelCNN(4, (2, 2), 3).log_prob(torch.tensor([[0.0, 1.0, 2.0, 3.0]]))
    with pytest.raises(InputError, match="pixelcnn models images"):
        PixelCNN(4, (4,))


# ---------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from ppl_dgm.cli import main

    root = tmp_path_factory.mktemp("ar")
    tiny = {"fvsbn": ["--epochs", "3"], "pixelcnn": ["--epochs", "2", "--channels", "8", "--layers", "2"]}
    for name, args in tiny.items():
        with pytest.raises(SystemExit) as info:
            main(["fit", name, *args, "--out", str(root / name), "--quiet"])
        assert info.value.code == 0
    return {name: root / name for name in tiny}


@pytest.mark.parametrize("family", ["fvsbn", "pixelcnn"])
def test_cli_evaluate_gives_exact_nats_and_bits_per_dim(runs, family, capsys):
    code, out, _ = run(["evaluate", runs[family], "--json"], capsys)
    res = json.loads(out.strip().splitlines()[-1])
    r = load_run(runs[family])
    x, _, _ = r.eval_data()
    with torch.no_grad():
        ll = r.model.log_prob(x).double()
    assert code == 0 and res["n"] == len(x) == 359 and res["dim"] == 64
    assert res["log_likelihood"] == pytest.approx(float(ll.mean()), abs=1e-9)
    assert res["bits_per_dim"] == pytest.approx(-float(ll.mean()) / (64 * math.log(2)), abs=1e-12)
    assert res["bic"] == pytest.approx(-2 * float(ll.sum()) + r.model.n_parameters * math.log(359), rel=1e-9)
    assert r.history[-1]["test_elbo"] == pytest.approx(res["log_likelihood"], abs=1e-4)  # fit's held-out number
    assert r.config["data"]["binarize"] == "static"


@pytest.mark.parametrize("family", ["fvsbn", "pixelcnn"])
def test_cli_sample_writes_a_png_and_latent_diagnose_refuse(runs, family, tmp_path, capsys):
    code, _, err = run(["sample", runs[family], "-n", "8", "--out", tmp_path / "s.png"], capsys)
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0, err
    code, _, _ = run(["sample", runs[family], "-n", "5", "--out", tmp_path / "s.npy"], capsys)
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (5, 8, 8) and set(np.unique(x)) <= {0.0, 1.0}
    for command in (["diagnose", runs[family]], ["latent", runs[family], "interpolate", "--out", tmp_path / "i.png"]):
        code, _, err = run(command, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and f"got {family!r}" in lines[0], err


def test_cli_refuses_data_that_are_not_discrete(tmp_path, capsys):
    code, _, err = run(["fit", "fvsbn", "--binarize", "none", "--epochs", "1", "--out", tmp_path / "a"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        "error: digits (train): expected discrete values in {0, 1}; got values in [0, 1], not all integers; "
        "pass --binarize static (or dynamic) for grey levels in [0, 1]"]
    code, _, err = run(["fit", "pixelcnn", "--dataset", "moons", "--epochs", "1", "--out", tmp_path / "b"], capsys)
    assert code == 2 and "pixelcnn models images of shape (H, W)" in err and not (tmp_path / "b").exists()


def test_dynamic_binarization_trains_on_grey_levels_drawn_per_batch(tmp_path):
    """Under dynamic binarization the training split holds grey levels (only the held-out one is checked to be
    binary), and each minibatch is drawn afresh."""
    r = train_run("fvsbn", FVSBNConfig(epochs=2), DataSpec("digits", binarize="dynamic"), out=tmp_path / "d",
                  progress=False, echo=lambda m: None)
    ds = load_dataset("digits", binarize="dynamic", seed=0)
    assert ds.levels == 2 and not torch.equal(ds.x_train, ds.x_train.round())  # grey levels, drawn per batch
    assert math.isfinite(r.history[-1]["test_elbo"])
