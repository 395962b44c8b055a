"""Checks of deploy/: the real linters where they are installed, structure everywhere.

The tools (``make deploy-tools``): promtool, yamllint, check-jsonschema,
kubernetes-validate, hadolint, helm and terraform. Each test that needs one skips,
naming it, when it is missing, so a machine without them passes honestly; the
structural checks (metric names, dashboard panels, schema coverage, Dockerfile user,
Terraform variables) need nothing but Python. Tools are looked up in
``$RISKWIRE_DEPLOY_TOOLS`` (default build/deploy-tools: bin/ and venv/bin/), then PATH.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "riskwire"
RULES = DEPLOY / "prometheus" / "rules.yaml"
RULES_TESTS = DEPLOY / "prometheus" / "tests" / "rules_test.yaml"
DASHBOARD = DEPLOY / "grafana" / "riskwire.json"
DOCKERFILE = DEPLOY / "Dockerfile"
TERRAFORM = DEPLOY / "terraform"
ENVIRONMENTS = ("dev", "staging", "production")
TOOLS = Path(os.environ.get("RISKWIRE_DEPLOY_TOOLS", ROOT / "build" / "deploy-tools"))
# The chart's lowest supported Kubernetes (Chart.yaml kubeVersion) and a current one.
KUBERNETES_VERSIONS = ("1.27.0", "1.35.0")

# What riskwire exports on /metrics (the telemetry contract); histograms also as
# _bucket, _count and _sum series.
HISTOGRAMS = {"riskwire_stage_duration_seconds"}
METRICS = HISTOGRAMS | {
    "riskwire_requests_total",
    "riskwire_errors_total",
    "riskwire_fallbacks_total",
    "riskwire_shed_requests_total",
    "riskwire_expired_rows_total",
    "riskwire_batches_total",
    "riskwire_batch_rows_total",
    "riskwire_queue_rows",
    "riskwire_inflight_requests",
    "riskwire_drift_bin_observations_total",
    "riskwire_drift_reference_ratio",
    "riskwire_drift_psi",
    "riskwire_drift_window_samples",
    "riskwire_performance_precision",
    "riskwire_performance_recall",
    "riskwire_performance_auc",
    "riskwire_performance_degraded",
    "riskwire_outcomes_total",
    "riskwire_predictions_dropped_total",
    "riskwire_fairness_disparate_impact_ratio",
    "riskwire_fairness_equalized_odds_difference",
    "riskwire_shadow_compared_total",
    "riskwire_shadow_agreements_total",
    "riskwire_shadow_flips_total",
    "riskwire_shadow_shed_total",
    "riskwire_canary_weight",
    "riskwire_canary_transitions_total",
    "riskwire_audit_queue_records",
    "riskwire_audit_queue_capacity",
    "riskwire_audit_queue_full_total",
}
METRIC_NAME = re.compile(r"\briskwire_[a-z_]+")
# Sections of the rendered config.yaml that gateway.settings.Settings may not have yet
# while their work lands; each is checked as soon as Settings has it.
PENDING_SECTIONS = {"audit"}


# --- tools ---------------------------------------------------------------------------


def tool(name: str) -> str | None:
    path = os.pathsep.join(
        [str(TOOLS / "bin"), str(TOOLS / "venv" / "bin"), os.environ.get("PATH", "")]
    )
    return shutil.which(name, path=path)


def need(name: str) -> str:
    found = tool(name)
    if found is None:
        pytest.skip(f"{name} is not installed (make deploy-tools installs it)")
    return found


def run(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    command = " ".join(args)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def values_files() -> list[Path]:
    return [CHART / "values.yaml", *(CHART / f"values-{e}.yaml" for e in ENVIRONMENTS)]


@functools.cache
def render(*args: str) -> str:
    """``helm template`` of the chart with ``args`` (values files, --set ...)."""
    return run(need("helm"), "template", "riskwire", str(CHART), "--namespace", "riskwire", *args)


def manifests(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def env_args(environment: str) -> tuple[str, ...]:
    return ("-f", str(CHART / f"values-{environment}.yaml"))


# Every optional part of the chart switched on at once.
EVERYTHING = (
    "--set",
    "admin.tls.enabled=true,admin.tls.secretName=riskwire-admin-tls",
    "--set",
    "secrets.source=existing,secrets.existingSecret=riskwire-secrets",
    "--set",
    "autoscaling.inflight.enabled=true,service.data.headless=true",
    "--set",
    "networkPolicy.egress.otlp.enabled=true,telemetry.otlp.endpoint=http://otel:4317",
    "--set",
    "networkPolicy.egress.kafka.enabled=true,networkPolicy.egress.kafka.cidrs={10.20.0.0/24}",
    "--set",
    "models.volume.persistentVolumeClaim.claimName=riskwire-models",
    "--set",
    "monitoring.serviceMonitor.enabled=true,monitoring.prometheusRule.enabled=true",
    "--set",
    "podDisruptionBudget.minAvailable=2,routes.existingConfigMap=routes-from-git",
)
VARIANTS = {e: env_args(e) for e in ENVIRONMENTS} | {"everything": EVERYTHING}


# --- Prometheus rules ----------------------------------------------------------------


def rules() -> Iterator[dict[str, Any]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        yield from group["rules"]


def test_rules_pass_promtool_check() -> None:
    run(need("promtool"), "check", "rules", str(RULES))


def test_rules_pass_their_promtool_unit_tests() -> None:
    """Synthetic series in, recorded values and firing alerts out (rules_test.yaml)."""
    run(need("promtool"), "test", "rules", str(RULES_TESTS))


def test_chart_carries_the_same_rules() -> None:
    copy = CHART / "files" / "prometheus-rules.yaml"
    assert copy.read_bytes() == RULES.read_bytes(), (
        f"{copy} differs from {RULES}: cp deploy/prometheus/rules.yaml {copy.relative_to(ROOT)}"
    )


def test_rules_use_only_exported_metrics() -> None:
    names = {n for rule in rules() for n in METRIC_NAME.findall(rule["expr"])}
    assert names, "no riskwire_ metric in the rules"
    assert unknown_metrics(names) == set()


def test_rules_cover_the_required_alerts() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in rules() if "alert" in rule}
    required = {
        "RiskwireLatencyBudgetBurnFast": "riskwire:slo_latency_bad:ratio_rate5m",
        "RiskwireLatencyBudgetBurnSlow": "riskwire:slo_latency_bad:ratio_rate3d",
        "RiskwireErrorBudgetBurnFast": "riskwire:slo_errors:ratio_rate5m",
        "RiskwireErrorBudgetBurnSlow": "riskwire:slo_errors:ratio_rate3d",
        "RiskwireFeatureDriftHigh": "> 0.25",
        "RiskwirePerformanceDegraded": "riskwire_performance_degraded",
        "RiskwireFallbackRateHigh": "riskwire_fallbacks_total",
        "RiskwireShedRateHigh": "riskwire_shed_requests_total",
        "RiskwireCanaryRolledBack": 'action="rollback"',
        "RiskwireAuditQueueSaturated": "riskwire_audit_queue_capacity) > 0.8",
    }
    for alert, fragment in required.items():
        assert fragment in exprs.get(alert, ""), f"{alert} should test {fragment!r}"
    drift = next(r for r in rules() if r.get("alert") == "RiskwireFeatureDriftHigh")
    assert drift["for"] == "15m"
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description"} <= rule["annotations"].keys()


def test_canary_actions_match_the_controller() -> None:
    """The rollback alert's action value is one the canary controller exports."""
    from router.canary import CanaryAction

    assert "rollback" in {a.value for a in CanaryAction}


