"""Calibration of risk parameters from price history: EWMA and GARCH volatility (Gaussian GARCH,
GJR-GARCH with t / skewed-t innovations, robust standard errors), realised variance and HAR,
covariance shrinkage, correlation checks and repair, implied-vol shock proxy, dynamic scan ranges
(APC).

``returns`` are daily log returns, shape ``(n,)`` or ``(n, A)``, as produced by
:meth:`dpm.market.history.PriceHistory.log_returns`; vols are per day unless a name says ``annual``.
"""
from __future__ import annotations

from dpm._util.lazy import lazy_exports

_EXPORTS = {
    "DISTRIBUTIONS": "dpm.models.calibration.innovations",
    "DynamicScanRange": "dpm.models.calibration.ranges",
    "GJRGarchFit": "dpm.models.calibration.gjr_garch",
    "GarchFit": "dpm.models.calibration.garch",
    "HARFit": "dpm.models.calibration.har",
    "Innovation": "dpm.models.calibration.innovations",
    "REALIZED_METHODS": "dpm.models.calibration.realized",
    "ShrinkageEstimate": "dpm.models.calibration.covariance",
    "VolShockProxy": "dpm.models.calibration.ranges",
    "apply_apc": "dpm.models.calibration.ranges",
    "arch_backcast": "dpm.models.calibration.gjr_garch",
    "check_correlation": "dpm.models.calibration.correlation",
    "cov_to_corr": "dpm.models.calibration.ewma",
    "ewma_correlation": "dpm.models.calibration.ewma",
    "ewma_covariance": "dpm.models.calibration.ewma",
    "ewma_variance": "dpm.models.calibration.ewma",
    "fit_garch": "dpm.models.calibration.garch",
    "fit_gjr_garch": "dpm.models.calibration.gjr_garch",
    "fit_har": "dpm.models.calibration.har",
    "fit_vol_shock_proxy": "dpm.models.calibration.ranges",
    "garch_loglik": "dpm.models.calibration.garch",
    "garch_variance": "dpm.models.calibration.garch",
    "gjr_variance": "dpm.models.calibration.gjr_garch",
    "har_design": "dpm.models.calibration.har",
    "innovation": "dpm.models.calibration.innovations",
    "ledoit_wolf": "dpm.models.calibration.covariance",
    "nearest_psd_correlation": "dpm.models.calibration.correlation",
    "realized_log_vol": "dpm.models.calibration.ranges",
    "realized_variance": "dpm.models.calibration.realized",
    "sandwich_covariance": "dpm.models.calibration.robust",
    "scale_vol_shock_to_expiry": "dpm.models.calibration.ranges",
    "scan_ranges": "dpm.models.calibration.ranges",
    "vol_shock_sizes": "dpm.models.calibration.ranges",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
