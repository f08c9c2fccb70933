import gzip
import struct

import numpy as np
import pytest
import torch

from ppl_dgm.data import DATASETS, TOY_MIXTURES, TOYS, load_dataset, sample_toy
from ppl_dgm.data.images import read_idx
from ppl_dgm.errors import InputError

from .conftest import needs_fashion


def write_idx(path, arr):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[arr.dtype.type], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_digits_split_and_scale():
    ds = load_dataset("digits", seed=3)
    assert ds.x_train.shape == (1438, 64) and ds.x_test.shape == (359, 64)
    assert ds.shape == (8, 8) and ds.kind == "image"
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    again = load_dataset("digits", seed=3)
    assert torch.equal(ds.x_test, again.x_test)  # seeded split
    other = load_dataset("digits", seed=4)
    assert not torch.equal(ds.x_test, other.x_test)


def test_binarization_modes():
    static = load_dataset("digits", binarize="static", seed=0)
    assert set(static.x_train.unique().tolist()) == {0.0, 1.0}
    dyn = load_dataset("digits", binarize="dynamic", seed=0)
    assert len(dyn.x_train.unique()) == 17  # grey levels kept, binarized per batch
    assert set(dyn.x_test.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(dyn.x_test, static.x_test)  # the same seeded held-out binarization
    torch.manual_seed(0)
    b = dyn.batch_transform()(dyn.x_train[:100])
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    # mean of Bernoulli(x) draws approaches x
    m = torch.stack([dyn.batch_transform()(dyn.x_train[:200]) for _ in range(400)]).mean(0)
    assert (m - dyn.x_train[:200]).abs().max() < 0.12


def test_toy_list():
    assert list(TOYS) == ["moons", "circles", "eight-gaussians", "swiss-roll", "checkerboard", "pinwheel", "rings",
                          "two-spirals", "grid-25"]
    assert set(TOY_MIXTURES) == {"eight-gaussians", "grid-25"} and set(TOYS) <= set(DATASETS)


@pytest.mark.parametrize("name", list(TOYS))
def test_toys_seeded(name):
    a = load_dataset(name, seed=1, n_toy=1000)
    b = load_dataset(name, seed=1, n_toy=1000)
    assert a.x_train.shape == (800, 2) and a.x_test.shape == (200, 2) and a.kind == "vector"
    assert torch.equal(a.x_train, b.x_train)
    assert a.x_train.abs().max() < 8


def test_mixture_toys_known_centres_and_std():
    grid, ring = TOY_MIXTURES["grid-25"], TOY_MIXTURES["eight-gaussians"]
    assert grid.std == 0.05 and ring.std == 0.2
    np.testing.assert_array_equal(np.sort(grid.centres, axis=0)[::5], np.tile([-4.0, -2.0, 0.0, 2.0, 4.0], (2, 1)).T)
    assert len(np.unique(grid.centres, axis=0)) == 25
    angles = 2 * np.pi * np.arange(8) / 8
    np.testing.assert_allclose(ring.centres, 2.8 * np.stack([np.cos(angles), np.sin(angles)], 1), atol=1e-12)
    for name, (centres, std) in TOY_MIXTURES.items():
        ds = load_dataset(name, seed=0)  # 20,000 points, seeded 80/20 split
        assert ds.x_train.shape == (16_000, 2) and ds.x_test.shape == (4_000, 2) and "0.2 of the rows" in ds.summary()
        x = torch.cat([ds.x_train, ds.x_test]).double().numpy()
        nearest = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        resid = x - centres[nearest]
        np.testing.assert_allclose(resid.std(0), [std, std], rtol=0.03)
        np.testing.assert_allclose(np.bincount(nearest) / len(x), 1 / len(centres), atol=0.01)  # equal weights


def test_eight_gaussians_unchanged():
    """Other benchmarks use it: the draws must stay those of the original formula."""
    rng = np.random.default_rng(4)
    angles = 2 * np.pi * rng.integers(0, 8, 500) / 8
    old = 2.8 * np.stack([np.cos(angles), np.sin(angles)], 1) + 0.2 * rng.standard_normal((500, 2))
    np.testing.assert_array_equal(sample_toy("eight-gaussians", 500, 4), old.astype(np.float32))


def test_idx_folder_and_npz(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    tr = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    te = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", tr)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 20).astype(np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", te)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 5).astype(np.uint8))
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.x_train.shape == (20, 784) and ds.x_test.shape == (5, 784)
    np.testing.assert_allclose(ds.x_test.numpy().reshape(5, 28, 28), te / 255.0, rtol=1e-6)
    monkeypatch.setenv("PPL_DGM_DATA", str(tmp_path))
    official = load_dataset("mnist", val_fraction=0.5)  # an official split: val_fraction is ignored
    assert official.x_train.shape == (20, 784) and "(the official test split)" in official.summary()
    np.save(tmp_path / "t.npy", te)
    with pytest.raises(InputError, match="^--test-data: expected data without a test split of their own; "
                                         "mnist already has the official test split$"):
        load_dataset("mnist", test_path=tmp_path / "t.npy")
    np.savez(tmp_path / "d.npz", x=rng.random((30, 3)), y=np.arange(30), x_test=rng.random((7, 3)))
    d = load_dataset(path=tmp_path / "d.npz")
    assert d.x_train.shape == (30, 3) and d.x_test.shape == (7, 3) and d.y_train.shape == (30,)
    np.save(tmp_path / "a.npy", rng.random((50, 4, 4)))
    a = load_dataset(path=tmp_path / "a.npy", seed=0)
    assert a.kind == "image" and a.shape == (4, 4) and len(a.x_train) + len(a.x_test) == 50


def test_read_idx_rejects_truncated(tmp_path):
    write_idx(tmp_path / "x", np.zeros((3, 2, 2), np.uint8))
    raw = (tmp_path / "x").read_bytes()
    (tmp_path / "y").write_bytes(raw[:-3])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_idx(tmp_path / "y")


@pytest.mark.parametrize("arr, match", [
    (np.array([1.0, np.nan, 2.0, 3.0]).reshape(2, 2), "expected finite values; got 1 NaN"),
    (np.ones(5), "rank >= 2; got shape \\(5,\\)"),
    (np.ones((0, 3)), "expected at least one example"),
])
def test_bad_arrays(tmp_path, arr, match):
    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(InputError, match=match):
        load_dataset(path=tmp_path / "bad.npy")


def test_unknown_and_missing(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="unknown dataset 'nope'; expected one of digits"):
        load_dataset("nope")
    monkeypatch.delenv("PPL_DGM_DATA", raising=False)
    with pytest.raises(InputError, match=f"looked in {tmp_path}"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(InputError, match="values in \\[0, 1\\]"):
        load_dataset("moons", binarize="static")
    assert "fashion-mnist" in DATASETS


@needs_fashion
def test_fashion_official_split():
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.y_test.shape == (10000,) and int(ds.y_train.max()) == 9
