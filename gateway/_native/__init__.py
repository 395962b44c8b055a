"""Compiled extensions (built by setup.py); import them through gateway.features.dispatch."""
