"""Model runtimes (ONNX Runtime) and the per-model dynamic batcher."""
