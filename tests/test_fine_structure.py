"""Fine structure on 2-D toys (issue 11 item 6): coordinate features, EMA of the weights, the rings and spirals."""

import numpy as np
import pytest
import torch

from ppl_dgm.data import DATASETS, sample_toy
from ppl_dgm.inference import fit_svi
from ppl_dgm.inference.callbacks import EMA
from ppl_dgm.inference.checkpoint import load_checkpoint
from ppl_dgm.models import DDPM
from ppl_dgm.models.diffusion import DDPMConfig
from ppl_dgm.nn import CoordinateFeatures, EpsMLP


def test_coordinate_features_shape_and_frequencies():
    f = CoordinateFeatures(2, 3)
    x = torch.tensor([[0.5, -1.0]])
    out = f(x)
    assert out.shape == (1, 2 * (1 + 2 * 3)) == (1, f.out_dim)
    args = torch.tensor([0.5, -1.0, 1.0, -2.0, 2.0, -4.0])      # 2^k x_d, k-major
    torch.testing.assert_close(out[0], torch.cat([x[0], args.sin(), args.cos()]))
    assert torch.equal(CoordinateFeatures(2, 0)(x), x)
    net = EpsMLP(2, (16, 16), coord_freqs=4)
    assert net.inp.in_features == 18 and net(torch.zeros(5, 2), torch.tensor(3)).shape == (5, 2)


def test_ema_is_the_bias_corrected_average():
    d, seq = 0.7, [torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([-2.0]), torch.tensor([5.0])]
    ema, p = EMA(d), {"w": torch.zeros(1)}
    for value in seq:
        p["w"].copy_(value)
        ema.update(p)
    n = len(seq)
    closed = (1 - d) / (1 - d**n) * sum(d ** (n - k) * v for k, v in enumerate(seq, 1))
    torch.testing.assert_close(ema.shadow["w"], closed)
    with ema.applied(p):
        torch.testing.assert_close(p["w"], closed)
    assert p["w"].item() == 5.0
    with pytest.raises(ValueError):
        EMA(1.0)


def _fit(out, epochs, resume=False):
    x = torch.as_tensor(sample_toy("rings", 256, 0))
    torch.manual_seed(0)
    m = DDPM(2, timesteps=20, hidden=(16, 16), coord_freqs=2)
    res = fit_svi(m, x, epochs=epochs, batch_size=64, lr=1e-2, ema=0.9, out_dir=out, resume=resume,
                  progress=False)
    return m, res


def test_ema_checkpoint_and_exact_resume(tmp_path):
    full, _ = _fit(tmp_path / "full", 3)
    _fit(tmp_path / "part", 2)
    state = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert state["ema"]["updates"] == 8
    assert not torch.equal(state["model"]["net.inp.weight"], state["ema"]["train"]["net.inp.weight"])
    resumed = DDPM(2, timesteps=20, hidden=(16, 16), coord_freqs=2)
    x = torch.as_tensor(sample_toy("rings", 256, 0))
    fit_svi(resumed, x, epochs=3, batch_size=64, lr=1e-2, ema=0.9, out_dir=tmp_path / "part", resume=True,
            progress=False)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    final = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    torch.testing.assert_close(final["model"]["net.inp.weight"], full.net.inp.weight.detach())  # the average


def test_vector_defaults():
    from ppl_dgm.data import load_dataset

    cfg = DDPMConfig().resolve(load_dataset("rings", n_toy=100))
    assert cfg.ema == 0.999 and cfg.coord_freqs > 0


def test_new_toys():
    assert {"rings", "two-spirals"} <= set(DATASETS)
    x = sample_toy("rings", 20_000, 0)
    assert x.shape == (20_000, 2) and x.dtype == np.float32
    r = np.linalg.norm(x, axis=1)
    ring = np.clip(np.round(r / 0.8), 1, 5)
    assert set(np.unique(ring)) == {1, 2, 3, 4, 5}
    np.testing.assert_allclose(np.std(r - 0.8 * ring), 0.08, rtol=0.05)
    np.testing.assert_allclose(np.bincount(ring.astype(int))[1:] / len(r), np.full(5, 0.2), atol=0.01)  # equal rings
    s = sample_toy("two-spirals", 5000, 1)
    assert s.shape == (5000, 2) and np.abs(s).max() < 4.5
    np.testing.assert_array_equal(sample_toy("two-spirals", 10, 3), sample_toy("two-spirals", 10, 3))
