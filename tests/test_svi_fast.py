"""The fast paths of the SVI step give the numbers of the plain ones: the lean site records against Pyro's traces,
the fused per-site sums against Pyro's ELBOs, the recorded step (``compile_step``) against the eager one, bit for bit,
resume included; the recorded step compiled by inductor (``fuse_step``) against it, to float rounding; and the cheap
finiteness check of the training data against the exact one."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from ppl_dgm import VAE, fit_svi, load_dataset
from ppl_dgm.errors import InputError
from ppl_dgm.inference import StopTraining, make_objective
from ppl_dgm.inference.compiled import RecordedLoss
from ppl_dgm.inference.objectives import AnalyticELBO, MonteCarloELBO, _site_kl_sum, _site_log_prob_sum
from ppl_dgm.inference.svi import _prepare, collect_params
from ppl_dgm.inference.traces import sample_sites, scaled_log_prob, site_pair, trace_pair
from ppl_dgm.models import DDPM
from ppl_dgm.models.hvae import HVAE


def _value_and_grads(loss, module, *args, seed=5):
    module.zero_grad()
    torch.manual_seed(seed)
    value = loss.differentiable_loss(module.model, module.guide, *args)
    value.backward()
    return float(value.detach()), torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])


def test_site_pair_records_what_trace_pair_does_and_replays_the_subsample():
    """Same draws, same sites; the DDPM's model reuses the guide's subsampled steps t (its plate's subsample site)."""
    torch.manual_seed(0)
    m = DDPM(2, timesteps=50, hidden=(8,), t_per_step=3)
    x = torch.randn(16, 2)
    torch.manual_seed(1)
    lean = site_pair(m.model, m.guide, x)
    torch.manual_seed(1)
    full = trace_pair(m.model, m.guide, x)
    for a, b in zip(lean, full):
        names = [n for n, _ in sample_sites(a)]
        assert names == [n for n, _ in sample_sites(b)]
        for n in names:
            torch.testing.assert_close(a.nodes[n]["value"], b.nodes[n]["value"], rtol=0, atol=0)
    assert torch.equal(lean.model.nodes["t"]["value"], lean.guide.nodes["t"]["value"])
    assert torch.equal(lean.model.nodes["x_t"]["value"], lean.guide.nodes["x_t"]["value"])


def test_site_pair_refuses_duplicate_sites():
    def guide(x):
        pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(RuntimeError, match="Multiple sample sites named 'z'"):
        site_pair(lambda x: None, guide, torch.zeros(1))


def test_analytic_elbo_on_the_diffusion_chain_equals_trace_mean_field():
    """Masks, tensor scales and a subsampled plate: the generic per-site path, value and gradients."""
    torch.manual_seed(0)
    m = DDPM(2, timesteps=50, hidden=(8,), t_per_step=4, loss="simple")
    x = torch.randn(32, 2)
    v0, g0 = _value_and_grads(AnalyticELBO(), m, x)
    v1, g1 = _value_and_grads(pyro.infer.TraceMeanField_ELBO(), m, x)
    assert v0 == pytest.approx(v1, rel=1e-6)
    torch.testing.assert_close(g0, g1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("particles", [1, 3])
def test_monte_carlo_elbo_fast_path_equals_trace_elbo(particles):
    torch.manual_seed(0)
    m = HVAE(20, layers=2, latent_dims=(3, 2), hidden=(16,))
    x = torch.rand(24, 20).bernoulli()
    v0, g0 = _value_and_grads(MonteCarloELBO(particles), m, x)
    v1, g1 = _value_and_grads(pyro.infer.Trace_ELBO(num_particles=particles), m, x)
    assert v0 == pytest.approx(v1, rel=1e-6)
    torch.testing.assert_close(g0, g1, rtol=1e-5, atol=1e-6)


def test_fused_bernoulli_and_gaussian_terms_match_the_generic_sums():
    """The one-kernel cross-entropy and KL sums against log_prob / kl_divergence summed per event, then over the
    batch, also under a scale (as a subsampled plate gives)."""
    torch.manual_seed(0)
    vae = VAE(12, 3, [8])
    x = torch.rand(40, 12).bernoulli()
    for scale in (1.0, 10.0):
        torch.manual_seed(2)
        g_tr, m_tr = site_pair(pyro.poutine.scale(vae.model, scale), pyro.poutine.scale(vae.guide, scale), x)
        x_site, z_q, z_p = m_tr.nodes["x"], g_tr.nodes["z"], m_tr.nodes["z"]
        assert x_site["scale"] == scale
        torch.testing.assert_close(_site_log_prob_sum(x_site), scaled_log_prob(x_site).sum(), rtol=1e-6, atol=1e-4)
        kl = torch.distributions.kl_divergence(z_q["fn"], z_p["fn"]) * scale
        torch.testing.assert_close(_site_kl_sum("z", z_q, z_p), kl.sum(), rtol=1e-6, atol=1e-4)


def test_finite_check_of_training_data():
    big = torch.full((4, 3), 3e38)  # finite, but the sum overflows: checked exactly, accepted
    assert _prepare((big,), torch.device("cpu"), torch.float32, "training")[0].shape == (4, 3)
    for bad, what in ((float("nan"), "NaN or inf in 1 values"), (float("inf"), "NaN or inf in 1 values")):
        x = torch.zeros(5, 2)
        x[3, 1] = bad
        with pytest.raises(InputError, match=what):
            _prepare((x,), torch.device("cpu"), torch.float32, "training")


# -- compile_step: the recorded step against the eager one ----------------------------------------------------------

def _fit(compile_step, epochs=2, family="vae", out=None, resume=False, callbacks=(), loss=None, fuse_step=False):
    torch.manual_seed(0)
    if family == "vae":
        ds = load_dataset("digits", binarize="dynamic", seed=0)
        m = VAE(ds.dim, 3, [16])
        kw = dict(transform=ds.batch_transform())
    else:
        ds = load_dataset("moons", seed=0)
        m = DDPM(2, timesteps=50, hidden=(16, 16), t_per_step=4)
        kw = {}
    res = fit_svi(m, ds.x_train[:230], test=ds.x_test[:60], epochs=epochs, batch_size=50, progress=False,
                  compile_step=compile_step, out_dir=out, resume=resume, callbacks=callbacks, loss=loss, seed=1,
                  fuse_step=fuse_step, **kw)
    return res.history, torch.cat([p.detach().flatten() for p in m.parameters()])


@pytest.mark.parametrize("family", ["vae", "ddpm"])
def test_compile_step_gives_the_eager_numbers(family):
    """Dynamic binarization, a last minibatch of 30 (run eagerly: it occurs once per epoch), held-out terms."""
    eager, p_eager = _fit(False, 3, family)
    recorded, p_recorded = _fit(True, 3, family)
    assert [(h["train_elbo"], h["test_elbo"]) for h in recorded] == [(h["train_elbo"], h["test_elbo"]) for h in eager]
    assert torch.equal(p_recorded, p_eager)


def test_compile_step_with_warmup_iwae_and_particles():
    """The KL weight changes every epoch (a recording per weight); IWAE repeats the batch k times; the Monte Carlo
    ELBO runs the encoder once per particle on the same x (not merged: the gradients would round otherwise)."""
    for name, kw in (("analytic", dict(beta=2.0, warmup_epochs=2)), ("iwae", dict(particles=3)),
                     ("elbo", dict(particles=2))):
        eager, p0 = _fit(False, 3, loss=make_objective(name, **kw))
        recorded, p1 = _fit(True, 3, loss=make_objective(name, **kw))
        assert [h["train_elbo"] for h in recorded] == [h["train_elbo"] for h in eager]
        assert torch.equal(p0, p1)


def test_compile_step_resume_ends_where_uninterrupted_run_ends(tmp_path):
    full, p_full = _fit(True, 4, out=tmp_path / "a")

    def stop_at_2(epoch, record, model):
        if epoch == 2:
            raise StopTraining

    _fit(True, 4, out=tmp_path / "b", callbacks=[stop_at_2])
    resumed, p_resumed = _fit(True, 4, out=tmp_path / "b", resume=True)
    assert [h["train_elbo"] for h in resumed] == [h["train_elbo"] for h in full]
    assert torch.equal(p_resumed, p_full)


def _has_cxx() -> bool:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return bool(get_cpp_compiler())
    except Exception:
        return False


@pytest.mark.skipif(not _has_cxx(), reason="fuse_step on CPU needs a C++ compiler for torch.compile")
def test_fuse_step_compiles_the_recording_and_gives_the_eager_numbers_up_to_rounding(monkeypatch):
    """The DDPM chain ELBO's step compiled by inductor: the same random draws (torch's generators), so the epoch
    ELBOs and the trained weights agree with the eager step's to float rounding (fused arithmetic rounds otherwise);
    one compile: the full minibatch of 50 (the last of 30, recorded in epoch 2, runs recorded and unfused)."""
    from ppl_dgm.inference import compiled

    compiles, fused = [], compiled._fused
    monkeypatch.setattr(compiled, "_fused", lambda graph, inputs: compiles.append(fused(graph, inputs)) or
                        compiles[-1])
    eager, p_eager = _fit(False, 3, "ddpm")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to the unfused recording
        got, p_got = _fit(None, 3, "ddpm", fuse_step=True)
    assert len(compiles) == 1 and all(hasattr(c, "compile_seconds") for c in compiles)
    for h, e in zip(got, eager):
        assert h["train_elbo"] == pytest.approx(e["train_elbo"], rel=1e-5)
        assert h["test_elbo"] == pytest.approx(e["test_elbo"], rel=1e-5)
    assert torch.allclose(p_got, p_eager, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not _has_cxx(), reason="fuse_step on CPU needs a C++ compiler for torch.compile")
def test_fuse_step_compiles_once_across_a_warmup(monkeypatch):
    """KL warm-up over 2 of 3 epochs: a recording per weight (0, 0.5, 1), but only the last weight's full minibatch
    is compiled; the warm-up epochs run recorded, unfused. The fit follows the eager one to float rounding."""
    from ppl_dgm.inference import compiled

    compiles, fused = [], compiled._fused
    monkeypatch.setattr(compiled, "_fused", lambda graph, inputs: compiles.append(fused(graph, inputs)) or
                        compiles[-1])
    warm = make_objective("analytic", warmup_epochs=2)
    eager, p_eager = _fit(False, 3, loss=warm)
    got, p_got = _fit(None, 3, loss=warm, fuse_step=True)
    assert len(compiles) == 1
    assert [h["train_elbo"] for h in got] == pytest.approx([h["train_elbo"] for h in eager], rel=1e-5)
    assert [h["test_elbo"] for h in got] == pytest.approx([h["test_elbo"] for h in eager], rel=1e-5)
    assert torch.allclose(p_got, p_eager, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fuse_step_on_cuda_follows_the_recorded_step():
    """On CUDA inductor writes Triton kernels; torch's generators still draw (fallback_random), so the fused fit
    follows the recorded one to float rounding."""
    import warnings

    histories = []
    for fuse in (False, True):
        torch.manual_seed(0)
        x = torch.rand(64, 10).bernoulli()
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            fit = fit_svi(VAE(10, 2, [8]), x, epochs=3, batch_size=16, device="cuda", progress=False, seed=1,
                          compile_step=True, fuse_step=fuse)
        histories.append([h["train_elbo"] for h in fit.history])
    assert histories[1] == pytest.approx(histories[0], rel=1e-5)


def test_fuse_step_that_cannot_compile_warns_and_runs_the_recording_unfused(monkeypatch):
    """No C++ compiler (here: torch.compile raising): one warning saying why, then the recorded step's numbers, bit
    for bit; fuse_step with compile_step=False is refused in one line."""
    def no_compiler(*args, **kw):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nsecond line")

    monkeypatch.setattr(torch, "compile", no_compiler)
    recorded, p_recorded = _fit(True, 2)
    with pytest.warns(RuntimeWarning, match=r"fuse_step: torch.compile could not compile the recorded step "
                                            r"\(RuntimeError: InvalidCxxCompiler: No working C\+\+ compiler found\); "
                                            r"the fit goes on with the recorded step unfused"):
        got, p_got = _fit(None, 2, fuse_step=True)
    assert [h["train_elbo"] for h in got] == [h["train_elbo"] for h in recorded] and torch.equal(p_got, p_recorded)
    with pytest.raises(InputError, match=r"^fuse_step compiles the recorded step: expected compile_step True or None "
                                         r"with fuse_step; got compile_step=False$"):
        _fit(False, 1, fuse_step=True)


def test_recorded_loss_records_a_shape_on_its_second_call():
    torch.manual_seed(0)
    vae = VAE(10, 2, [8])
    rec = RecordedLoss(AnalyticELBO(), vae.model, vae.guide, {"model": vae}, collect_params({"model": vae}))
    x = torch.rand(8, 10).bernoulli()
    rec(None, None, x)
    assert list(rec.graphs.values()) == [False]  # first call: eager, nothing recorded
    rec(None, None, x)
    assert len(list(rec.graphs.values())[0].graph.graph.nodes) > 10


class _Tabled(nn.Module):
    """A float64 table cast to float32 at every call (work on a buffer alone), a BatchNorm whose running statistics
    the step writes into, a zeros_like and an expand to a tensor's own shape."""

    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.linspace(0.5, 2.0, 6, dtype=torch.float64))
        self.lin, self.norm = nn.Linear(3, 3), nn.BatchNorm1d(3)

    def model(self, x):
        scale = self.table.to(torch.float32)[:3].sqrt()
        loc = self.norm(self.lin(x)) * scale
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(loc + z, scale.expand(3)).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.lin(x), 1.0).to_event(1))


