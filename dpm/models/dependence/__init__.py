"""Dependence models: dynamic conditional correlation, market regimes, copulas with tail
dependence, and a learned (gradient-boosted quantile) model of next-day tail risk.

Each module has the estimation functions of its concept and a risk model with the common
interface of :mod:`dpm.models.risk_model` (``fit`` -> ``path`` / ``sample``).
"""
from __future__ import annotations

from dpm._util.lazy import lazy_exports

_EXPORTS = {
    "COPULA_FAMILIES": "dpm.models.dependence.copulas",
    "Copula": "dpm.models.dependence.copulas",
    "CopulaModel": "dpm.models.dependence.copulas",
    "DCCFit": "dpm.models.dependence.dcc",
    "DCCModel": "dpm.models.dependence.dcc",
    "GaussianHMMFit": "dpm.models.dependence.regimes",
    "LearnedTailModel": "dpm.models.dependence.learned",
    "RegimeModel": "dpm.models.dependence.regimes",
    "dcc_correlation": "dpm.models.dependence.dcc",
    "empirical_tail_dependence": "dpm.models.dependence.copulas",
    "fit_copula": "dpm.models.dependence.copulas",
    "fit_dcc": "dpm.models.dependence.dcc",
    "fit_gaussian_hmm": "dpm.models.dependence.regimes",
    "gaussian_hmm_filter": "dpm.models.dependence.regimes",
    "kendall_tau": "dpm.models.dependence.copulas",
    "pseudo_observations": "dpm.models.dependence.copulas",
    "tail_features": "dpm.models.dependence.learned",
    "walk_forward_quantiles": "dpm.models.dependence.learned",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
