"""Sample quality of a fitted run: the scorer classifier (trained once per dataset per machine) and the figures.

The scorer is a :class:`~ppl_dgm.models.classifier.Classifier` the package trains on the dataset's training split
by a fixed recipe (:data:`SCORER_RECIPES`): offline, no Inception weights.  :func:`scorer_for` keeps it in a cache
folder, ``$PPL_DGM_HOME/scorers/<dataset>-<digest>`` (``PPL_DGM_HOME`` defaults to ``~/.cache/ppl_dgm``), where
the digest hashes the data (both splits) and the recipe; the folder is a run directory plus ``recipe.json``: the
recipe, the fit options as resolved, the data, the held-out accuracy and the training time.
:func:`sample_quality_run` draws N samples with the run's own sampler and scores them against N held-out examples
(:func:`ppl_dgm.evaluation.quality.sample_quality`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..data import apply_binarize_to
from ..errors import InputError
from ..evaluation.quality import reconstruction_quality, sample_quality
from ..models import require
from ..models.classifier import ClassifierConfig
from ..utils import atomic_write_json
from .store import DataSpec, Run, load_run
from .train import train_run
from .use import label_args, sample_run, sampler_kwargs

# The scorers' training recipes: fit options of `ppl-dgm fit classifier` (None: the family's default).  A change
# here changes the cache digest, so every machine retrains.  Bump RECIPE_VERSION when the code behind a recipe
# changes meaning (the network, the loss).
RECIPE_VERSION = 1
SCORER_RECIPES: dict[str, dict] = {
    # clean 28x28 images (Fashion-MNIST, MNIST): two stride-2 convolutions (32, 64 channels) and a 256-unit head
    "conv28": {"arch": "conv", "noise_conditional": False, "hidden": [256], "channels": 32, "epochs": 10,
               "batch_size": 128, "lr": 1e-3, "lr_schedule": "cosine"},
    # any other labelled data (digits 8x8): the residual MLP; epochs: 100 on digits, 20 otherwise
    "mlp": {"arch": "mlp", "noise_conditional": False, "hidden": [256, 256, 256], "epochs": None, "batch_size": 128,
            "lr": 1e-3, "lr_schedule": "cosine"},
}


def scorer_recipe(shape: tuple[int, ...]) -> dict:
    """The recipe for examples of ``shape``: ``conv28`` for 28x28 single-channel images, else ``mlp``."""
    name = "conv28" if tuple(shape)[-2:] == (28, 28) and int(np.prod(shape)) == 784 else "mlp"
    return {"name": name, "version": RECIPE_VERSION, "family": "classifier", "options": dict(SCORER_RECIPES[name]),
            "data": "the dataset's training split (every row); the held-out split scores its accuracy"}


def scorer_home() -> Path:
    """``$PPL_DGM_HOME/scorers`` (``PPL_DGM_HOME`` defaults to ``~/.cache/ppl_dgm``)."""
    return Path(os.environ.get("PPL_DGM_HOME") or Path.home() / ".cache" / "ppl_dgm") / "scorers"


def _digest(ds, recipe: dict) -> str:
    h = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def scorer_for(data: DataSpec, *, recipe: dict | None = None, home: str | Path | None = None, device: str = "cpu",
               threads: int | str = 1, echo: Callable[[str], None] = print) -> Run:
    """The scorer classifier run of the data of ``data`` (grey levels: its ``binarize`` is ignored), trained into
    the cache on first use (one line says so, one how long it took) and loaded from it after.

    Parameters
    ----------
    data : DataSpec
        Labelled data: the scorer trains on their training split.
    recipe : dict, optional
        Default :func:`scorer_recipe` of the data's shape; ``options`` are ``ClassifierConfig`` fields.
    home : path, optional
        The cache folder (default :func:`scorer_home`).
    device, threads
        Of the training (:func:`ppl_dgm.runs.train_run`).
    echo : callable
        Where the two lines go.
    """
    spec = DataSpec(data.dataset, data.path, data.data_dir, "none", data.seed, data.test_path, data.val_fraction)
    ds = spec.load()
    if ds.y_train is None or ds.y_test is None or not len(ds.x_test):
        raise InputError(f"a scorer classifier needs labelled data with held-out rows; {ds.name} has "
                         f"{'no labels' if ds.y_train is None else 'no held-out rows'} (pass --scorer RUN)")
    recipe = recipe or scorer_recipe(ds.shape)
    stem = Path(ds.name).stem if spec.path else ds.name
    out = Path(home or scorer_home()) / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', stem)}-{_digest(ds, recipe)}"
    if (out / "recipe.json").is_file():
        return load_run(out, device=device)
    echo(f"training the sample-quality scorer for {ds.name} ({recipe['name']} classifier) into {out}: once per "
         f"dataset on this machine")
    wall, cpu = time.perf_counter(), time.process_time()
    run = train_run("classifier", ClassifierConfig(**recipe["options"]), spec, out=out, overwrite=True,
                    device=device, progress=False, threads=threads, echo=lambda _: None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    acc = run.model.accuracy(ds.x_test, ds.y_test)
    atomic_write_json(out / "recipe.json", {
        **recipe, "fit_options": run.config["train"], "model": run.config["model"], "data_spec": spec.as_dict(),
        "dataset": ds.summary(), "test_accuracy": acc["accuracy"], "test_log_p_y": acc["log_likelihood"],
        "wall_seconds": wall, "cpu_seconds": cpu, "threads": torch.get_num_threads(), "ppl_dgm": __version__,
        "torch": torch.__version__})
    echo(f"scorer trained in {wall:.0f} s ({cpu:.0f} CPU-s): held-out accuracy {acc['accuracy']:.4f}; reused from "
         f"{out} from now on")
    return run


def check_scorer(scorer: Run, dim: int) -> None:
    """A scorer is a classifier run on examples of ``dim`` values; anything else is refused in one line."""
    if scorer.family.name != "classifier":
        raise InputError(f"--scorer: expected a classifier run; got a {scorer.family.name!r} run ({scorer.path})")
    if scorer.model.x_dim != dim:
        raise InputError(f"--scorer: expected a classifier of examples of {dim} values (the run's); got one of "
                         f"{scorer.model.x_dim} ({scorer.path})")


def sample_quality_run(run: Run, n: int, *, scorer: Run | None = None, seed: int = 0, k: int = 3,
                       kid_subsets: int = 100, kid_subset_size: int = 1000, home: str | Path | None = None,
                       threads: int | str = 1, echo: Callable[[str], None] = print, **sample_options) -> dict:
    """Draw ``n`` samples with the run's own sampler and score them against ``n`` of its held-out examples.

    Images are scored in the features of ``scorer`` (default :func:`scorer_for` the run's data, trained on first
    use); vector data in their raw coordinates unless a ``scorer`` is given.  A latent diffusion run or a
    VQ-VAE's prior is scored on its decoded images (grey means E[x | z]) against its encoder run's held-out images as
    grey levels (however that run binarized them for training).  Samples of images are
    clipped to [0, 1].  ``sample_options`` go to :func:`ppl_dgm.runs.sample_run` (``sampler``, ``steps``, ...).

    Returns
    -------
    dict
        The figures of :func:`ppl_dgm.evaluation.quality.sample_quality` with their ``floor`` (held-out against
        training examples at the same N), ``samples_per_second``, ``sample_seconds`` (wall), ``scorer`` (its
        folder, or None), ``scorer_test_accuracy`` (from its ``recipe.json``, if any); for families with an
        encoder on images ``reconstruction``: PSNR (dB) and SSIM of E[x | z = E q(z | x)] of the n held-out
        examples (a GAN: its inversion).
    """
    require(run.family, "generative", "ppl-dgm evaluate --samples")
    src = run.decoder or run                   # decoded samples are compared with the encoder run's images
    x_all, y_all, name = src.eval_data()
    grey = run.decoder is not None             # ... as grey levels: a decoded mean E[x | z] is a grey image
    if grey:
        plain = DataSpec.from_config({**src.config["data"], "binarize": "none"}).load()
        x_all, y_all = plain.x_test, plain.y_test
    if isinstance(n, bool) or not isinstance(n, int) or not k < n <= len(x_all):
        raise InputError(f"--samples: expected an integer in {k + 1}..{len(x_all)} (as many held-out examples of "
                         f"{name} as samples, more than k={k}); got {n!r}")
    sampler_kwargs(run, sample_options.get("sampler"),  # bad sampler options are refused before a scorer trains
                   {k: v for k, v in sample_options.items() if k not in ("sampler", *_SAMPLE_KW)})
    image = len(src.shape) >= 2
    if scorer is None and image:
        scorer = scorer_for(DataSpec.from_config(src.config["data"]), home=home, device=str(run.model.device),
                            threads=threads, echo=echo)
    if scorer is not None:
        check_scorer(scorer, x_all.shape[1])
    pick = torch.as_tensor(np.random.default_rng(seed).permutation(len(x_all))[:n])
    real, y_real = x_all[pick], None if y_all is None else y_all[pick]
    start = time.perf_counter()
    fake = torch.as_tensor(sample_run(run, n, seed=seed, **sample_options)).reshape(n, -1).float()
    seconds = time.perf_counter() - start
    if image:
        fake = fake.clamp(0, 1)
    data = src.config["data"]
    train = plain.x_train if grey else apply_binarize_to(src.dataset().x_train, data.get("binarize", "none"),
                                                         data["seed"] + 1, name)
    out = {"run": str(run.path), "family": run.family.name, "data": name, "samples_per_second": n / seconds,
           "sample_seconds": seconds, "checkpoint": run.checkpoint,
           **sample_quality(None if scorer is None else scorer.model, real, fake, train, k=k,
                            kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed),
           "scorer": None if scorer is None else str(scorer.path), "scorer_test_accuracy": _accuracy(scorer)}
    if image and run.family.encoder and run.decoder is None:
        rest = label_args(run, y_real, name)
        x_hat = run.model.reconstruct(real.to(run.model.device), *rest).float().cpu().clamp(0, 1)
        out["reconstruction"] = reconstruction_quality(real, x_hat, src.shape)
    return out


_SAMPLE_KW = ("label", "guidance", "classifier", "mean")  # options of sample_run that are not the sampler's


def _accuracy(scorer: Run | None) -> float | None:
    path = None if scorer is None else scorer.path / "recipe.json"
    return json.loads(path.read_text()).get("test_accuracy") if path is not None and path.is_file() else None
