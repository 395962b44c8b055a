"""The atheris fuzz target for the native wire parser, its oracle and its corpora."""
