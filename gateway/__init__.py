"""riskwire: a gRPC inference gateway for real-time fraud and credit-risk decisions."""

__version__ = "0.1.0"