def _ops(graph, name):
    return [n for n in graph.graph.nodes if n.op == "call_function" and n.target.__name__.startswith(name)]


def test_recording_computes_buffer_work_once_and_again_when_a_buffer_changes():
    """The cast of the table moves to the prelude and is recomputed after the table is written into or replaced;
    the BatchNorm's running statistics (written by the step) stay in the step; every value is the eager one."""
    torch.manual_seed(0)
    m, x = _Tabled(), torch.randn(16, 3)
    rec = RecordedLoss(AnalyticELBO().differentiable_loss, m.model, m.guide, {"m": m}, collect_params({"m": m}))
    rec(None, None, x)
    rec(None, None, x)
    replay = list(rec.graphs.values())[0]
    assert _ops(replay.prelude, "_to_copy") and not _ops(replay.graph, "_to_copy")
    assert _ops(replay.graph, "_native_batch_norm") or _ops(replay.graph, "native_batch_norm")
    for change in (None, lambda: m.table.mul_(2.0), lambda: setattr(m, "table", m.table + 1.0)):
        if change is not None:
            change()
        stats = (m.norm.running_mean.clone(), m.norm.running_var.clone())
        torch.manual_seed(1)
        recorded = rec(None, None, x)
        after = (m.norm.running_mean.clone(), m.norm.running_var.clone())
        m.norm.running_mean.copy_(stats[0]), m.norm.running_var.copy_(stats[1])
        torch.manual_seed(1)
        with pyro.validation_enabled(False):
            eager = AnalyticELBO().differentiable_loss(m.model, m.guide, x)
        assert torch.equal(recorded, eager)
        assert torch.equal(after[0], m.norm.running_mean) and torch.equal(after[1], m.norm.running_var)