def unknown_metrics(names: set[str]) -> set[str]:
    def base(name: str) -> str:
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
                return name.removesuffix(suffix)
        return name

    return {n for n in names if base(n) not in METRICS}


# --- Grafana dashboard ---------------------------------------------------------------


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p["targets"]]


def test_dashboard_uses_only_exported_metrics() -> None:
    names = {n for expr in dashboard_exprs() for n in METRIC_NAME.findall(expr)}
    assert unknown_metrics(names) == set()


def test_dashboard_has_the_required_panels() -> None:
    panels = dashboard_panels()
    titles = {p["title"] for p in panels}
    text = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}
    required = {
        "Traffic split per arm": "riskwire_requests_total",
        "Latency per stage, p99": "riskwire_stage_duration_seconds_bucket",
        "Drift per feature: PSI, fleet-wide over 1 h": "riskwire:drift_psi:1h",
        "Shadow agreement": "riskwire_shadow_agreements_total",
        "Fallback rate per route and reason": "riskwire_fallbacks_total",
    }
    for title, metric in required.items():
        assert title in titles, f"no panel {title!r}"
        assert metric in text[title]
    assert "by (route, arm" in text["Traffic split per arm"]
    assert "by (stage, le)" in text["Latency per stage, p99"]
    assert "feature" in text["Drift per feature: PSI over each pod's window"]


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "route", "model"} <= variables
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    # Recording rules the dashboard reads must exist.
    recorded = {r["record"] for r in rules() if "record" in r}
    used = {m for e in dashboard_exprs() for m in re.findall(r"riskwire:[a-z_]+:[a-z0-9_]+", e)}
    assert used <= recorded


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses every query (Grafana's variables replaced by plain values)."""
    promtool = need("promtool")
    substitutions = {"$__rate_interval": "5m", "$namespace": ".*", "$route": ".*", "$model": ".*"}
    group = []
    for i, expr in enumerate(dashboard_exprs()):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        group.append({"record": f"dashboard:query_{i}:check", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": group}]}))
    run(promtool, "check", "rules", str(path))


# --- YAML and values -----------------------------------------------------------------


def test_yaml_passes_yamllint() -> None:
    paths = [
        DEPLOY / "prometheus",
        DEPLOY / "docker" / "config.yaml",
        DEPLOY / ".yamllint.yaml",
        CHART / "Chart.yaml",
        *values_files(),
    ]
    run(need("yamllint"), "--strict", "-c", str(DEPLOY / ".yamllint.yaml"), *map(str, paths))


@pytest.mark.parametrize("environment", [None, *ENVIRONMENTS])
def test_values_files_match_the_schema(environment: str | None, tmp_path: Path) -> None:
    """values.yaml, and each environment's file over it (as helm merges them)."""
    checker = need("check-jsonschema")
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(merged_values(environment)))
    run(checker, "--schemafile", str(CHART / "values.schema.json"), str(values))


def test_every_value_is_in_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: Any, where: dict[str, Any], path: str) -> Iterator[str]:
        if not isinstance(node, dict):
            return
        properties = where.get("properties")
        if properties is None:  # a free-form map (labels, config, a volume source)
            return
        for key, value in node.items():
            if key not in properties:
                yield f"{path}{key}"
                continue
            child = properties[key]
            if "$ref" in child:
                child = schema["definitions"][child["$ref"].rsplit("/", 1)[1]]
            yield from walk(value, child, f"{path}{key}.")

    assert list(walk(values, schema, "")) == []


def test_values_yaml_documents_every_key() -> None:
    """Each value of values.yaml has a comment right above it, or an enclosing key has.

    A key whose value is a block of further keys needs no comment of its own when each
    of those has one.
    """
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = [
        (i, len(m.group(1)), m.group(2))
        for i, line in enumerate(lines)
        if (m := re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line))
    ]
    undocumented = []
    documented_at: dict[int, bool] = {}  # indent -> whether the key enclosing there has one
    for n, (i, indent, name) in enumerate(keys):
        documented_at = {k: v for k, v in documented_at.items() if k < indent}
        own = i > 0 and lines[i - 1].strip().startswith("#")
        covered = own or any(documented_at.values())
        block = n + 1 < len(keys) and keys[n + 1][1] > indent
        if not covered and not block:
            undocumented.append(f"{name} (line {i + 1})")
        documented_at[indent] = covered
    assert undocumented == []


