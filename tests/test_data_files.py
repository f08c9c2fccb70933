"""Data files: every bad .npy/.npz is one InputError line; which rows train; fingerprints."""

import hashlib
import pickle

import numpy as np
import pytest
import torch

from ppl_dgm.data import fingerprint, load_dataset
from ppl_dgm.data.images import load_array_file
from ppl_dgm.errors import InputError

from .conftest import run_cli

RNG = np.random.default_rng(0)
GOOD = RNG.random((10, 3))


def _npy_bytes(arr):
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _write(path, content):
    """Write ``content``: bytes, str, an array (.npy) or a dict of arrays (.npz)."""
    if isinstance(content, dict):
        np.savez(path, **content, allow_pickle=True)
    elif isinstance(content, np.ndarray):
        path.write_bytes(_npy_bytes(content))
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path


OBJ = np.array([{"a": 1}, None], dtype=object)
BAD_FILES = [
    ("obj.npy", OBJ, "obj.npy: expected a numeric array; got an object array "
                     "(pickled Python objects are never loaded)"),
    ("text.npy", "1 2 3\n4 5 6\n", "text.npy: expected a NumPy .npy or .npz file; got a text file starting "
                                    "'1 2 3\\n4"),
    ("trunc.npy", _npy_bytes(GOOD)[:-20], "trunc.npy: expected a readable NumPy .npy/.npz file; got a truncated or "
                                          "corrupt file (Failed to read all data"),
    ("header.npy", _npy_bytes(GOOD)[:30], "header.npy: expected a readable NumPy .npy/.npz file; got a truncated"),
    ("empty.npy", b"", "empty.npy: expected a NumPy .npy or .npz file; got an empty file (0 bytes)"),
    ("random.npy", bytes(range(1, 200, 3)), "random.npy: expected a NumPy .npy or .npz file; got unrecognised bytes "
                                            "starting 0x0104070a0d101316"),
    ("pickle.npy", pickle.dumps([1, 2]), "pickle.npy: expected a NumPy .npy or .npz file; got a Python pickle "
                                         "(never loaded"),
    ("empty.npz", b"", "empty.npz: expected a NumPy .npy or .npz file; got an empty file (0 bytes)"),
    ("objx.npz", {"x": OBJ}, "objx.npz (x): expected a numeric array; got an object array"),
    ("objy.npz", {"x": GOOD[:2], "y": OBJ}, "objy.npz (y): expected a numeric array; got an object array"),
    ("objt.npz", {"x": GOOD, "x_test": OBJ}, "objt.npz (x_test): expected a numeric array; got an object array"),
    ("garbage.npz", b"PK\x03\x04" + b"junk" * 10, "garbage.npz: expected a readable NumPy .npy/.npz file; got a "
                                                  "truncated or corrupt file (File is not a zip file)"),
    ("nox.npz", {"a": GOOD}, "nox.npz: expected a .npz with an array 'x' (and optional 'y', 'x_test', 'y_test'); "
                             "got arrays ['a']"),
    ("yt.npz", {"x": GOOD, "y_test": np.arange(2)}, "yt.npz: expected 'x_test' with the labels 'y_test'; "
                                                    "got 'y_test' alone"),
    ("complex.npy", GOOD + 1j, "complex.npy: expected real numbers; got complex values (dtype complex128)"),
    ("cy.npz", {"x": GOOD[:3], "y": np.arange(3) + 0j}, "cy.npz (y): expected real numbers; got complex values"),
    ("fy.npz", {"x": GOOD[:4], "y": np.array([0, 1.5, 2.99, 1])}, "fy.npz (y): expected finite integer labels "
                                                                  "(e.g. 0, 1 or 1.0, 2.0); got 1.5 at index 1 "
                                                                  "(2 such values)"),
    ("nany.npz", {"x": GOOD[:3], "y": np.array([0, np.nan, 2])}, "nany.npz (y): expected finite integer labels "
                                                                 "(e.g. 0, 1 or 1.0, 2.0); got nan at index 1"),
    ("ny.npz", {"x": GOOD, "y": np.arange(4)}, "ny.npz (y): expected 10 labels of shape (10,), one per example; "
                                               "got shape (4,)"),
    ("y2d.npz", {"x": GOOD, "y": np.zeros((10, 1))}, "expected 10 labels of shape (10,), one per example; "
                                                     "got shape (10, 1)"),
    ("rank5.npy", np.ones((2, 1, 3, 3, 1)), "rank5.npy: expected an array of shape (N, D), (N, H, W) or "
                                            "(N, C, H, W) with rank <= 4; got shape (2, 1, 3, 3, 1)"),
    ("rank1.npy", np.ones(5), "with rank >= 2; got shape (5,)"),
    ("text.npz", {"x": np.array(["a", "b"])}, "text.npz: expected a numeric array; got dtype <U1"),
    ("xt.npz", {"x": GOOD, "x_test": np.ones((2, 4))}, "xt.npz (x_test): expected examples of shape (3,) as in the "
                                                       "training data; got (4,)"),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_is_one_input_error(tmp_path, monkeypatch, name, content, message):
    monkeypatch.chdir(tmp_path)  # messages name the path as given
    _write(tmp_path / name, content)
    with pytest.raises(InputError) as info:
        load_dataset(path=name)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "pickled data" not in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="^--data: expected a .npy or .npz file; got '.*nope.npy', which does not "
                                         "exist$"):
        load_dataset(path=tmp_path / "nope.npy")
    with pytest.raises(InputError, match="which is not a file$"):
        load_dataset(path=tmp_path)
    np.save(tmp_path / "a.npy", GOOD)
    with pytest.raises(InputError, match="^--test-data: expected a .npy or .npz file; got .*which does not exist$"):
        load_dataset(path=tmp_path / "a.npy", test_path=tmp_path / "b.npy")


