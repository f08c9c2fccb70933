"""Every figure writes a PNG for image and vector data, one or many points; what a picture must show is
checked on the returned matplotlib Figure (axes, titles, tick labels, offset text)."""

import numpy as np
import pytest

from ppl_dgm.plotting import (
    plot_ellipses,
    plot_history,
    plot_loglik,
    plot_loss_per_t,
    plot_reconstructions,
    plot_rows,
    plot_samples,
    plot_terms,
    plot_trajectory,
)

RNG = np.random.default_rng(0)
IMAGES = RNG.random((20, 64)).astype(np.float32)                 # 8x8 grey levels in [0, 1]
GAUSSIAN = RNG.normal(0.5, 0.5, (20, 64))                        # a Gaussian family's samples: outside [0, 1]
POINTS = RNG.normal(size=(300, 2))


def is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def title(fig) -> str:
    return fig.axes[0].get_title()


def history(n, train=-260.0, test=-2.0, held_out=True):
    return [{"epoch": e, "train_elbo": train + e, **({"test_elbo": test + 0.01 * e} if held_out else {})}
            for e in range(1, n + 1)]


@pytest.mark.parametrize("n", [1, 30])
def test_history_puts_objective_and_held_out_elbo_on_separate_axes(n, tmp_path):
    fig = plot_history(history(n), tmp_path / "elbo.png", title="ddpm")
    assert is_png(tmp_path / "elbo.png") and len(fig.axes) == 2
    train_ax, test_ax = fig.axes
    assert [len(line.get_xdata()) for ax in fig.axes for line in ax.lines] == [n, n]
    lo, hi = test_ax.get_ylim()
    assert lo > -10 and hi < 10                                   # not stretched to the objective's -260
    assert "held-out ELBO" in test_ax.get_title() and "objective" in train_ax.get_title()
    for ax in fig.axes:
        assert ax.yaxis.get_major_formatter().get_offset() == ""
    if n == 1:
        assert [t.get_text() for t in train_ax.get_xticklabels()] == ["1"]


def test_history_without_held_out_terms_has_one_axes(tmp_path):
    fig = plot_history(history(3, held_out=False), tmp_path / "elbo.png")
    assert is_png(tmp_path / "elbo.png") and len(fig.axes) == 1


@pytest.mark.parametrize("values", [[-1.702031784 - 7.77e-12, -1.702031784 - 7.79e-12], [14.1116],
                                    list(-3.2 + 0.1 * (1 - np.exp(-np.arange(12))))])
def test_loglik_reads_with_one_two_or_many_iterations(values, tmp_path):
    fig = plot_loglik(values, tmp_path / "loglik.png", title="gmm")
    ax = fig.axes[0]
    assert is_png(tmp_path / "loglik.png")
    assert ax.yaxis.get_major_formatter().get_offset() == ""      # no "1e-12 - 1.702" above the axis
    n = len(values)
    assert f"{n} iteration{'s' if n > 1 else ''}" in ax.get_title()
    line = ax.lines[0]
    assert line.get_marker() == "o" and line.get_markersize() > 0
    labels = [float(t.get_text().replace("\N{MINUS SIGN}", "-")) for t in ax.get_yticklabels() if t.get_text()]
    assert len(set(labels)) == len(labels) > 1                    # distinct, readable tick values
    if n == 1:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1"]


def test_image_samples_are_a_grid_and_say_how_values_outside_0_1_are_shown(tmp_path):
    fig = plot_samples(IMAGES, (8, 8), tmp_path / "a.png", "vae samples")
    assert is_png(tmp_path / "a.png") and fig.axes[0].images and "clipped" not in title(fig)
    fig = plot_samples(GAUSSIAN, (8, 8), tmp_path / "b.png", "ppca samples")
    img = fig.axes[0].images[0]
    assert img.get_array().min() >= 0 and img.get_array().max() <= 1
    frac = float(((GAUSSIAN < 0) | (GAUSSIAN > 1)).mean())
    assert "clipped to [0, 1]" in title(fig) and f"{frac:.1%}" in title(fig)


