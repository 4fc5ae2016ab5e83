"""The codes shared by the C kernels (dpm/_core/dpm_types.h) and their Python mirrors agree."""
from __future__ import annotations

import re
from pathlib import Path

import dpm
from dpm.engines import plan
from dpm.market.specs import Kind
from dpm.models import scenarios
from dpm.models.risk_matrix import AGGREGATIONS

HEADER = Path(dpm.__file__).parent / "_core" / "dpm_types.h"


def _enums() -> dict[str, int]:
    text = HEADER.read_text()
    out = {}
    for body in re.findall(r"enum\s*\{(.*?)\};", text, re.S):
        body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
        for name, value in re.findall(r"(DPM_\w+)\s*=\s*(\d+)", body):
            out[name] = int(value)
    return out


def test_python_mirrors_of_the_kernel_codes():
    c = _enums()
    assert {k.name: int(k) for k in Kind} == {
        "SPOT": c["DPM_SPOT"], "FUTURE": c["DPM_FUTURE"], "PERPETUAL": c["DPM_PERPETUAL"], "OPTION": c["DPM_OPTION"]}
    assert (plan.CONV_NONE, plan.CONV_MUL_PRICE, plan.CONV_DIV_PRICE) == (
        c["DPM_CONV_NONE"], c["DPM_CONV_MUL_PRICE"], c["DPM_CONV_DIV_PRICE"])
    assert (scenarios.VOL_RELATIVE, scenarios.VOL_ABSOLUTE) == (c["DPM_VOL_RELATIVE"], c["DPM_VOL_ABSOLUTE"])
    assert (scenarios.FLAG_EXTENDED, scenarios.FLAG_EXTREME, scenarios.FLAG_DAMPENED, scenarios.FLAG_PADDING) == (
        c["DPM_FLAG_EXTENDED"], c["DPM_FLAG_EXTREME"], c["DPM_FLAG_DAMPENED"], c["DPM_FLAG_PADDING"])
    assert AGGREGATIONS == {"sum": c["DPM_AGG_SUM"], "sqrt_corr": c["DPM_AGG_SQRT_CORR"],
                            "joint": c["DPM_AGG_JOINT"], "pnl_offset": c["DPM_AGG_PNL_OFFSET"],
                            "spread": c["DPM_AGG_SPREAD"]}


def test_every_code_of_the_header_has_a_mirror():
    mirrored = {"DPM_SPOT", "DPM_FUTURE", "DPM_PERPETUAL", "DPM_OPTION", "DPM_CONV_NONE", "DPM_CONV_MUL_PRICE",
                "DPM_CONV_DIV_PRICE", "DPM_VOL_RELATIVE", "DPM_VOL_ABSOLUTE", "DPM_FLAG_EXTENDED",
                "DPM_FLAG_EXTREME", "DPM_FLAG_DAMPENED", "DPM_FLAG_PADDING", "DPM_AGG_SUM", "DPM_AGG_SQRT_CORR",
                "DPM_AGG_JOINT", "DPM_AGG_PNL_OFFSET", "DPM_AGG_SPREAD"}
    assert set(_enums()) == mirrored


def test_extension_modules_have_type_stubs():
    core = Path(dpm.__file__).parent / "_core"
    for pyx in core.glob("*.pyx"):
        assert (core / f"{pyx.stem}.pyi").exists(), pyx.name
