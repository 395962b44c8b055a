"""Routing: which model version scores a transaction. Pure: no gRPC, no backends.

``decide()`` is a function of the request's keys and the route table. The table
is validated whole before it serves (``RouteTable.validate_against``).
"""

from router.routes import (
    ArmRole,
    ArmSpec,
    Decision,
    FallbackSpec,
    RouteSpec,
    RouteTable,
    ShadowSpec,
    Thresholds,
    decide,
    default_table,
    load_table,
)

__all__ = [
    "ArmRole",
    "ArmSpec",
    "Decision",
    "FallbackSpec",
    "RouteSpec",
    "RouteTable",
    "ShadowSpec",
    "Thresholds",
    "decide",
    "default_table",
    "load_table",
]