def test_samples_name_their_labels(tmp_path):
    fig = plot_samples(IMAGES, (8, 8), tmp_path / "c.png", "cvae", labels=np.arange(20) % 10)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [f"y={v}" for v in range(10)]
    assert "each column" in title(fig)
    fig = plot_samples(IMAGES[:4], (8, 8), tmp_path / "d.png", "cvae", labels=[3, 3, 3, 3])
    assert "label y = 3" in title(fig)
    fig = plot_samples(IMAGES[:5], (8, 8), tmp_path / "e.png", "cvae", labels=[4, 1, 4, 0, 2])
    assert [t.get_text() for t in fig.axes[0].texts] == ["4", "1", "4", "0", "2"]
    fig = plot_samples(POINTS, (2,), tmp_path / "f.png", "cvae", labels=np.arange(300) % 3)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [f"samples, y = {v}" for v in range(3)]
    assert all(is_png(tmp_path / f"{c}.png") for c in "cdef")


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_vector_samples_and_reconstructions_are_labelled_scatters(dim, tmp_path):
    x = RNG.normal(size=(200, dim))
    fig = plot_samples(x, (dim,), tmp_path / "s.png", "ddpm samples", reference=x + 1)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x_1" and ax.get_ylabel() == ("x_2" if dim > 1 else "density")
    assert ("of 5" in ax.get_title()) == (dim == 5)
    fig = plot_reconstructions(x, x * 0.9, (dim,), tmp_path / "r.png", n=50, title="vae reconstructions")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x_1" and "odd rows" not in ax.get_title() and "50 held-out points" in ax.get_title()
    assert is_png(tmp_path / "s.png") and is_png(tmp_path / "r.png")


def test_image_reconstructions_name_their_rows_and_an_empty_set_still_draws(tmp_path):
    fig = plot_reconstructions(IMAGES, GAUSSIAN, (8, 8), tmp_path / "r.png", n=12)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["data", "E[x|z]"] * 2 and "clipped" in ax.get_title()
    plot_reconstructions(IMAGES[:0], IMAGES[:0], (8, 8), tmp_path / "empty.png")
    assert is_png(tmp_path / "r.png") and is_png(tmp_path / "empty.png")


def test_rows_trajectory_and_chain_terms(tmp_path):
    fig = plot_rows(IMAGES[:12].reshape(2, 6, 64), (8, 8), tmp_path / "rows.png", "interpolate",
                    row_labels=["linear", "slerp"], col_labels=[str(i) for i in range(6)])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["linear", "slerp"]
    fig = plot_trajectory(np.stack([IMAGES[:3]] * 4), [30, 20, 10, 0], (8, 8), tmp_path / "ti.png")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["t=30", "t=20", "t=10", "t=0"]
    fig = plot_trajectory(np.stack([POINTS] * 3), [20, 10, 0], (2,), tmp_path / "tv.png", reference=POINTS)
    assert fig.axes[0].get_xlabel() == "x_1" and fig.axes[0].get_ylabel() == "x_2"
    plot_loss_per_t(np.r_[-4.0, np.geomspace(1, 1e-4, 99)], tmp_path / "L.png", L_T=1e-5)
    assert all(is_png(tmp_path / f) for f in ("rows.png", "ti.png", "tv.png", "L.png"))


def test_terms_keep_the_training_objective_off_the_held_out_axes(tmp_path):
    hist = [{**h, "test_reconstruction": -1.0, "test_kl": 1.0, "test_kl_sites": {"z": 1.0}} for h in history(4)]
    fig = plot_terms(hist, tmp_path / "terms.png")
    assert is_png(tmp_path / "terms.png") and fig.axes[0].lines
    assert all(min(line.get_ydata()) > -10 for line in fig.axes[0].lines)     # no -260 objective among them
    fig = plot_terms(history(2, held_out=False), tmp_path / "train.png")
    assert min(fig.axes[0].lines[0].get_ydata()) < -250


@pytest.mark.parametrize("k, cov", [(2, "full"), (8, "full"), (3, "diag"), (3, "spherical"), (2, "tied")])
def test_ellipses_for_every_covariance_type(k, cov, tmp_path):
    means = np.stack([np.cos(np.arange(k)), np.sin(np.arange(k))], 1) * 3
    covs = {"full": np.stack([np.eye(2) * 0.2] * k), "diag": np.full((k, 2), 0.2), "spherical": np.full(k, 0.2),
            "tied": np.eye(2) * 0.2}[cov]
    x = means[RNG.integers(0, k, 400)] + RNG.normal(scale=0.4, size=(400, 2))
    fig = plot_ellipses(x, np.full(k, 1 / k), means, covs, cov, tmp_path / "e.png", labels=RNG.integers(0, k, 400))
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * k and all(p.get_zorder() >= 3 for p in ax.patches)
    assert f"K={k}" in ax.get_title() and ax.get_xlabel() == "x_1" and len(ax.texts) == k
    assert is_png(tmp_path / "e.png")
