"""Every ```python block of the docs runs on its own, as a user who copies that one block would run it.

Each block is one test: a fresh namespace (nothing from the page's earlier blocks, no ``__file__``),
the working directory a fresh temporary folder, and the conftest's fresh Pyro/torch state.
"""

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def blocks(page: Path) -> list[str]:
    return [textwrap.dedent(m.group(2)) for m in
            re.finditer(r"^([ \t]*)```python\n(.*?)^\1```", page.read_text(), flags=re.S | re.M)]


SNIPPETS = [pytest.param(page, i, code, id=f"{page.name}[{i + 1}]") for page in PAGES
            for i, code in enumerate(blocks(page))]


def test_some_pages_have_snippets():
    assert len(SNIPPETS) >= 20


@pytest.mark.parametrize("page, index, code", SNIPPETS)
def test_doc_snippet_runs_alone(page, index, code, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page.name}[block {index + 1}]", "exec"), {"__name__": "__main__"})
