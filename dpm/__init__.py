"""dpm: dynamic portfolio margin for crypto derivatives."""
__version__ = "0.1.0"
