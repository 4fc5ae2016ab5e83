"""Solvency report: a table per scenario, Markdown / HTML with optional plots (matplotlib)."""
from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpm.engines.solvency.engine import SCENARIO_COLUMNS, SolvencyRun
from dpm.engines.solvency.exposure import BookExposure
from dpm.engines.solvency.reverse import VenueReverseStress
from dpm.engines.solvency.waterfall import SolvencyPolicy
from dpm.errors import InvalidInputError

__all__ = ["SolvencyReport"]

#: columns shown in the Markdown / HTML table (all columns are in :meth:`SolvencyReport.columns`)
SHOWN = ("scenario", "moves", "stress_loss", "accounts_liquidated", "accounts_bankrupt", "closeout_cost",
         "uncovered", "fund_used", "deleveraged", "positions_deleveraged", "socialised", "shortfall")
_COUNTS = {"accounts_loss_above_equity", "accounts_liquidated", "accounts_partially_liquidated", "accounts_bankrupt",
           "positions_closed", "positions_deleveraged", "accounts_deleveraged"}


def _fmt(name: str, v: Any) -> str:
    if isinstance(v, str):
        return v
    if name in _COUNTS:
        return f"{int(v):,}"
    v = float(v)
    return f"{v:,.0f}" if math.isfinite(v) else str(v)


