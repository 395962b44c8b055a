"""Feature encoding: spec parsing, Columns, the reference and native encoders.

See CONTRACT.md in this package for the contract shared with training and native code.
"""

from gateway.features.spec import FeatureSpec, FeatureSpecError, parse_feature_spec

__all__ = ["FeatureSpec", "FeatureSpecError", "parse_feature_spec"]