def test_empty_file_at_the_cli_exits_2(tmp_path, capsys):
    (tmp_path / "empty.npy").write_bytes(b"")
    code, _, err = run_cli(["fit", "vae", "--data", tmp_path / "empty.npy", "--out", tmp_path / "r"], capsys)
    assert code == 2 and err.strip().endswith("expected a NumPy .npy or .npz file; got an empty file (0 bytes)")
    assert len(err.strip().splitlines()) == 1


def test_labels_integral_floats_and_negatives_pass(tmp_path):
    np.savez(tmp_path / "d.npz", x=GOOD[:4], y=np.array([1.0, 2.0, -1.0, 0.0]), x_test=GOOD[:2],
             y_test=np.array([True, False]))
    ds = load_dataset(path=tmp_path / "d.npz")
    assert ds.y_train.dtype == torch.int64 and ds.y_train.tolist() == [1, 2, -1, 0]
    assert ds.y_test.tolist() == [1, 0]


def test_rank4_images(tmp_path):
    np.save(tmp_path / "c.npy", RNG.random((6, 3, 4, 5)))
    ds = load_dataset(path=tmp_path / "c.npy", val_fraction=0)
    assert ds.kind == "image" and ds.shape == (3, 4, 5) and ds.x_train.shape == (6, 60)


# --- which rows train -------------------------------------------------------------------------------------


def test_val_fraction_holds_out_seeded_rows(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.arange(20.0).reshape(10, 2), y=np.arange(10))
    ds = load_dataset(path=tmp_path / "d.npz", seed=1, val_fraction=0.3)
    assert ds.x_train.shape == (7, 2) and ds.x_test.shape == (3, 2)
    # every row is in exactly one split, its label with it
    rows = torch.cat([ds.x_train, ds.x_test])[:, 0].div(2).long()
    assert sorted(rows.tolist()) == list(range(10))
    assert torch.equal(torch.cat([ds.y_train, ds.y_test]), rows)
    assert "(0.3 of the rows, seed 1)" in ds.summary()
    again = load_dataset(path=tmp_path / "d.npz", seed=1, val_fraction=0.3)
    assert torch.equal(ds.x_test, again.x_test)
    np.save(tmp_path / "two.npy", GOOD[:2])
    most = load_dataset(path=tmp_path / "two.npy", val_fraction=0.99)  # at least one row trains
    assert len(most.x_train) == 1 and len(most.x_test) == 1


def test_val_fraction_zero_trains_on_every_row(tmp_path):
    np.savez(tmp_path / "d.npz", x=GOOD, y=np.arange(10))
    ds = load_dataset(path=tmp_path / "d.npz", val_fraction=0)
    assert torch.equal(ds.x_train, torch.as_tensor(GOOD, dtype=torch.float32))  # all rows, in order
    assert ds.x_test.shape == (0, 3) and ds.y_test.shape == (0,) and ds.y_test.dtype == torch.int64
    assert ds.summary() == f"{tmp_path / 'd.npz'}: 10 train / 0 test (none: val_fraction=0), example shape (3,), " \
                           f"binarize=none"
    img = load_dataset("digits", val_fraction=0, binarize="static")  # binarizing an empty test split is fine
    assert img.x_train.shape == (1797, 64) and img.x_test.shape == (0, 64) and img.y_test.shape == (0,)
    toy = load_dataset("moons", val_fraction=0, n_toy=50)
    assert toy.x_train.shape == (50, 2) and toy.x_test.shape == (0, 2) and toy.y_test is None


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_val_fraction_range(bad):
    with pytest.raises(InputError, match=f"^val_fraction: expected a number in \\[0, 1\\); got {bad}$"):
        load_dataset("moons", n_toy=20, val_fraction=bad)