class SolvencyReport:
    """Outcome of :meth:`SolvencyEngine.report <dpm.engines.solvency.engine.SolvencyEngine.report>`.

    Attributes
    ----------
    runs : list of SolvencyRun
        One per scenario set (historical stresses, each user set, the reverse-stress move).
    venue_reverse : VenueReverseStress or None
    policy : SolvencyPolicy
    model_name : str
    exposure : BookExposure
    """

    def __init__(self, runs: Sequence[SolvencyRun], venue_reverse: VenueReverseStress | None,
                 policy: SolvencyPolicy, model_name: str, exposure: BookExposure) -> None:
        self.runs = list(runs)
        self.venue_reverse = venue_reverse
        self.policy = policy
        self.model_name = model_name
        self.exposure = exposure

    @property
    def fund(self) -> float:
        return self.runs[0].fund if self.runs else math.nan

    def columns(self) -> dict[str, np.ndarray]:
        """One row per scenario: :data:`~dpm.engines.solvency.engine.SCENARIO_COLUMNS` (dict of arrays)."""
        return {c: np.concatenate([r.columns[c] for r in self.runs]) for c in SCENARIO_COLUMNS}

    def table(self) -> Any:
        """The per-scenario table: a pandas DataFrame when pandas is installed, else a dict of arrays."""
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - depends on the environment
            return self.columns()
        return pd.DataFrame(self.columns())

    # ------------------------------------------------------------------ text
    def _summary_lines(self) -> list[str]:
        ex = self.exposure
        mr = np.where(ex.maintenance_margin > 0,
                      np.where(ex.equity > 0, ex.maintenance_margin / np.where(ex.equity > 0, ex.equity, 1), np.inf), 0)
        lines = [
            f"- accounts: {len(ex):,}; total equity {float(ex.equity.sum()):,.0f} USD; maintenance margin "
            f"{float(ex.maintenance_margin.sum()):,.0f} USD ({self.model_name}); already at or below "
            f"maintenance margin: {int((mr >= 1).sum()):,}",
            f"- insurance fund: {self.fund:,.0f} USD; policy {self.policy.name!r}: "
            f"{'partial' if self.policy.partial else 'full'} liquidation to {self.policy.target.upper()} x "
            f"{self.policy.target_ratio:g}, ADL {self.policy.adl}, socialised loss {self.policy.socialise}",
        ]
        v = self.venue_reverse
        if v is not None:
            if math.isfinite(v.distance):
                lines.append(
                    f"- venue reverse stress ({v.space.metric}): the smallest move under which uncovered losses "
                    f"exceed the fund is at distance {v.distance:.3g} (Mahalanobis {v.mahalanobis:.3g}, largest "
                    f"factor move {v.percent:.1%}): {v.space.describe(v.move[None, :])[0]}; uncovered "
                    f"{v.uncovered:,.0f} USD, {v.bankrupt:,} accounts with loss above equity")
            else:
                lines.append("- venue reverse stress: no move inside the search region makes uncovered losses "
                             "exceed the fund")
        return lines

    def to_markdown(self, path: str | os.PathLike | None = None, *, plots: bool = True) -> str:
        """The report as Markdown; with ``path``, also written there with PNG plots beside it
        (``<stem>_*.png``; plots need matplotlib)."""
        cols = self.columns()
        lines = ["# Solvency report", ""] + self._summary_lines() + [""]
        lines.append("| " + " | ".join(SHOWN) + " |")
        lines.append("|" + "|".join("---" if c in ("scenario", "moves") else "---:" for c in SHOWN) + "|")
        for i in range(len(cols["scenario"])):
            lines.append("| " + " | ".join(_fmt(c, cols[c][i]).replace("|", "/") for c in SHOWN) + " |")
        lines.append("")
        lines.append("Amounts in USD. Identity per row: losses of liquidated accounts = equity consumed + fund "
                     "used + deleveraged + socialised + shortfall.")
        if path is not None:
            p = Path(path)
            if plots:
                for name, file in self.write_plots(p.parent, p.stem).items():
                    lines += ["", f"![{name}]({file.name})"]
            _write_text(p, "\n".join(lines) + "\n")
        return "\n".join(lines) + "\n"

    def to_html(self, path: str | os.PathLike | None = None, *, plots: bool = True) -> str:
        """The report as a standalone HTML page (plots embedded as PNG data when matplotlib is installed)."""
        cols = self.columns()
        rows = []
        for i in range(len(cols["scenario"])):
            cells = []
            for c in SHOWN:
                align = "" if c in ("scenario", "moves") else ' style="text-align:right"'
                cells.append(f"<td{align}>{html.escape(_fmt(c, cols[c][i]))}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        summary = "".join(f"<li>{html.escape(s[2:])}</li>" for s in self._summary_lines())
        imgs = ""
        if plots:
            imgs = "".join(f'<h2>{html.escape(k)}</h2><img alt="{html.escape(k)}" src="data:image/png;base64,{v}">'
                           for k, v in self._plots_base64().items())
        page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Solvency report</title></head><body>"
                f"<h1>Solvency report</h1><ul>{summary}</ul><table border='1' cellspacing='0' cellpadding='3'>"
                "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in SHOWN) + "</tr>" + "".join(rows)
                + f"</table><p>Amounts in USD.</p>{imgs}</body></html>\n")
        if path is not None:
            _write_text(Path(path), page)
        return page

    # ------------------------------------------------------------------ plots
    def figures(self) -> dict[str, Any]:
        """Matplotlib figures: stress loss by scenario, margin-ratio distribution, loss waterfall."""
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("SolvencyReport plots need matplotlib: pip install 'dpm[plot]'") from exc
        cols = self.columns()
        names = list(cols["scenario"])
        x = np.arange(len(names))
        figs: dict[str, Any] = {}
        fig, ax = plt.subplots(figsize=(9, 4))
        ax.bar(x - 0.2, cols["stress_loss"] / 1e6, 0.4, label="stress loss (all accounts)")
        ax.bar(x + 0.2, cols["uncovered"] / 1e6, 0.4, label="uncovered after close-out")
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_ylabel("million USD")
        ax.set_title("Stress loss by scenario")
        ax.legend()
        fig.tight_layout()
        figs["stress loss by scenario"] = fig
        fig, ax = plt.subplots(figsize=(9, 4))
        ex = self.exposure

        def ratio(mm: np.ndarray, eq: np.ndarray) -> np.ndarray:
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(mm > 0, np.where(eq > 0, mm / np.where(eq > 0, eq, 1.0), np.inf), 0.0)
            return np.sort(np.clip(r[mm > 0], 0.0, 3.0))

        r0 = ratio(ex.maintenance_margin, ex.equity)
        if r0.size:
            ax.plot(r0, np.arange(1, r0.size + 1) / r0.size, color="k", lw=2, label="before")
        for run in self.runs:
            for s, name in enumerate(run.scenarios.names):
                r = ratio(run.maintenance_after_move[:, s], run.equity_after_move[:, s])
                if r.size:
                    ax.plot(r, np.arange(1, r.size + 1) / r.size, lw=1, label=name)
        ax.axvline(1.0, color="r", ls="--", lw=1)
        ax.set_xlabel("maintenance margin / equity (clipped at 3; liquidation at 1)")
        ax.set_ylabel("fraction of accounts with margin")
        ax.set_title("Margin-ratio distribution after each move")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        figs["margin-ratio distribution"] = fig
        fig, ax = plt.subplots(figsize=(9, 4))
        bottom = np.zeros(len(names))
        for key, label in (("equity_consumed", "account equity"), ("fund_used", "insurance fund"),
                           ("deleveraged", "auto-deleveraging"), ("socialised", "socialised"),
                           ("shortfall", "venue shortfall")):
            v = np.asarray(cols[key], dtype=float) / 1e6
            ax.bar(x, v, 0.6, bottom=bottom, label=label)
            bottom += v
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_ylabel("million USD")
        ax.set_title("Who bears the losses of liquidated accounts")
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs["loss waterfall"] = fig
        return figs

    def write_plots(self, directory: str | os.PathLike, stem: str = "solvency") -> dict[str, Path]:
        """PNG files of :meth:`figures` in ``directory`` (``{stem}_<name>.png``)."""
        import matplotlib.pyplot as plt

        d = Path(directory)
        if not d.is_dir():
            raise InvalidInputError(f"directory: {str(d)!r} does not exist")
        out = {}
        for name, fig in self.figures().items():
            f = d / f"{stem}_{name.replace(' ', '_').replace('-', '_')}.png"
            fig.savefig(f, dpi=90)
            plt.close(fig)
            out[name] = f
        return out

    def _plots_base64(self) -> dict[str, str]:
        import base64
        import io

        try:
            figs = self.figures()
        except ImportError:  # pragma: no cover - depends on the environment
            return {}
        import matplotlib.pyplot as plt

        out = {}
        for name, fig in figs.items():
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=80)
            plt.close(fig)
            out[name] = base64.b64encode(buf.getvalue()).decode("ascii")
        return out


def _write_text(path: Path, text: str) -> None:
    from dpm._util.files import atomic_paths

    with atomic_paths([str(path)]) as temps:
        temps[0].write_text(text, encoding="utf-8")
