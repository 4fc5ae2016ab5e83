"""Private compiled kernels of dpm. Use the public modules (dpm.pricing, dpm.engines.margin, ...) instead."""
