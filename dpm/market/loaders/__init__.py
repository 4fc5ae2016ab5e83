"""Loaders of market data saved from venues' public APIs and files."""
