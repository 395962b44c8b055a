"""What changed between two route tables, one line per change, for people and audit.

Lines start with the route's name: ``cards: fraud-gbdt v4 canary 10 -> 20``,
``cards: shadow fraud-mlp v1 100% -> 50%``, ``cards: deadline_ms 8 -> 10``,
``cards: match.country [] -> [US, CA]``, ``rest: route added (...)``.
"""

from __future__ import annotations

from typing import Any

from router.routes import ArmSpec, RouteSpec, RouteTable, ShadowSpec

_UNSET = "(unset)"


def diff_tables(old: RouteTable, new: RouteTable) -> list[str]:
    """Human-readable changes from ``old`` to ``new``; empty when they route alike."""
    lines: list[str] = []
    old_routes = {r.name: r for r in old.routes}
    new_routes = {r.name: r for r in new.routes}
    lines += [f"{r.name}: route removed" for r in old.routes if r.name not in new_routes]
    for route in new.routes:
        before = old_routes.get(route.name)
        if before is None:
            lines.append(f"{route.name}: route added ({_summary(route)})")
        else:
            lines += _route_diff(before, route)
    kept_old = [r.name for r in old.routes if r.name in new_routes]
    kept_new = [r.name for r in new.routes if r.name in old_routes]
    if kept_old != kept_new:
        # The first match wins, so order is routing.
        lines.append(f"routes reordered: {', '.join(kept_old)} -> {', '.join(kept_new)}")
    return lines


def _summary(route: RouteSpec) -> str:
    arms = ", ".join(_arm(a) for a in route.arms)
    text = f"arms {arms}"
    if route.shadows:
        text += "; shadows " + ", ".join(_shadow(s) for s in route.shadows)
    if not route.match.catch_all:
        criteria = _flatten(route.match.model_dump(mode="json", exclude_defaults=True))
        text = "match " + ", ".join(f"{k}={_fmt(v)}" for k, v in criteria.items()) + "; " + text
    return text


def _arm(arm: ArmSpec) -> str:
    return f"{arm.model} v{arm.version} {arm.role} {_fmt(arm.weight)}"


def _shadow(shadow: ShadowSpec) -> str:
    return f"shadow {shadow.model} v{shadow.version} {_fmt(shadow.percent)}%"


def _route_diff(old: RouteSpec, new: RouteSpec) -> list[str]:
    name = new.name
    lines: list[str] = []
    old_arms = {(a.model, a.version): a for a in old.arms}
    new_arms = {(a.model, a.version): a for a in new.arms}
    lines += [f"{name}: {_arm(a)} removed" for k, a in old_arms.items() if k not in new_arms]
    for key, arm in new_arms.items():
        was = old_arms.get(key)
        if was is None:
            lines.append(f"{name}: {_arm(arm)} added")
        elif was.role != arm.role:
            lines.append(
                f"{name}: {arm.model} v{arm.version} {was.role} {_fmt(was.weight)} -> "
                f"{arm.role} {_fmt(arm.weight)}"
            )
        elif was.weight != arm.weight:
            lines.append(
                f"{name}: {arm.model} v{arm.version} {arm.role} {_fmt(was.weight)} -> "
                f"{_fmt(arm.weight)}"
            )
    old_shadows = {(s.model, s.version): s for s in old.shadows}
    new_shadows = {(s.model, s.version): s for s in new.shadows}
    lines += [
        f"{name}: {_shadow(s)} removed" for k, s in old_shadows.items() if k not in new_shadows
    ]
    for key, shadow in new_shadows.items():
        was_shadow = old_shadows.get(key)
        if was_shadow is None:
            lines.append(f"{name}: {_shadow(shadow)} added")
        elif was_shadow.percent != shadow.percent:
            lines.append(
                f"{name}: shadow {shadow.model} v{shadow.version} "
                f"{_fmt(was_shadow.percent)}% -> {_fmt(shadow.percent)}%"
            )
    skip = {"name", "arms", "shadows"}
    before = _flatten(old.model_dump(mode="json", exclude=skip))
    after = _flatten(new.model_dump(mode="json", exclude=skip))
    for field in [*before, *(f for f in after if f not in before)]:
        was_text, now_text = _fmt(before.get(field)), _fmt(after.get(field))
        if was_text != now_text:
            note = (
                " (every sticky assignment reshuffles)" if field in ("salt", "sticky_key") else ""
            )
            lines.append(f"{name}: {field} {was_text} -> {now_text}{note}")
    return lines


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _fmt(value: Any) -> str:
    if value is None:
        return _UNSET
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)
