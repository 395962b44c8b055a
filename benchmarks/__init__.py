"""Benchmarks: micro/ (in-process timings) and load/ (drive a running server)."""
