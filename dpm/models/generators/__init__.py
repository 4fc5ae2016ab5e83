"""Scenario generators: historical, filtered historical, Monte Carlo and named stresses."""
from __future__ import annotations

from dpm._util.lazy import lazy_exports

_EXPORTS = {
    "CRYPTO_STRESS_EVENTS": "dpm.models.generators.stress",
    "StressEvent": "dpm.models.generators.stress",
    "filtered_historical_scenarios": "dpm.models.generators.historical",
    "historical_scenarios": "dpm.models.generators.historical",
    "historical_stress_scenarios": "dpm.models.generators.stress",
    "hypothetical_scenarios": "dpm.models.generators.stress",
    "mc_scenarios": "dpm.models.generators.montecarlo",
    "stress_event_table": "dpm.models.generators.stress",
    "t_copula_tail_dependence": "dpm.models.generators.montecarlo",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
