"""Slow, independent reference implementations used as oracles by the tests (mpmath, pure Python)."""
