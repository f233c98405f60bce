"""Helpers for the book *Visual anomaly detection, rebuilt step by step*."""

__version__ = "0.1.0"
