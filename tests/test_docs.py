"""Every ```python block of the docs runs (blocks of one page share a namespace)."""

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_doc_snippets_run(page, monkeypatch, tmp_path):
    blocks = [textwrap.dedent(m.group(2)) for m in
              re.finditer(r"^([ \t]*)```python\n(.*?)^\1```", page.read_text(), flags=re.S | re.M)]
    if not blocks:
        pytest.skip("no python snippets")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{page.name}[block {i + 1}]", "exec"), namespace)
