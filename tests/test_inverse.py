"""Inverse problems: DPS against the exact Gaussian posterior, the measurement model's trace, operators, PSNR/SSIM,
and ``ppl-dgm restore`` end to end."""

import math

import numpy as np
import pyro
import pytest
import torch

from ppl_dgm.errors import InputError
from ppl_dgm.models.diffusion import DDPM
from ppl_dgm.models.inverse import chain_prior, dps_sample, inpaint, measurement_model, superres
from ppl_dgm.runs.restore import psnr, ssim

from .conftest import run_cli
from .gaussian_helpers import GaussianEps

MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)


def gaussian_posterior(A, y, sigma_y):
    """Mean and covariance of x | y for x ~ N(MU, SIGMA), y = A x + sigma_y n: Sigma_post = (Sigma^-1 +
    A^T A / sigma_y^2)^-1, mu_post = Sigma_post (Sigma^-1 mu + A^T y / sigma_y^2); A the matrix of the operator."""
    mat = A(torch.eye(len(MU), dtype=torch.float64)).T
    cov = torch.linalg.inv(torch.linalg.inv(SIGMA) + mat.T @ mat / sigma_y**2)
    return cov @ (torch.linalg.solve(SIGMA, MU) + mat.T @ y / sigma_y**2), cov


def test_dps_on_a_gaussian_prior_approaches_the_exact_posterior_mean():
    """x ~ N(MU, SIGMA) (the exact eps), observe x_1 = 1.5 (one prior sd from MU_1) with sigma_y = 0.1.

    DPS is approximate (p(y | x_t) ~ p(y | x-hat_0)): with zeta = 0.01 and T = 1000 its mean over 2,000 draws
    is 0.013 from the exact posterior mean (0.013-0.040 over seeds 0-2; Monte Carlo s.e. 0.015), which is 1.15
    from the prior mean; zeta = 0.02-0.05 gives 0.14-0.21 (x_2 drifts), 0.005 does not reach y.  Tolerance 0.1
    (a tenth of the move from prior to posterior) and 10x closer to the posterior than the prior mean is.
    """
    torch.manual_seed(0)
    ddpm = DDPM(2, timesteps=1000).double()
    ddpm.net = GaussianEps(ddpm.schedule, MU, SIGMA).double()
    A, sigma_y = inpaint(torch.tensor([1.0, 0.0], dtype=torch.float64)), 0.1
    y = torch.tensor([1.5, 0.0], dtype=torch.float64)
    post_mean, _ = gaussian_posterior(A, y, sigma_y)
    x = dps_sample(ddpm, y.expand(2000, 2), A, sigma_y=sigma_y, zeta=0.01, record=1).x
    err, prior_err = float((x.mean(0) - post_mean).norm()), float((MU - post_mean).norm())
    assert err < 0.1 and err < prior_err / 10, (x.mean(0), post_mean)
    assert abs(float(x[:, 0].mean()) - 1.5) < 0.05                 # the observed coordinate is met


def test_measurement_model_trace_has_the_observed_site_y():
    A, sigma_y = inpaint(torch.tensor([1.0, 0.0, 1.0])), 0.3
    x, y = torch.randn(5, 3), torch.randn(5, 3)
    tr = pyro.poutine.trace(measurement_model).get_trace(x, A, y, sigma_y)
    site = tr.nodes["y"]
    assert site["is_observed"] and torch.equal(site["value"], y)
    expected = torch.distributions.Normal(A(x), sigma_y).log_prob(y).sum(-1)
    assert torch.allclose(site["fn"].log_prob(y), expected)
    assert math.isclose(float(tr.log_prob_sum()), float(expected.sum()), rel_tol=1e-6)


def test_measurement_model_with_a_chain_prior_names_every_step():
    ddpm = DDPM(4, timesteps=3, t_per_step=2, hidden=(8,)).eval()
    with torch.no_grad():
        tr = pyro.poutine.trace(measurement_model).get_trace(chain_prior(ddpm), lambda x: x[:, :2],
                                                            torch.zeros(6, 2), 0.1)
    assert [n for n in tr.stochastic_nodes if n != "data"] == ["x_3", "x_2", "x_1", "x"]
    assert tr.nodes["x"]["value"].shape == (6, 4) and tr.nodes["y"]["is_observed"]
    assert all(f.name == "data" for f in tr.nodes["y"]["cond_indep_stack"])


def test_operators_and_their_baselines():
    x = torch.arange(16.0).reshape(1, 16)
    A = superres(2, (4, 4))
    low = A(x)
    assert low.shape == (1, 4) and torch.allclose(low, torch.tensor([[2.5, 4.5, 10.5, 12.5]]))
    assert A.baseline(torch.ones(1, 4)).shape == (1, 16) and torch.allclose(A.baseline(torch.ones(3, 4)), torch.ones(1))
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert torch.equal(inpaint(m).rows(slice(1, 2))(torch.ones(1, 2)), torch.tensor([[0.0, 1.0]]))


@pytest.mark.parametrize("call, message", [
    (lambda: inpaint(torch.tensor([0.5, 1.0])), "mask"),
    (lambda: superres(3, (8, 8)), "divisor"),
    (lambda: superres(2, (8,)), "images"),
])
def test_bad_operators_are_refused_in_one_line(call, message):
    with pytest.raises(InputError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_dps_refuses_nan_measurements_and_bad_steps():
    ddpm = DDPM(2, timesteps=5, t_per_step=2, hidden=(8,))
    A = inpaint(torch.tensor([1.0, 0.0]))
    with pytest.raises(InputError, match="NaN") as info:
        dps_sample(ddpm, torch.tensor([[float("nan"), 0.0]]), A, sigma_y=0.1)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="zeta"):
        dps_sample(ddpm, torch.zeros(1, 2), A, sigma_y=0.1, zeta=0.0)


