"""Routing: which model version scores a transaction. Pure: no gRPC, no backends.

``decide()`` is a function of the request's keys and the route table. A table is
validated whole before it serves (``RouteTable.problems``, ``problems_against``);
``canary`` judges a canary's window and ``store`` versions every accepted change.
"""

from router.canary import (
    ArmWindow,
    CanaryAction,
    CanaryVerdict,
    apply_verdict,
    evaluate,
    psi,
)
from router.diff import diff_tables
from router.routes import (
    AmountRange,
    ArmRole,
    ArmSpec,
    Assignment,
    CanaryGuards,
    CanarySpec,
    Decision,
    FallbackSpec,
    MatchSpec,
    RouteSpec,
    RouteTable,
    RouteTableError,
    ShadowSpec,
    Thresholds,
    decide,
    default_table,
    load_table,
    load_table_file,
    parse_table,
)
from router.store import (
    ChangeKind,
    ConfigChange,
    RouteStore,
    StaleConfigVersion,
    VersionedTable,
)

__all__ = [
    "AmountRange",
    "ArmRole",
    "ArmSpec",
    "ArmWindow",
    "Assignment",
    "CanaryAction",
    "CanaryGuards",
    "CanarySpec",
    "CanaryVerdict",
    "ChangeKind",
    "ConfigChange",
    "Decision",
    "FallbackSpec",
    "MatchSpec",
    "RouteSpec",
    "RouteStore",
    "RouteTable",
    "RouteTableError",
    "ShadowSpec",
    "StaleConfigVersion",
    "Thresholds",
    "VersionedTable",
    "apply_verdict",
    "decide",
    "default_table",
    "diff_tables",
    "evaluate",
    "load_table",
    "load_table_file",
    "parse_table",
    "psi",
]
