"""Solvency under adverse events: reverse stress, close-out, insurance fund and auto-deleveraging."""