def test_recording_drops_identities_and_keeps_the_gradients():
    """No expand to a tensor's own shape and no product with 1 is left in a DDPM step; values and gradients are
    those of the eager step bit for bit."""
    torch.manual_seed(0)
    m, x = DDPM(2, timesteps=50, hidden=(16, 16), t_per_step=4), torch.randn(32, 2)
    rec = RecordedLoss(AnalyticELBO().differentiable_loss, m.model, m.guide, {"m": m}, collect_params({"m": m}))
    rec(None, None, x)
    rec(None, None, x)
    graph = list(rec.graphs.values())[0].graph
    for node in _ops(graph, "expand"):
        assert tuple(node.args[0].meta["val"].shape) != tuple(node.meta["val"].shape)
    assert not [n for n in _ops(graph, "mul") if len(n.args) == 2 and n.args[1] == 1]
    values = []
    for fn in (lambda: rec(None, None, x), lambda: AnalyticELBO().differentiable_loss(m.model, m.guide, x)):
        m.zero_grad()
        torch.manual_seed(3)
        with pyro.validation_enabled(False):
            loss = fn()
        loss.backward()
        values.append((loss.detach(), [p.grad.clone() for p in m.parameters()]))
    assert torch.equal(values[0][0], values[1][0])
    assert all(torch.equal(a, b) for a, b in zip(values[0][1], values[1][1]))


