"""Turn a pytest-benchmark JSON file into the Markdown tables of docs/benchmarks.md.

    python -m pytest benchmarks/ --benchmark-only --benchmark-json=bench.json
    python benchmarks/report.py bench.json [--group price --group greeks ...]

For every benchmark group it prints one table: implementation, workers, items per call, median and
best time per item (ns, from the ``extra_info["n"]`` each benchmark stores), the speed-up of the
fastest dpm row over each row, and, where recorded, the worst error.  Below each table it prints
the ratios the issues ask for: reference / dpm at one worker and dpm 1 worker / 2 workers.
Medians are the headline (the machine may be shared); best times show what the code can do.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict


def load(path: str) -> dict:
    with open(path) as fh:
        return json.load(fh)


def _rows(data: dict) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for b in data["benchmarks"]:
        extra = b.get("extra_info", {})
        n = extra.get("n")
        if not n:
            continue
        st = b["stats"]
        groups[b.get("group") or "default"].append({
            "impl": extra.get("impl", b["name"]),
            "workers": extra.get("workers", 1),
            "n": n,
            "unit": extra.get("unit", "option"),
            "median_ns": st["median"] / n * 1e9,
            "min_ns": st["min"] / n * 1e9,
            "rounds": st["rounds"],
            "max_err": extra.get("max_err"),
        })
    return groups


def _fmt_ns(x: float) -> str:
    if x >= 1e4:
        return f"{x / 1e3:,.1f} µs"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.2f}"


def machine_line(data: dict) -> str:
    mi = data.get("machine_info", {})
    cpu = mi.get("dpm_cpu", {})
    parts = [cpu.get("model") or mi.get("processor", "?")]
    if cpu.get("cpus"):
        parts.append(f"{cpu['cpus']} CPUs ({cpu.get('usable_cpus')} usable)")
    if cpu.get("simd"):
        parts.append(f"SIMD: {cpu['simd']}")
    parts.append(f"Python {mi.get('python_version', '?')}")
    if cpu.get("libc"):
        parts.append(cpu["libc"])
    if mi.get("dpm_libmvec") is not None:
        parts.append("libmvec " + ("on" if mi["dpm_libmvec"] else "off"))
    load = mi.get("dpm_loadavg")
    if load:
        parts.append("load average at start " + ", ".join(f"{x:.2f}" for x in load))
    date = mi.get("dpm_date") or data.get("datetime", "?")
    return f"Run {date}; " + "; ".join(parts) + "."


def table(rows: list[dict], group: str) -> str:
    dpm_rows = [r for r in rows if r["impl"].startswith("dpm")]
    best_dpm = min((r["median_ns"] for r in dpm_rows), default=None)
    has_err = any(r["max_err"] is not None for r in rows)
    unit = rows[0]["unit"]
    head = f"| implementation | workers | n | median ns/{unit} | best ns/{unit} | × fastest dpm |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if has_err:
        head += " max abs error |"
        sep += "---:|"
    out = [f"**{group}**", "", head, sep]
    for r in sorted(rows, key=lambda r: r["median_ns"]):
        ratio = r["median_ns"] / best_dpm if best_dpm else float("nan")
        line = (f"| {r['impl']} | {r['workers']} | {r['n']:,} | {_fmt_ns(r['median_ns'])} | "
                f"{_fmt_ns(r['min_ns'])} | {ratio:,.1f} |")
        if has_err:
            line += f" {r['max_err']:.1e} |" if r["max_err"] is not None else " |"
        out.append(line)
    # the ratios the issues ask for
    one = next((r for r in dpm_rows if r["workers"] == 1), None)
    two = next((r for r in dpm_rows if r["workers"] == 2), None)
    notes = []
    if one:
        for r in rows:
            if not r["impl"].startswith("dpm"):
                notes.append(f"{r['impl']} / dpm (1 worker): {r['median_ns'] / one['median_ns']:,.1f}×")
    if one and two:
        notes.append(f"dpm 1 worker / 2 workers: {one['median_ns'] / two['median_ns']:.2f}× "
                     f"(best times: {one['min_ns'] / two['min_ns']:.2f}×)")
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    return "\n".join(out)


def render(data: dict, groups: list[str] | None = None) -> str:
    rows = _rows(data)
    names = groups or list(rows)
    parts = [machine_line(data)]
    parts += [table(rows[g], g) for g in names if g in rows]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="pytest-benchmark JSON file (--benchmark-json)")
    ap.add_argument("--group", action="append", help="only these benchmark groups (repeatable)")
    args = ap.parse_args(argv)
    sys.stdout.write(render(load(args.json), args.group))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
