"""The NumPyro twins of the VAE, CVAE and HVAE: weights copied across give the same ELBO terms and IWAE estimate
as the Pyro families; both backends trained the same way reach the same held-out ELBO; the run directory, resume,
checkpoints (no pickle) and the ArviZ export work as on the Pyro side."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from pyro import poutine

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
pytest.importorskip("equinox")
from numpyro import handlers  # noqa: E402
from numpyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO  # noqa: E402

from ppl_dgm.errors import InputError, NonFiniteError  # noqa: E402
from ppl_dgm.inference.diagnostics import elbo_terms as pyro_elbo_terms  # noqa: E402
from ppl_dgm.inference.traces import log_weights as pyro_log_weights  # noqa: E402
from ppl_dgm.models.cvae import CVAE  # noqa: E402
from ppl_dgm.models.hvae import HVAE  # noqa: E402
from ppl_dgm.models.vae import VAE  # noqa: E402
from ppl_dgm.numpyro.inference import checkpoint as npz  # noqa: E402
from ppl_dgm.numpyro.inference.svi import (  # noqa: E402
    _nonfinite_sites,
    elbo_terms,
    fit,
    log_weights,
    make_loss,
    weighted,
)
from ppl_dgm.numpyro.models import twin_class  # noqa: E402
from ppl_dgm.runs import DataSpec, load_run, load_twin, train_run  # noqa: E402

N, D, K = 6, 64, 3
CASES = {
    "vae": (VAE, dict(x_dim=D, latent_dim=K, hidden=(32, 16))),
    "vae-gaussian-learned": (VAE, dict(x_dim=D, latent_dim=K, hidden=(32,), likelihood="gaussian-learned")),
    "cvae": (CVAE, dict(x_dim=D, n_classes=4, latent_dim=K, hidden=(32,))),
    "hvae": (HVAE, dict(x_dim=D, layers=2, latent_dims=(K, 2), hidden=(32,))),
}


def _pair(case):
    cls, kw = CASES[case]
    torch.manual_seed(1)
    model = cls(**kw)
    if case == "vae-gaussian-learned":
        with torch.no_grad():
            model.x_log_scale.uniform_(-1, 0)
    twin = twin_class(model.family)(**model.config)
    return model, twin, twin.params_from_torch(model.state_dict())


def _data(conditional):
    rng = np.random.default_rng(0)
    x = rng.random((N, D)).astype(np.float32)
    y = rng.integers(0, 4, N) if conditional else None
    return x, y


def _latents(twin, k, seed=3):
    """k draws of every latent site, shape (k, N, d), from a fixed NumPy generator."""
    rng = np.random.default_rng(seed)
    dims = twin.dims if hasattr(twin, "dims") else [twin.latent_dim]
    return {s: rng.normal(size=(k, N, d)).astype(np.float32) for s, d in zip(twin.latent_sites, dims)}


def _conditioned(twin, zs):
    """The twin with its guide's latents fixed at ``zs`` (common random numbers across the backends)."""
    return types.SimpleNamespace(model=twin.model, guide=handlers.condition(twin.guide, zs),
                                 latent_sites=twin.latent_sites)


@pytest.mark.parametrize("case", list(CASES))
def test_weights_round_trip(case):
    model, twin, params = _pair(case)
    state = twin.torch_state(params)
    own = model.state_dict()
    assert set(state) == set(own)
    for k, v in own.items():
        np.testing.assert_array_equal(state[k], v.numpy())


