"""The package layout: layers import only from layers below them; dpm 0.1 module paths still work."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import dpm

ROOT = Path(dpm.__file__).resolve().parent
#: bottom to top; a module may import from its own layer or any layer listed before it
LAYERS = ("errors", "_util", "_core", "pricing", "market", "portfolio", "models", "engines", "live", "plot",
          "service", "cli", "__main__", "_compat", "__init__")


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
    return [m for m in out if m == "dpm" or m.startswith("dpm.")]


def test_no_module_imports_from_a_layer_above_it():
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts)
        if module.endswith(".__init__"):
            module = module[: -len(".__init__")]
        own = LAYERS.index(_layer(module)) if module != "dpm" else LAYERS.index("__init__")
        for imp in _imports(path):
            if imp == "dpm":
                continue
            if LAYERS.index(_layer(imp)) > own:
                bad.append(f"{module} imports {imp}")
    assert not bad, "\n".join(bad)


def test_no_relative_imports_hide_the_layering():
    rel = [str(p) for p in ROOT.rglob("*.py") if any(
        isinstance(n, ast.ImportFrom) and n.level > 0 for n in ast.walk(ast.parse(p.read_text())))]
    assert not rel


def test_core_imports_no_python_module_of_dpm():
    for path in (ROOT / "_core").glob("*.pyx"):
        text = path.read_text()
        for line in text.splitlines():
            s = line.strip()
            if s.startswith(("import dpm", "from dpm")):
                assert "cimport" in s, f"{path.name}: {s}"


@pytest.mark.parametrize("old, name", [
    ("dpm.engine", "MarginEngine"), ("dpm.instruments", "InstrumentTable"), ("dpm.instruments", "parse_name"),
    ("dpm.accounts", "AccountBook"), ("dpm.io", "read_accounts"), ("dpm.io", "read_deribit_chain"),
    ("dpm.sample", "generate_accounts"), ("dpm.sample", "default_instruments"),
    ("dpm.sample_market", "default_market"), ("dpm.surface", "VolSurface"), ("dpm.history", "load_history"),
    ("dpm.risk_measures", "var_es"), ("dpm.risk_measures", "mc_scenarios"), ("dpm.stress", "StressEvent"),
    ("dpm.calibration", "fit_garch"), ("dpm.calibration", "scan_ranges"), ("dpm.backtest", "kupiec_pof"),
    ("dpm.models.var", "ScenarioRiskEngine"), ("dpm.results", "MarginResults"),
])
def test_old_module_paths_still_import(old, name):
    module = importlib.import_module(old)
    assert getattr(module, name) is not None


def test_top_level_names():
    for name in dpm.__all__:
        assert getattr(dpm, name) is not None


def test_the_product_stands_alone():
    """No code or doc of the repository points at files outside it (notes of the developers, machine paths)."""
    repo = ROOT.parent
    pattern = re.compile(r"/work/|\.\./shared|shared/data|METHODOLOGY\.md")
    hits = []
    for path in [*ROOT.rglob("*.py"), *ROOT.rglob("*.pyx"), *ROOT.rglob("*.h"), *(repo / "docs").glob("*.md"),
                 repo / "README.md", *(repo / "benchmarks").glob("*.py")]:
        for k, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(repo)}:{k}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)
