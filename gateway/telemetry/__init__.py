"""Per-request telemetry recorded on the serving path (histograms of latency and score)."""
