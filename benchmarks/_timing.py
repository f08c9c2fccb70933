"""Shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this folder is on sys.path)."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path


class Clock:
    """Wall and process-CPU seconds of a block (the machine may be shared: CPU time is the fair figure)."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0

    def as_dict(self) -> dict:
        return {"wall_seconds": round(self.wall, 1), "cpu_seconds": round(self.cpu, 1)}


def pin_threads(threads: int) -> None:
    """Bind this process (and every thread it starts: XLA's, OpenMP's, the BLAS') to ``threads`` cores; with one,
    also turn XLA's Eigen threading off.  Call before torch, NumPy's BLAS or JAX start their pools."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()


def machine(**extra) -> dict:
    """CPU model, cores, Python and the versions of torch, Pyro and JAX (those imported), for every JSON; ``extra``
    adds the script's own settings."""
    info_file = Path("/proc/cpuinfo")
    lines = info_file.read_text().splitlines() if info_file.exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    # a virtual machine may name every host alike ("AMD EPYC"): the widest vector unit and the clock tell them apart
    simd = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), "unknown")
    mhz = next((float(ln.split(":", 1)[1]) for ln in lines if ln.startswith("cpu MHz")), None)
    info = {"cpu": cpu, "widest_simd": simd, "cpu_mhz": mhz, "cores": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version()}
    for name in ("torch", "pyro", "jax"):
        if name in sys.modules:
            info[name] = sys.modules[name].__version__
    return {**info, **extra}


def best_seconds(f, repeats: int = 20) -> float:
    """The best of ``repeats`` calls of ``f`` (after one untimed), each waited for (JAX dispatches asynchronously)."""
    import jax

    jax.block_until_ready(f())
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f())
        best = min(best, time.perf_counter() - t)
    return best


def dense_float64_peaks(sizes=(1024, 2048), repeats: int = 5) -> dict:
    """GF/s of an n x n float64 product, the best of ``repeats`` (after one untimed), in MKL (torch) and XLA (JAX):
    ``{"1024": {"mkl_gflops": ..., "xla_gflops": ...}, ...}``.  Turns on ``jax_enable_x64``."""
    import jax
    import jax.numpy as jnp
    import torch

    jax.config.update("jax_enable_x64", True)
    out = {}
    for n in sizes:
        a, b = (torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(i)) for i in (0, 1))
        ja, jb = jnp.asarray(a.numpy()), jnp.asarray(b.numpy())
        mm = jax.jit(lambda x, y: x @ y)
        out[str(n)] = {"mkl_gflops": 2 * n**3 / best_seconds(lambda a=a, b=b: a @ b, repeats) / 1e9,
                       "xla_gflops": 2 * n**3 / best_seconds(lambda mm=mm, ja=ja, jb=jb: mm(ja, jb), repeats) / 1e9}
    return out