class _ReadsValues(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            loc = self.w if float(x.sum()) > 0 else -self.w   # a Python decision on a tensor's value
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(self, x):
        pass


def test_compile_step_refuses_what_a_graph_cannot_hold():
    x = torch.rand(20, 4)

    with pytest.raises(InputError, match=r"could not be recorded as a graph \(the program reads a tensor.s value in "
                                         r"Python at test_svi_fast.py:\d+\)"):
        fit_svi(_ReadsValues(), x, epochs=2, batch_size=10, progress=False, compile_step=True)

    def model(x):
        loc = pyro.param("loc", torch.zeros(4))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    with pytest.raises(InputError, match=r"compile_step needs every trained tensor on a module; got .*loc"):
        fit_svi(model, x, guide=lambda x: None, epochs=1, progress=False, compile_step=True)


def test_conditional_families_record_and_check_every_label_once():
    """The steps of the CVAE and of a conditional DDPM record (their labels checked by check_data before the fit, not
    in the step): the eager numbers; a label out of range in a late minibatch or in the held-out rows is refused
    before any step, recorded or not."""
    from ppl_dgm.models import CVAE
    from ppl_dgm.models.classifier import Classifier

    torch.manual_seed(0)
    x, y = torch.rand(46, 10).bernoulli(), torch.arange(46) % 3
    for make in (lambda: CVAE(10, 3, 2, [8]), lambda: DDPM(10, timesteps=20, hidden=(8,), n_classes=3)):
        params = []
        for compile_step in (False, True):
            torch.manual_seed(0)
            family = make()
            fit_svi(family, (x, y), epochs=3, batch_size=8, progress=False, compile_step=compile_step)
            params.append(torch.cat([p.detach().flatten() for p in family.parameters()]))
        assert torch.equal(params[0], params[1])
    bad = y.clone()
    bad[-1] = 3
    for data, test in (((x, bad), None), ((x, y), (x, bad)), ((x, y.float() + 0.5), None)):
        with pytest.raises(InputError, match=r"expected labels in 0..2; got 0..3|expected integer class labels; got "
                                             r"non-integer values such as 0.5"):
            fit_svi(CVAE(10, 3, 2, [8]), data, test=test, epochs=2, batch_size=8, progress=False, compile_step=True)
    # the other conditional families: a classifier failed inside torch's gather, a DDPM read label C as the null one
    for family in (Classifier(10, 3, hidden=[8]), DDPM(10, timesteps=20, hidden=(8,), n_classes=3)):
        with pytest.raises(InputError, match=r"expected labels in 0..2; got 0..3"):
            fit_svi(family, (x, bad), epochs=2, batch_size=8, progress=False)
    with pytest.raises(InputError, match=r"a conditional cvae needs labels y \(integers 0..C-1\): fit it on"):
        fit_svi(CVAE(10, 3, 2, [8]), x, epochs=2, batch_size=8, progress=False)


def _count_recordings(monkeypatch):
    """A list that grows by one per recording ``RecordedLoss.record`` makes."""
    made, record = [], RecordedLoss.record

    def counted(self, batch):
        made.append(batch[0].shape)
        return record(self, batch)

    monkeypatch.setattr(RecordedLoss, "record", counted)
    return made


def test_compile_step_by_default_records_a_family_in_a_long_fit(monkeypatch):
    """compile_step=None: a VAE fit of RECORD_AFTER steps or more is recorded (a graph per minibatch shape: 8 and
    the last 6 of each epoch) and gives the eager numbers; a shorter fit is not recorded."""
    import ppl_dgm.inference.svi as svi

    monkeypatch.setattr(svi, "RECORD_AFTER", 24)
    made = _count_recordings(monkeypatch)
    x = torch.rand(46, 10).bernoulli()
    params = []
    for compile_step, epochs in ((None, 4), (False, 4), (None, 3)):
        torch.manual_seed(0)
        vae = VAE(10, 2, [8])
        fit_svi(vae, x, epochs=epochs, batch_size=8, progress=False, compile_step=compile_step)  # 6 steps per epoch
        params.append(torch.cat([p.detach().flatten() for p in vae.parameters()]))
        assert made == [(8, 10), (6, 10)], (compile_step, epochs)
    assert torch.equal(params[0], params[1])


def test_compile_step_by_default_leaves_your_programs_eager(monkeypatch):
    """Your own model function, your own guide, your own objective, a subclass of a family: run eagerly unless
    compile_step=True; a GAN (its own step) as well."""
    import ppl_dgm.inference.svi as svi
    from ppl_dgm.inference.svi import _records_by_default

    monkeypatch.setattr(svi, "RECORD_AFTER", 1)
    made = _count_recordings(monkeypatch)
    torch.manual_seed(0)
    vae, x = VAE(10, 2, [8]), torch.rand(16, 10).bernoulli()

    class MyVAE(VAE):
        pass

    class MyELBO(AnalyticELBO):
        pass

    assert _records_by_default(vae, None, None) and _records_by_default(vae, None, make_objective("iwae", particles=2))
    assert not _records_by_default(MyVAE(10, 2, [8]), None, None)
    assert not _records_by_default(vae, vae.guide, None)
    assert not _records_by_default(vae, None, MyELBO())
    assert not _records_by_default(vae.model, None, None)
    fit_svi(MyVAE(10, 2, [8]), x, epochs=2, batch_size=8, progress=False)
    fit_svi(vae, x, guide=vae.guide, epochs=2, batch_size=8, progress=False)
    assert made == []
    fit_svi(MyVAE(10, 2, [8]), x, epochs=2, batch_size=8, progress=False, compile_step=True)
    assert made == [(8, 10)]

    class MyRecordedVAE(VAE):
        records_step = True  # a subclass that keeps the promise says so

    fit_svi(MyRecordedVAE(10, 2, [8]), x, epochs=2, batch_size=8, progress=False)
    assert made == [(8, 10), (8, 10)]


def test_a_step_that_cannot_be_recorded_by_default_warns_and_goes_on_eagerly():
    torch.manual_seed(0)
    x = torch.rand(8, 4)

    m = _ReadsValues()
    loss = AnalyticELBO().differentiable_loss
    rec = RecordedLoss(loss, m.model, m.guide, {"m": m}, collect_params({"m": m}), strict=False)
    rec(None, None, x)
    with pytest.warns(RuntimeWarning, match=r"could not be recorded .*test_svi_fast.py:\d+\); the fit goes on "
                                            r"eagerly"):
        value = rec(None, None, x)
    assert rec.eager and torch.equal(value, loss(m.model, m.guide, x))
    rec(None, None, x[:4])
    rec(None, None, x[:4])  # no key records again
    assert rec.eager and not any(rec.graphs.values())


def test_cli_compile_step_same_run_or_one_line_refusal(tmp_path, capsys):
    import json

    from .conftest import run_cli

    tiny = ["--epochs", "2", "--hidden", "8", "--latent-dim", "2", "--quiet"]
    histories = []
    for i, flag in enumerate(([], ["--compile-step"], ["--no-compile-step"])):
        code, _, _ = run_cli(["fit", "vae", *tiny, *flag, "--out", tmp_path / f"vae{i}"], capsys)
        assert code == 0
        histories.append([h["train_elbo"] for h in json.loads((tmp_path / f"vae{i}" / "history.json").read_text())])
        stored = json.loads((tmp_path / f"vae{i}" / "config.json").read_text())["train"]["compile_step"]
        assert stored == [None, True, False][i]
    assert histories[0] == histories[1] == histories[2]
    if _has_cxx():  # --fuse-step: stored, and the same fit to float rounding
        code, _, _ = run_cli(["fit", "vae", *tiny, "--fuse-step", "--out", tmp_path / "fused"], capsys)
        assert code == 0 and json.loads((tmp_path / "fused" / "config.json").read_text())["train"]["fuse_step"]
        fused = [h["train_elbo"] for h in json.loads((tmp_path / "fused" / "history.json").read_text())]
        assert fused == pytest.approx(histories[0], rel=1e-5)
    code, _, err = run_cli(["fit", "vqvae", "--epochs", "1", "--hidden", "8", "--n-codes", "4", "--code-dim", "2",
                            "--compile-step", "--out", tmp_path / "vq"], capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: compile_step: the training step could not")
    assert "ppl_dgm/models/vqvae.py:" in err and not (tmp_path / "vq").exists()
