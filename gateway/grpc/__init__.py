"""Thin gRPC transports: convert wire messages, call the data plane, map errors."""