def test_psnr_and_ssim_known_answers():
    ref = torch.rand(3, 64)
    assert torch.allclose(psnr(ref + 0.1, ref), torch.full((3,), 20.0, dtype=torch.float64))
    assert torch.allclose(ssim(ref, ref, (8, 8)), torch.ones(3, dtype=torch.float64))
    # a constant offset c leaves the structure: per window SSIM = (2 mu (mu + c) + C1) / (mu^2 + (mu + c)^2 + C1)
    flat, c = torch.full((1, 64), 0.4), 0.2
    want = (2 * 0.4 * 0.6 + 1e-4) / (0.4**2 + 0.6**2 + 1e-4)
    assert math.isclose(float(ssim(flat + c, flat, (8, 8))), want, rel_tol=1e-6)             # float32 inputs


# -- the command -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
    from ppl_dgm.cli import main

    out = tmp_path_factory.mktemp("restore") / "ddpm"
    pyro.set_rng_seed(0)
    with pytest.raises(SystemExit) as info:
        main(["fit", "ddpm", "--epochs", "1", "--timesteps", "20", "--base-channels", "8", "--quiet", "--threads",
              "1", "--out", str(out)])
    assert info.value.code == 0
    return out


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("arrays")
    clean = (load_digits().images[:6] / 16).astype(np.float32)
    mask = np.ones((8, 8), np.float32)
    mask[2:6, 2:6] = 0
    files = {"clean": clean, "mask": mask, "mask_bad": np.ones((7, 8), np.float32),
             "noisy": clean + 0.2 * np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32),
             "low": clean.reshape(6, 4, 2, 4, 2).mean((2, 4)), "nan": np.where(mask > 0, clean, np.nan)}
    for name, a in files.items():
        np.save(d / f"{name}.npy", a)
    return d


@pytest.mark.parametrize("task, extra", [
    ("inpaint", ["--input", "clean.npy", "--mask", "mask.npy"]),
    ("denoise", ["--input", "noisy.npy", "--sigma-y", "0.2"]),
    ("superres", ["--input", "low.npy", "--scale", "2"]),
])
def test_restore_each_task_end_to_end(ddpm_run, arrays, task, extra, capsys, tmp_path):
    args = [a if not a.endswith(".npy") else arrays / a for a in extra]
    code, out, err = run_cli(["restore", ddpm_run, "--task", task, *args, "--reference", arrays / "clean.npy",
                              "--out", tmp_path / "x.npy", "--threads", "1"], capsys)
    assert code == 0, err
    assert "||y - A(x)||" in out and "PSNR" in out and "SSIM" in out
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (6, 8, 8) and x.min() >= 0 and x.max() <= 1
    code, out, err = run_cli(["restore", ddpm_run, "--task", task, *args, "--out", tmp_path / "grid.png",
                              "--threads", "1"], capsys)
    assert code == 0 and (tmp_path / "grid.png").stat().st_size > 0, err


@pytest.mark.parametrize("args, message", [
    (["--task", "inpaint", "--input", "clean.npy", "--mask", "mask_bad.npy"], "mask: expected shape (8, 8)"),
    (["--task", "inpaint", "--input", "clean.npy"], "--mask: expected a mask"),
    (["--task", "denoise", "--input", "nan.npy"], "input: expected finite values"),
    (["--task", "superres", "--input", "clean.npy", "--scale", "3"], "scale: expected a divisor"),
    (["--task", "denoise", "--input", "clean.npy", "--mask", "mask.npy"], "--mask: expected only with --task inpaint"),
])
def test_restore_refuses_bad_input_in_one_line(ddpm_run, arrays, args, message, capsys, tmp_path):
    args = [a if not a.endswith(".npy") else arrays / a for a in args]
    code, out, err = run_cli(["restore", ddpm_run, *args, "--out", tmp_path / "x.npy"], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_restore_refuses_a_vae_run(arrays, capsys, tmp_path):
    code, _, err = run_cli(["fit", "vae", "--epochs", "1", "--quiet", "--threads", "1", "--out", tmp_path / "vae"],
                           capsys)
    assert code == 0, err
    code, _, err = run_cli(["restore", tmp_path / "vae", "--task", "denoise", "--input", arrays / "clean.npy",
                            "--out", tmp_path / "x.npy"], capsys)
    assert code == 2 and err == "error: ppl-dgm restore needs a diffusion run (ddpm); got 'vae'\n"


def test_restore_names_the_run_kind_before_the_picture(arrays, capsys, tmp_path):
    """A 2-D flow run with a .png output: the run's kind is what is wrong, said first."""
    code, _, err = run_cli(["fit", "flow", "--dataset", "moons", "--epochs", "1", "--quiet", "--threads", "1",
                            "--out", tmp_path / "flow"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["restore", tmp_path / "flow", "--task", "denoise", "--input", arrays / "clean.npy",
                            "--out", tmp_path / "x.png"], capsys)
    assert code == 2 and err == "error: ppl-dgm restore needs a diffusion run (ddpm); got 'flow'\n"
