"""Pricing layer: Black-76 / Black-Scholes-Merton prices, greeks and implied volatility of linear and
inverse (coin-settled) options, over ``nogil`` SIMD kernels (see :mod:`dpm.pricing.black`)."""
from dpm.pricing.black import GREEK_NAMES, IV_FLAGS, greeks, implied_vol, option_type_sign, price

__all__ = ["price", "greeks", "implied_vol", "IV_FLAGS", "GREEK_NAMES", "option_type_sign"]