def test_own_test_split_ignores_val_fraction(tmp_path):
    np.savez(tmp_path / "d.npz", x=GOOD, x_test=GOOD[:4])
    ds = load_dataset(path=tmp_path / "d.npz", val_fraction=0.5)
    assert ds.x_train.shape == (10, 3) and ds.x_test.shape == (4, 3)
    assert f"(the x_test of {tmp_path / 'd.npz'})" in ds.summary()


def test_test_path_rows_are_held_out(tmp_path):
    np.save(tmp_path / "train.npy", GOOD)
    np.save(tmp_path / "test.npy", GOOD[:3] + 1)
    ds = load_dataset(path=tmp_path / "train.npy", test_path=tmp_path / "test.npy", val_fraction=0.5)
    assert ds.x_train.shape == (10, 3) and torch.allclose(ds.x_test, torch.as_tensor(GOOD[:3] + 1).float())
    assert f"(the rows of {tmp_path / 'test.npy'})" in ds.summary()
    # an .npz test file gives its x_test (and y_test) if it has one, else its x and y
    np.savez(tmp_path / "t1.npz", x=GOOD[:5], y=np.arange(5), x_test=GOOD[:2], y_test=np.array([7, 8]))
    ds = load_dataset(path=tmp_path / "train.npy", test_path=tmp_path / "t1.npz")
    assert ds.x_test.shape == (2, 3) and ds.y_test.tolist() == [7, 8]
    np.savez(tmp_path / "t2.npz", x=GOOD[:5], y=np.arange(5))
    ds = load_dataset(path=tmp_path / "train.npy", test_path=tmp_path / "t2.npz")
    assert ds.x_test.shape == (5, 3) and ds.y_test.tolist() == [0, 1, 2, 3, 4]
    # a named dataset without an official split takes a test file too
    np.save(tmp_path / "d.npy", np.zeros((4, 8, 8)))
    ds = load_dataset("digits", test_path=tmp_path / "d.npy")
    assert ds.x_train.shape == (1797, 64) and ds.x_test.shape == (4, 64)


def test_test_path_refused(tmp_path):
    np.save(tmp_path / "train.npy", GOOD)
    np.save(tmp_path / "wide.npy", np.ones((3, 4)))
    with pytest.raises(InputError, match=r"wide.npy: expected examples of shape \(3,\) as in the training data; "
                                         r"got \(4,\)$"):
        load_dataset(path=tmp_path / "train.npy", test_path=tmp_path / "wide.npy")
    np.savez(tmp_path / "own.npz", x=GOOD, x_test=GOOD)
    with pytest.raises(InputError, match="^--test-data: expected data without a test split of their own; "
                                         ".*own.npz already has the x_test of .*own.npz$"):
        load_dataset(path=tmp_path / "own.npz", test_path=tmp_path / "train.npy")
    (tmp_path / "e.npy").write_bytes(b"")
    with pytest.raises(InputError, match="e.npy: expected a NumPy .npy or .npz file; got an empty file"):
        load_dataset(path=tmp_path / "train.npy", test_path=tmp_path / "e.npy")


def test_load_array_file_for_evaluation(tmp_path):
    np.savez(tmp_path / "d.npz", x=GOOD, y=np.arange(10))
    x, y, x_te, y_te, shape = load_array_file(tmp_path / "d.npz", 0, evaluation=True)
    assert x.shape == (0, 3) and y is None and x_te.shape == (10, 3) and y_te.tolist() == list(range(10))
    assert shape == (3,)


# --- fingerprints -----------------------------------------------------------------------------------------


def test_fingerprint(tmp_path, monkeypatch):
    raw = RNG.bytes(3000)
    (tmp_path / "f.npy").write_bytes(raw)
    monkeypatch.chdir(tmp_path)
    fp = fingerprint("f.npy")
    assert fp == {"path": str((tmp_path / "f.npy").resolve()), "size": 3000,
                  "sha256": hashlib.sha256(raw).hexdigest()}
    assert fingerprint("f.npy", chunk=7) == fp  # streamed in chunks
    (tmp_path / "f.npy").write_bytes(raw[:-1] + b"!")
    assert fingerprint("f.npy")["sha256"] != fp["sha256"]
    with pytest.raises(InputError, match="^expected a data file to fingerprint; got '.*nope', which is not a file$"):
        fingerprint(tmp_path / "nope")
