"""Run every ```python block of README.md and docs/*.md, so documented examples cannot rot.

Blocks of one file run in order in one namespace (later blocks may use earlier names), in a
temporary working directory.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.S | re.M)


def _blocks(path: Path) -> list[str]:
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


# market-data.md fits vol surfaces to real chains (scipy): the sanitizer run in .ci/run skips it
_SLOW_DOCS = {"market-data.md"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.name in _SLOW_DOCS else p
                                  for p in DOCS if _blocks(p)], ids=lambda p: p.name)
def test_markdown_examples_run(path: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    for k, block in enumerate(_blocks(path)):
        code = compile(block, f"{path.name}[block {k}]", "exec")
        exec(code, namespace)  # noqa: S102 - executing our own documentation


def test_readme_has_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python -m dpm" in text
    assert 'pip install -e ".[test]"' in text and "python -m pytest" in text
