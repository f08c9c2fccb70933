"""Run directories: train any family into a folder, rebuild it from the folder, use it.

>>> from ppl_dgm import load_run                              # doctest: +SKIP
>>> run = load_run("runs/vae-digits")                         # doctest: +SKIP
>>> run.family.encoder, run.model.sample(4, mean=True).shape  # doctest: +SKIP
"""

from .diagnose import Diagnosis, diagnose_run, summary
from .quality import sample_quality_run, scorer_for
from .restore import check_restorable, restore_run
from .store import RUN_FORMAT, DataSpec, Run, default_out_dir, load_run, read_config, save_run
from .train import load_twin, train_run
from .use import evaluate_run, sample_run, trajectory_run

__all__ = ["RUN_FORMAT", "DataSpec", "Run", "load_run", "save_run", "read_config", "default_out_dir", "train_run",
           "load_twin", "evaluate_run", "sample_run", "trajectory_run", "diagnose_run", "Diagnosis", "summary",
           "restore_run", "check_restorable", "sample_quality_run", "scorer_for"]
