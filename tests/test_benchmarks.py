"""The benchmark scripts stay runnable: each imports (they share helpers, e.g. ``svi_overhead``'s loops), in a
fresh process so that nothing a script sets at import reaches the other tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

IMPORT_ALL = """
import importlib, json, pathlib, sys
sys.path.insert(0, sys.argv[1])
failed = {}
for p in sorted(pathlib.Path(sys.argv[1]).glob("*.py")):
    try:
        importlib.import_module(p.stem)
    except Exception as e:
        failed[p.name] = f"{type(e).__name__}: {e}"
print(json.dumps(failed))
"""


def test_every_benchmark_script_imports():
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert len(scripts) >= 20, f"benchmarks/ holds {len(scripts)} scripts"
    r = subprocess.run([sys.executable, "-c", IMPORT_ALL, str(BENCHMARKS)], capture_output=True, text=True,
                       timeout=300, cwd=BENCHMARKS.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {}