# --- the Helm chart ------------------------------------------------------------------


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_helm_lint(environment: str) -> None:
    run(need("helm"), "lint", "--strict", str(CHART), *env_args(environment))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kubernetes", KUBERNETES_VERSIONS)
def test_rendered_manifests_are_valid_kubernetes(
    variant: str, kubernetes: str, tmp_path: Path
) -> None:
    """kubernetes-validate --strict: the upstream OpenAPI schemas, unknown fields refused.

    CRDs (ServiceMonitor, PrometheusRule, ExternalSecret) have no schema there; the
    PrometheusRule's content is checked by promtool below.
    """
    validate = need("kubernetes-validate")
    path = tmp_path / "rendered.yaml"
    path.write_text(render(*VARIANTS[variant]))
    run(validate, "--strict", "--quiet", "--no-warn", "-k", kubernetes, str(path))


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_deployment_probes_security_and_shutdown(environment: str) -> None:
    docs = manifests(render(*env_args(environment)))
    values = merged_values(environment)
    deployment = find(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"

    # The drain the pod is given is the drain the gateway is told to take.
    config = gateway_config(docs)
    shutdown = values["shutdown"]
    assert config["drain_grace_s"] == shutdown["drainGraceSeconds"]
    assert config["shadow"]["drain_grace_s"] == shutdown["shadowDrainGraceSeconds"]
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == ["sleep", str(shutdown["preStopSleepSeconds"])]
    assert pod["terminationGracePeriodSeconds"] >= (
        shutdown["preStopSleepSeconds"]
        + config["drain_grace_s"]
        + config["shadow"]["drain_grace_s"]
        + shutdown["marginSeconds"]
    )

    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] != 0
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert find(docs, "ServiceAccount")["automountServiceAccountToken"] is False

    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert "memory" in container["resources"]["limits"]

    # Writable: only volumes. The routes ConfigMap is a directory mount (a subPath
    # mount never sees the kubelet's updates), and the gateway watches a file in it.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/riskwire"} <= mounts.keys()
    routes_mount = mounts["/etc/riskwire/routes"]
    assert "subPath" not in routes_mount
    assert config["routes_file"].startswith(routes_mount["mountPath"] + "/")
    assert config["state_dir"].startswith("/var/lib/riskwire/")
    # The config rolls the pods; the routes must not (they are hot-reloaded).
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/config" in annotations
    assert not any("routes" in key for key in annotations)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_services_and_network_policies(environment: str) -> None:
    docs = manifests(render(*env_args(environment)))
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert set(services) == {"riskwire", "riskwire-admin", "riskwire-metrics"}
    assert [p["port"] for p in services["riskwire"]["spec"]["ports"]] == [50051]
    assert [p["port"] for p in services["riskwire-admin"]["spec"]["ports"]] == [50052]
    assert [p["port"] for p in services["riskwire-metrics"]["spec"]["ports"]] == [9464]

    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    deny = policies["riskwire-default-deny"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny

    def ingress(name: str) -> tuple[dict[str, Any], list[Any]]:
        (rule,) = policies[name]["ingress"]
        (peer,) = rule["from"]
        return peer["namespaceSelector"]["matchLabels"], [p["port"] for p in rule["ports"]]

    assert ingress("riskwire-data-plane") == (
        {"riskwire.io/role": "transaction-processor"},
        ["grpc"],
    )
    assert ingress("riskwire-admin-plane") == ({"riskwire.io/role": "operations"}, ["grpc-admin"])
    egress = policies["riskwire-egress"]["egress"]
    ports = [{p["port"] for p in rule["ports"]} for rule in egress]
    assert ports[0] == {53}
    otlp = environment != "dev"  # staging and production send traces
    assert ports[1:] == ([{4317}] if otlp else [])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("networkPolicy.egress.kafka.enabled=true", "cidrs"),
        ("secrets.source=existing", "existingSecret"),
        ("admin.tls.enabled=true", "secretName"),
        ("securityContext.readOnlyRootFilesystem=false", "readOnlyRootFilesystem"),
    ],
)
def test_chart_refuses_unsafe_or_incomplete_values(setting: str, message: str) -> None:
    """An empty Kafka peer list would open egress to everything; a writable root, a
    missing Secret: each is refused at render time, naming the value."""
    done = subprocess.run(
        [need("helm"), "template", "riskwire", str(CHART), "--set", setting],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and message in done.stderr, done.stderr


def test_production_scales_and_survives_disruption() -> None:
    docs = manifests(render(*env_args("production")))
    hpa = find(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["minReplicas"] >= 3
    kinds = {m["type"]: m for m in hpa["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    assert kinds["Pods"]["pods"]["metric"]["name"] == "riskwire_inflight_requests"
    assert find(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "replicas" not in find(docs, "Deployment")["spec"]  # the HPA owns the count
    external = find(docs, "ExternalSecret")["spec"]
    assert {d["secretKey"] for d in external["data"]} == {"admin-token", "audit-key"}
    claim = find(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    find(docs, "ServiceMonitor")


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_config_is_valid_gateway_settings(variant: str) -> None:
    """config.yaml of the ConfigMap validates as gateway.settings.Settings."""
    from gateway.settings import Settings

    config = gateway_config(manifests(render(*VARIANTS[variant])))
    missing = (config.keys() - Settings.model_fields.keys()) & PENDING_SECTIONS
    for section in missing:
        del config[section]
    Settings.model_validate(config)


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_audit_section_is_valid(variant: str) -> None:
    """The audit section, against AuditSettings itself until Settings carries it."""
    from gateway.settings import Settings

    config = gateway_config(manifests(render(*VARIANTS[variant])))
    if "audit" in Settings.model_fields:
        return  # validated whole by test_rendered_config_is_valid_gateway_settings
    try:
        from gateway.audit.settings import AuditSettings
    except ImportError:
        pytest.skip("neither Settings.audit nor gateway.audit.settings exists yet")
    AuditSettings.model_validate(config["audit"])


def test_image_config_is_valid_gateway_settings() -> None:
    from gateway.settings import Settings

    Settings.model_validate(yaml.safe_load((DEPLOY / "docker" / "config.yaml").read_text()))


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_routes_tables_are_valid(environment: str) -> None:
    from router.routes import load_table

    docs = manifests(render(*env_args(environment)))
    routes = find(docs, "ConfigMap", "riskwire-routes")["data"]["routes.yaml"]
    assert load_table(routes).routes


def test_prometheus_rule_is_the_rules_file(tmp_path: Path) -> None:
    docs = manifests(
        render(
            "--set",
            "monitoring.prometheusRule.enabled=true",
            "--set",
            "monitoring.prometheusRule.additionalAlertLabels.team=risk",
            "--set",
            "monitoring.prometheusRule.disabledAlerts={RiskwireShadowShedHigh}",
        )
    )
    groups = find(docs, "PrometheusRule")["spec"]["groups"]
    expected = yaml.safe_load(RULES.read_text())["groups"]
    for group in expected:
        group["rules"] = [r for r in group["rules"] if r.get("alert") != "RiskwireShadowShedHigh"]
        for rule in group["rules"]:
            if "alert" in rule:
                rule["labels"] = {**rule.get("labels", {}), "team": "risk"}
    assert groups == expected
    path = tmp_path / "from-chart.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    run(need("promtool"), "check", "rules", str(path))


def merged_values(environment: str | None) -> dict[str, Any]:
    """values.yaml with values-<environment>.yaml over it (maps merge, the rest replaces)."""

    def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base

    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    if environment is None:
        return values
    return merge(values, yaml.safe_load((CHART / f"values-{environment}.yaml").read_text()))


def gateway_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(
        find(docs, "ConfigMap", "riskwire-config")["data"]["config.yaml"]
    )
    return config


# --- the image -----------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (keyword, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            current = []
            stages[arguments.split()[-1]] = current
        current.append((keyword.upper(), arguments.strip()))
    return stages


def test_dockerfile_passes_hadolint() -> None:
    run(need("hadolint"), str(DOCKERFILE))


def test_dockerfile_runtime_is_non_root_and_read_only_friendly() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "runtime", "the default target (last stage) is runtime"
    assert stages["runtime"][0] == ("FROM", "runtime-base AS runtime")
    assert stages["demo"][0] == ("FROM", "runtime-base AS demo")
    base = dict(stages["runtime-base"])
    assert base["USER"] == "10001:10001"
    assert base["WORKDIR"] == "/var/lib/riskwire"
    assert "PYTHONDONTWRITEBYTECODE=1" in base["ENV"]
    assert json.loads(base["ENTRYPOINT"]) == [
        "riskwire",
        "serve",
        "--config",
        "/etc/riskwire/config.yaml",
    ]
    for stage in ("runtime", "demo"):  # nothing after the base switches back to root
        assert all(keyword != "USER" for keyword, _ in stages[stage])
    assert any("prepare-demo" in args for _, args in stages["demo-models"])
    build = " ".join(args for _, args in stages["build"])
    assert "build-essential" in build and "--no-build-isolation" in build


def test_dockerignore_files_agree_and_admit_what_is_copied() -> None:
    root_ignore = (ROOT / ".dockerignore").read_text()
    assert (DEPLOY / "Dockerfile.dockerignore").read_text() == root_ignore
    admitted = [line[1:] for line in root_ignore.splitlines() if line.startswith("!")]
    for _, arguments in [i for s in dockerfile_stages().values() for i in s if i[0] == "COPY"]:
        if "--from=" in arguments:
            continue
        for source in arguments.split()[:-1]:
            source = source.rstrip("/")
            assert any(
                source == a.removesuffix("/**") or source.startswith(a.removesuffix("**"))
                for a in admitted
            ), f"COPY {source} is not admitted by .dockerignore"


# --- Terraform -----------------------------------------------------------------------


def test_terraform_is_formatted() -> None:
    run(need("terraform"), "fmt", "-check", "-recursive", "-diff", str(TERRAFORM))


def terraform_variables() -> dict[str, bool]:
    """Declared variable -> whether it has a default."""
    text = (TERRAFORM / "variables.tf").read_text()
    blocks = re.findall(r'^variable "([a-z_]+)" \{\n(.*?)^\}', text, re.S | re.M)
    return {name: bool(re.search(r"^  default\s*=", body, re.M)) for name, body in blocks}


def test_terraform_references_declared_variables() -> None:
    declared = terraform_variables()
    used = set()
    for path in TERRAFORM.glob("*.tf"):
        used |= set(re.findall(r"\bvar\.([a-z_]+)", path.read_text()))
    assert used - declared.keys() == set()
    assert declared.keys() - used == set(), "declared but never used"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_terraform_environment_files(environment: str) -> None:
    declared = terraform_variables()
    text = (TERRAFORM / "environments" / f"{environment}.tfvars").read_text()
    given = dict(re.findall(r'^([a-z_]+)\s*=\s*"?([^"\n]*)"?', text, re.M))
    assert given.keys() - declared.keys() == set()
    required = {name for name, has_default in declared.items() if not has_default}
    # Secrets are never in a committed file: TF_VAR_admin_token, TF_VAR_audit_key.
    assert required - given.keys() == set()
    assert {"admin_token", "audit_key"} & given.keys() == set()
    assert given["environment"] == environment
    assert (CHART / f"values-{environment}.yaml").is_file()
