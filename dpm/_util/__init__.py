"""Utilities every layer may use: thread pool, input validation, lazy public names."""
