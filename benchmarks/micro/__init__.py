"""Micro-benchmarks: pieces of the server timed in-process, native against reference."""