@pytest.mark.parametrize("case", list(CASES))
def test_log_weights_and_iwae_match_pyro(case):
    """The same weights and the same latents z_1..z_k: log p(x, z) - log q(z | x) and the IWAE estimate agree."""
    model, twin, params = _pair(case)
    x, y = _data(model.conditional)
    k = 8
    zs = _latents(twin, k)
    rest = (torch.as_tensor(y),) if y is not None else ()
    flat = {s: torch.as_tensor(v.reshape(k * N, -1)) for s, v in zs.items()}
    reps = tuple(t.repeat(k, *([1] * (t.dim() - 1))) for t in (torch.as_tensor(x), *rest))
    with torch.no_grad():
        lw_t = pyro_log_weights(poutine.condition(model.model, flat), poutine.condition(model.guide, flat), reps, 1)
    lw_t = lw_t.reshape(k, N).double().numpy()
    xj, yj = jnp.asarray(x), None if y is None else jnp.asarray(y)
    lw_j = np.stack([np.asarray(log_weights(_conditioned(twin, {s: v[i] for s, v in zs.items()}), params, xj, yj,
                                            key=jax.random.PRNGKey(0), k=1))[0] for i in range(k)])
    np.testing.assert_allclose(lw_j, lw_t, rtol=1e-5)
    iwae = lambda lw: np.logaddexp.reduce(lw.astype(np.float64), axis=0) - np.log(k)
    np.testing.assert_allclose(iwae(lw_j), iwae(lw_t), rtol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_elbo_terms_match_pyro(case):
    """Reconstruction and KL per site (closed form for the VAE/CVAE, log-ratio per layer for the HVAE) agree."""
    model, twin, params = _pair(case)
    x, y = _data(model.conditional)
    zs = {s: v[0] for s, v in _latents(twin, 1).items()}
    rest = (torch.as_tensor(y),) if y is not None else ()
    args = (torch.as_tensor(x), *rest)
    with torch.no_grad():
        tr = poutine.trace(model.guide).get_trace(*args)
        for s, v in zs.items():
            tr.nodes[s]["value"] = torch.as_tensor(v)  # the guide's draws, still sample sites (not observed)
        t = pyro_elbo_terms(model.model, poutine.replay(model.guide, trace=tr), *args)
    yj = None if y is None else jnp.asarray(y)
    j = elbo_terms(_conditioned(twin, zs), params, jnp.asarray(x), yj, key=jax.random.PRNGKey(0))
    np.testing.assert_allclose(float(jnp.mean(j["x"])), t.reconstruction, rtol=1e-5)
    for site in twin.latent_sites:
        np.testing.assert_allclose(float(jnp.mean(j[site])), t.kl_sites[site], rtol=1e-5)


def test_objectives_by_name_and_beta_as_a_handler():
    _, vae, _ = _pair("vae")
    _, hvae, _ = _pair("hvae")
    assert type(make_loss("analytic", 1, vae)) is TraceMeanField_ELBO
    assert type(make_loss("analytic", 1, hvae)) is Trace_ELBO  # a hierarchy's KL is not a mean-field term
    assert type(make_loss("elbo", 2, vae)) is Trace_ELBO
    iwae = make_loss("iwae", 5, vae)
    assert isinstance(iwae, RenyiELBO) and iwae.alpha == 0 and iwae.num_particles == 5
    with pytest.raises(InputError, match="free bits"):
        make_loss("analytic", 1, vae, free_bits=0.5)
    x, _ = _data(False)
    for program in (vae.model, vae.guide):
        tr = handlers.trace(handlers.seed(handlers.substitute(weighted(program, ("z",)), data=vae.init_params()), 0)
                            ).get_trace(jnp.asarray(x), None, kl_weight=0.25)
        assert tr["z"]["scale"] == 0.25
        assert tr.get("x", {}).get("scale") is None


def test_warmup_weights_and_resume_is_exact(tmp_path, digits):
    twin = twin_class("vae")(x_dim=64, latent_dim=4, hidden=(32,))
    x, xt = digits.x_train.numpy()[:300], digits.x_test.numpy()[:50]
    kw = dict(epochs=4, batch_size=64, warmup_epochs=2, beta=0.5, checkpoint_every=1, progress=False)
    p_full, h_full = fit(twin, x, x_test=xt, out_dir=tmp_path / "a", **kw)
    assert [h["kl_weight"] for h in h_full] == [0.0, 0.25, 0.5, 0.5]
    fit(twin, x, x_test=xt, out_dir=tmp_path / "b", **{**kw, "epochs": 2})
    p_res, h_res = fit(twin, x, x_test=xt, out_dir=tmp_path / "b", resume=True, **kw)
    for k in p_full:
        for a, b in zip(jax.tree_util.tree_leaves(p_full[k]), jax.tree_util.tree_leaves(p_res[k])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [h["train_elbo"] for h in h_res] == [h["train_elbo"] for h in h_full]
    with np.load(tmp_path / "b" / npz.CHECKPOINT_NPZ, allow_pickle=False) as f:  # arrays only
        assert str(f["format"]) == npz.FORMAT and int(f["epoch"]) == 4


def test_nonfinite_parameters_are_named():
    _, twin, params = _pair("vae")
    bad = dict(params)
    bad["decoder$params"] = jax.tree_util.tree_map(lambda t: t * jnp.nan, params["decoder$params"])
    x, _ = _data(False)
    sites = _nonfinite_sites(twin, bad, jnp.asarray(x), None, jax.random.PRNGKey(0))
    assert "decoder$params" in sites and "x" in sites and "encoder$params" not in sites
    assert issubclass(NonFiniteError, RuntimeError)
    # a broken encoder makes the guide's Normal invalid: named too, not NumPyro's argument check raising
    bad = dict(params, **{"encoder$params": jax.tree_util.tree_map(lambda t: t * jnp.nan, params["encoder$params"])})
    sites = _nonfinite_sites(twin, bad, jnp.asarray(x), None, jax.random.PRNGKey(0))
    assert sites[0] == "encoder$params" and "z" in sites


def test_diverging_fit_stops_naming_sites_and_states_no_checkpoint(tmp_path):
    _, twin, _ = _pair("vae")
    x, _ = _data(False)
    with pytest.raises(NonFiniteError, match=r"non-finite ELBO in epoch \d at sites .*encoder\$params.*; "
                                             r"last good checkpoint: none written"):
        fit(twin, x, epochs=3, batch_size=16, lr=1e9, progress=False, out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / npz.CHECKPOINT_NPZ).exists()


def test_both_backends_reach_the_same_heldout_elbo_on_digits(tmp_path):
    """The VAE's defaults on digits, 100 epochs each: held-out ELBOs within 1 nat (measured: see docs/numpyro.md)."""
    from ppl_dgm.models import get_family

    vae = get_family("vae")
    runs = {}
    for backend in ("pyro", "numpyro"):
        options = vae.config(epochs=100, backend=backend)
        runs[backend] = train_run(vae, options, DataSpec("digits", binarize="dynamic"), out=tmp_path / backend,
                                  progress=False, echo=lambda m: None)
    elbo = {b: r.history[-1]["test_elbo"] for b, r in runs.items()}
    assert elbo["numpyro"] > -30 and abs(elbo["numpyro"] - elbo["pyro"]) < 1.0, elbo
    run = load_run(tmp_path / "numpyro", checkpoint="best")  # best.npz, loaded into the Pyro family
    assert run.checkpoint == npz.BEST_NPZ
    twin, params = load_twin(runs["numpyro"])
    np.testing.assert_array_equal(np.asarray(params["encoder$params"].layers[0].weight),
                                  runs["numpyro"].model.encoder[0].weight.detach().numpy())


def test_arviz_export_has_the_pyro_layout(tmp_path):
    from ppl_dgm.export import svi_to_inference_data, to_inference_data

    model, twin, params = _pair("hvae")
    x, _ = _data(False)
    a = svi_to_inference_data(twin, params, x, num_samples=7)
    b = to_inference_data(model, torch.as_tensor(x), num_samples=7)
    assert a.groups() == b.groups()
    for g in a.groups():
        assert {k: (v.dims, v.shape) for k, v in a[g].data_vars.items()} == \
               {k: (v.dims, v.shape) for k, v in b[g].data_vars.items()}
    assert a.posterior["z_1"].dims == ("chain", "draw", "obs", "z_1_dim")


@pytest.mark.parametrize("family", ["vae", "cvae", "hvae"])
def test_cli_numpyro_run_works_with_every_command(family, tmp_path, capsys):
    from tests.conftest import run_cli

    out = tmp_path / family
    code, _, err = run_cli(["fit", family, "--backend", "numpyro", "--epochs", 2, "--hidden", 16, "--quiet",
                            "--out", out], capsys)
    assert code in (0, None), err
    assert (out / npz.CHECKPOINT_NPZ).is_file() and not (out / "checkpoint.pt").exists()
    label = ["--label", 1] if family == "cvae" else []
    for args in (["evaluate", out, "--iwae-k", 10], ["sample", out, "-n", 4, *label, "--out", tmp_path / "s.png"],
                 ["latent", out, "reconstruct", "--out", tmp_path / "r.png"],
                 ["diagnose", out, "--iwae-k", 10]):
        code, stdout, err = run_cli(args, capsys)
        assert code in (0, None), (args, err)
    assert "checkpoint.npz" in stdout + err or (out / "diagnostics.json").is_file()
    assert "convergence: too short (2 epochs of test_elbo; a trend needs 4)" in stdout and "nan" not in stdout


@pytest.mark.parametrize("args, message", [
    (["fit", "ae", "--backend", "numpyro"], "expected a family with a NumPyro twin"),
    (["fit", "vae", "--backend", "numpyro", "--likelihood", "continuous-bernoulli"], "expected likelihood one of"),
    (["fit", "vae", "--backend", "numpyro", "--arch", "conv", "--data", "IMAGES"], "expected arch 'mlp'"),
    (["fit", "vae", "--backend", "numpyro", "--compile-step"], "the NumPyro step is always jit-compiled"),
    (["fit", "vae", "--backend", "numpyro", "--fuse-step"], "expected no --fuse-step with --backend numpyro"),
])
def test_cli_numpyro_refusals_are_one_line(args, message, tmp_path, capsys):
    from tests.conftest import run_cli

    images = tmp_path / "images.npy"
    np.save(images, np.random.default_rng(0).random((20, 28, 28)).astype(np.float32))
    args = [images if a == "IMAGES" else a for a in args]
    code, _, err = run_cli([*args, "--epochs", 1, "--out", tmp_path / "r"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_learning_rate_schedule_is_the_pyro_loops(digits):
    """The optimizer steps at lr_at(schedule)(epoch), the Pyro loop's per-epoch schedule: under a constant gradient
    every Adam step moves a parameter by exactly its learning rate."""
    from ppl_dgm.inference.svi import lr_at
    from ppl_dgm.numpyro.inference.svi import make_optimizer

    lrs = np.array([lr_at("cosine", 0.1, 3)(e) for e in range(3)], dtype=np.float32)
    opt = make_optimizer("adam", lrs, steps=2, clip_norm=None)
    state, moves = opt.init({"a": jnp.float32(0.0)}), []
    for _ in range(6):
        before = float(opt.get_params(state)["a"])
        state = opt.update({"a": jnp.float32(1.0)}, state)
        moves.append(before - float(opt.get_params(state)["a"]))
    np.testing.assert_allclose(moves, np.repeat(lrs, 2), rtol=1e-4)
    twin = twin_class("vae")(x_dim=64, latent_dim=2, hidden=(8,))
    _, history = fit(twin, digits.x_train.numpy()[:100], epochs=3, batch_size=50, lr=0.1, lr_schedule="cosine",
                     progress=False)
    # the history states the schedule's own numbers (Python floats), not their float32 roundings
    assert [h["lr"] for h in history] == [lr_at("cosine", 0.1, 3)(e) for e in range(3)]


def test_fit_checks_its_data_and_options_in_one_line():
    """Before: NaN rows read as a diverging fit, a wrong width or label count raised from inside JAX or ran
    (JAX clamps an out-of-range label's index), bad numbers ran."""
    vae = twin_class("vae")(x_dim=D, latent_dim=2, hidden=(8,))
    cvae = twin_class("cvae")(x_dim=D, n_classes=3, latent_dim=2, hidden=(8,))
    x, _ = _data(False)
    xn = x.copy()
    xn[2, 3] = np.nan
    kw = dict(epochs=1, progress=False)
    cases = [
        (lambda: fit(vae, xn, **kw), r"training data: expected finite values; got 1 NaN"),
        (lambda: fit(vae, x[:, :3], **kw), rf"training data: expected an array of shape \(N, {D}\)"),
        (lambda: fit(vae, x, None, x[:, :3], **kw), rf"test data: expected an array of shape \(N, {D}\)"),
        (lambda: fit(vae, x, np.zeros(len(x), int), **kw), "training labels: expected none for an unconditional"),
        (lambda: fit(cvae, x, **kw), r"a conditional CVAE needs labels y \(integers 0..2\)"),
        (lambda: fit(cvae, x, np.full(len(x), 7), **kw),
         "expected labels in 0..2; the training data has labels in 7..7"),
        (lambda: fit(cvae, x, np.zeros(3, int), **kw), f"training labels: expected {len(x)} labels"),
        (lambda: fit(vae, x, batch_size=0, **kw), "expected batch_size as a positive integer"),
        (lambda: fit(vae, x, particles=0, **kw), "expected particles as a positive integer"),
        (lambda: fit(vae, x, beta=-1.0, **kw), "expected beta as a finite number >= 0"),
        (lambda: fit(vae, x, clip_norm=-1.0, **kw), "expected clip_norm as a finite number > 0"),
        (lambda: fit(vae, x, seed=-1, **kw), "expected seed as an integer >= 0"),
        (lambda: fit(vae, x, optimizer="sgd", **kw), "optimizer must be one of"),
    ]
    for call, match in cases:
        with pytest.raises(InputError, match=match):
            call()
    _, history = fit(vae, x, None, x[:0], **kw)  # no held-out rows: no held-out record
    assert "test_elbo" not in history[-1]


@pytest.mark.parametrize("family, kw, match", [
    ("vae", dict(x_dim=0), "expected x_dim as a positive integer; got 0"),
    ("vae", dict(x_dim=4, latent_dim=-1), "expected latent_dim as a positive integer; got -1"),
    ("vae", dict(x_dim=4, hidden=(0,)), "expected each hidden width as a positive integer; got 0"),
    ("vae", dict(x_dim=4, likelihood="gaussian", x_scale=-1.0), "x_scale must be > 0"),
    ("cvae", dict(x_dim=4, n_classes=1), "n_classes must be an integer >= 2; got 1"),
    ("hvae", dict(x_dim=4, layers=0), "expected layers as a positive integer; got 0"),
    ("hvae", dict(x_dim=4, layers=2, latent_dims=(3, 2, 1)), "expected one positive latent size per layer"),
])
def test_twins_check_their_arguments_as_the_pyro_families_do(family, kw, match):
    """The same checks (ppl_dgm.models.checks) and messages on both backends (before: a twin with latent_dim -1
    failed inside XLA, x_dim 0 or n_classes 0 were built)."""
    from ppl_dgm.models import get_family

    for build in (twin_class(family), get_family(family).model):
        with pytest.raises(InputError, match=match):
            build(**kw)
