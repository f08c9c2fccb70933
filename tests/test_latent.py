"""Latent tools: interpolation endpoints, slerp geometry, traversal, attribute arithmetic, CLI PNGs."""

import pytest
import torch

from ppl_dgm.cli import main
from ppl_dgm.errors import InputError
from ppl_dgm.models import CVAE, VAE
from ppl_dgm.models.latent import (
    arithmetic,
    attribute_vector,
    encode_mean,
    interpolate,
    slerp,
    traverse,
)

from .conftest import run_cli


@pytest.fixture(scope="module")
def vae(digits):
    torch.manual_seed(0)
    return VAE(digits.dim, latent_dim=3, hidden=[16]).eval()


def test_slerp_endpoints_norm_and_angle():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0], a, atol=1e-6) and torch.allclose(path[-1], b, atol=1e-6)
    path = slerp(a, b / 2, torch.linspace(0, 1, 5))  # equal norms: on the circle, equal angular steps
    assert torch.allclose(path.norm(dim=1), torch.ones(5), atol=1e-6)
    angles = torch.atan2(path[:, 1], path[:, 0])
    assert torch.allclose(angles.diff(), torch.full((4,), torch.pi / 8), atol=1e-5)
    par = slerp(a, 3 * a, torch.tensor([0.5]))  # parallel: falls back to the straight line
    assert torch.allclose(par[0], 2 * a)


def test_interpolation_endpoints_are_reconstructions(vae, digits):
    x = digits.x_test[:2]
    rec = vae.reconstruct(x)
    for method in ("linear", "slerp"):
        path = interpolate(vae, x[0], x[1], steps=7, method=method)
        assert path.shape == (7, 64)
        assert torch.allclose(path[0], rec[0], atol=1e-5) and torch.allclose(path[-1], rec[1], atol=1e-5)
    z = encode_mean(vae, x)
    mid = interpolate(vae, x[0], x[1], steps=3, method="linear")[1]
    assert torch.allclose(mid, vae.decode_mean((z[0] + z[1]) / 2), atol=1e-5)
    with pytest.raises(InputError, match="method must be"):
        interpolate(vae, x[0], x[1], method="cubic")


def test_traverse_changes_only_one_dimension(vae, digits):
    x = digits.x_test[0]
    vals = [-2.0, 0.0, 2.0]
    grid = traverse(vae, x, vals)
    assert grid.shape == (3, 3, 64)
    z = encode_mean(vae, x[None])[0]
    z1 = z.clone()
    z1[1] = 2.0
    assert torch.allclose(grid[1, 2], vae.decode_mean(z1[None])[0], atol=1e-5)
    with pytest.raises(InputError, match="latent dimensions"):
        traverse(vae, x, vals, dims=[5])


def test_attribute_vector_is_difference_of_means_and_s0_is_reconstruction(vae, digits):
    x, y = digits.x_test, digits.y_test
    has = y == 3
    delta = attribute_vector(vae, x, has)
    z = encode_mean(vae, x)
    assert torch.allclose(delta, z[has].mean(0) - z[~has].mean(0), atol=1e-6)
    out = arithmetic(vae, x[:4], delta, range(-4, 5))
    assert out.shape == (4, 9, 64)
    assert torch.allclose(out[:, 4], vae.reconstruct(x[:4]), atol=1e-5)
    assert torch.allclose(out[0, 8], vae.decode_mean(z[:1] + 4 * delta)[0], atol=1e-5)
    with pytest.raises(InputError, match="both with and without"):
        attribute_vector(vae, x, torch.ones(len(x), dtype=torch.bool))


def test_conditional_tools_take_labels(digits):
    m = CVAE(digits.dim, latent_dim=3, hidden=[16]).eval()
    x, y = digits.x_test[:4], digits.y_test[:4]
    assert m.reconstruct(x, y).shape == (4, 64)
    assert interpolate(m, x[0], x[1], 4, "slerp", y[0], y[1]).shape == (4, 64)
    assert traverse(m, x[0], [0.0, 1.0], y=y[0]).shape == (3, 2, 64)


def test_cli_latent_commands_write_pngs(tmp_path, capsys):
    run = tmp_path / "vae"
    with pytest.raises(SystemExit) as info:
        main(["fit", "vae", "--out", str(run), "--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--quiet"])
    assert info.value.code == 0
    for tool, extra in (("reconstruct", []), ("interpolate", ["--a", "3", "--b", "7"]), ("traverse", []),
                        ("arithmetic", ["--label", "3"])):
        png = tmp_path / f"{tool}.png"
        with pytest.raises(SystemExit) as info:
            main(["latent", str(run), tool, "--out", str(png), *extra])
        assert info.value.code == 0, capsys.readouterr().err
        assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit) as info:
        main(["latent", str(run), "interpolate", "--a", "9999", "--out", str(tmp_path / "bad.png")])
    assert info.value.code == 2 and "--a: expected an index" in capsys.readouterr().err


def test_cli_interpolate_default_pair_has_different_labels(tmp_path, capsys, monkeypatch):
    """Without --a/--b: test 0 and the first test example whose label differs (digits' tests 0 and 1 are both 6)."""
    import ppl_dgm.plotting
    from ppl_dgm.data import load_dataset

    titles = []
    monkeypatch.setattr(ppl_dgm.plotting, "plot_rows", lambda rows, shape, out, title, **kw: titles.append(title))
    run = tmp_path / "vae"
    code, _, err = run_cli(["fit", "vae", "--out", run, "--epochs", "1", "--hidden", "8", "--latent-dim", "2",
                            "--quiet"], capsys)
    assert code == 0, err
    y = load_dataset("digits").y_test
    b = int((y != y[0]).nonzero()[0])
    assert y[0] == y[1] and b > 1
    code, out, _ = run_cli(["latent", run, "interpolate", "--out", tmp_path / "i.png"], capsys)
    assert code == 0 and titles[-1] == f"vae: test 0 (label {int(y[0])}) -> test {b} (label {int(y[b])})"
    code, out, _ = run_cli(["latent", run, "interpolate", "--a", "5", "--b", "2", "--out", tmp_path / "i.png"],
                           capsys)
    assert code == 0 and titles[-1] == f"vae: test 5 (label {int(y[5])}) -> test 2 (label {int(y[2])})"


def test_partner_without_labels_is_the_next_example():
    from ppl_dgm.cli.latent import _partner

    assert _partner(0, None, 5) == 1 and _partner(4, None, 5) == 0 and _partner(0, None, 1) == 0
    assert _partner(1, torch.tensor([3, 3, 3]), 3) == 2  # one label only: the next example
    assert _partner(0, torch.tensor([3, 3, 1, 2]), 4) == 2
