"""The gateway started the way the chart starts it: its rendered files, its layout.

``helm template`` gives the config.yaml and routes.yaml the pods get; they are laid out
under a temporary root as the kubelet lays out the volumes (the routes ConfigMap as a
directory of ``..data`` symlinks, the secrets as files, /var/lib/riskwire as the working
directory), with the container paths moved under that root, the ports at 0 and the
host 127.0.0.1. Then: the probes' endpoints answer, a routes update made the kubelet's
way (a new timestamped directory, then an atomic ``..data`` symlink swap) is applied
without a restart, and SIGTERM ends the process within the pod's grace period.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_deploy import (
    PENDING_SECTIONS,
    ROOT,
    env_args,
    find,
    manifests,
    merged_values,
    render,
)
from tests.integration.serverproc import wait_serving

ENVIRONMENT = "dev"


@dataclass
class Pod:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path
    routes_dir: Path


def kubelet_configmap_update(directory: Path, files: dict[str, str], stamp: str) -> None:
    """Write a ConfigMap volume the way the kubelet's atomic writer does."""
    payload = directory / f"..{stamp}"
    payload.mkdir()
    for name, text in files.items():
        (payload / name).write_text(text)
    swap = directory / "..data_tmp"
    swap.symlink_to(payload.name)
    swap.replace(directory / "..data")  # rename(2): atomic
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


def container_path(root: Path, path: str) -> str:
    return str(root / path.lstrip("/"))


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Iterator[Pod]:
    from gateway.settings import Settings

    docs = manifests(render(*env_args(ENVIRONMENT)))
    config_text = find(docs, "ConfigMap", "riskwire-config")["data"]["config.yaml"]
    routes_text = find(docs, "ConfigMap", "riskwire-routes")["data"]["routes.yaml"]
    config: dict[str, Any] = yaml.safe_load(config_text)
    for section in (config.keys() - Settings.model_fields.keys()) & PENDING_SECTIONS:
        del config[section]

    root = tmp_path_factory.mktemp("pod")
    workdir = root / "var" / "lib" / "riskwire"
    workdir.mkdir(parents=True)
    (root / "tmp").mkdir()
    for section in ("grpc", "admin", "metrics"):
        config[section].update(host="127.0.0.1", port=0)
    config["admin"]["token_file"] = container_path(root, config["admin"]["token_file"])
    config["state_dir"] = container_path(root, config["state_dir"])
    config["routes_file"] = container_path(root, config["routes_file"])
    config["models"]["repository"] = str(model_repository)
    if "audit" in config and config["audit"].get("enabled"):
        config["audit"]["directory"] = container_path(root, config["audit"]["directory"])
        config["audit"]["key_file"] = container_path(root, config["audit"]["key_file"])
        key = Path(config["audit"]["key_file"])
        key.parent.mkdir(parents=True)
        key.write_text("k" * 64)
    token = Path(config["admin"]["token_file"])
    token.parent.mkdir(parents=True)
    token.write_text("pod-layout-admin-token")
    routes_dir = Path(config["routes_file"]).parent
    routes_dir.mkdir(parents=True)
    kubelet_configmap_update(routes_dir, {"routes.yaml": routes_text}, "2026_11_28_00_00_00.1")
    config_path = root / "etc" / "riskwire" / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    log = root / "gateway.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HOME": str(workdir),
        "TMPDIR": str(root / "tmp"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
    }
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path)],
            cwd=workdir,  # the image's WORKDIR: relative default paths land in the volume
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    try:
        ports = announced_ports(proc, log, timeout=120.0)
        pod = Pod(proc, ports["PORT"], ports["METRICS_PORT"], log, routes_dir)
        wait_serving(f"127.0.0.1:{pod.port}", 60.0)
        yield pod
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def announced_ports(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> dict[str, int]:
    """The PORT / ADMIN_PORT / METRICS_PORT lines ``serve`` prints once bound."""
    assert proc.stdout is not None
    ports: dict[str, int] = {}
    pending = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while len(ports) < 3:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                raise AssertionError(f"no ports announced (exit {proc.poll()}):\n{log.read_text()}")
            if selector.select(remaining):
                pending += os.read(proc.stdout.fileno(), 4096)
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    key, _, value = line.decode().strip().partition(" ")
                    if key in ("PORT", "ADMIN_PORT", "METRICS_PORT"):
                        ports[key] = int(value)
    return ports


def get(pod: Pod, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{pod.metrics_port}{path}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def wait_for_log(pod: Pod, text: str, timeout: float) -> None:
    """Poll the gateway's log for ``text`` (a condition with a deadline)."""
    deadline = time.monotonic() + timeout
    while text not in pod.log.read_text():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{pod.log.read_text()}"
        assert pod.proc.poll() is None, f"gateway exited:\n{pod.log.read_text()}"
        time.sleep(0.1)


@pytest.mark.slow
def test_probe_endpoints_answer(pod: Pod) -> None:
    assert get(pod, "/healthz")[0] == 200
    assert get(pod, "/readyz")[0] == 200
    status, metrics = get(pod, "/metrics")
    assert status == 200 and "riskwire_" in metrics


@pytest.mark.slow
def test_routes_configmap_update_is_applied_in_place(pod: Pod) -> None:
    table = yaml.safe_load((pod.routes_dir / "routes.yaml").read_text())
    table["routes"][0]["salt"] = "rotated-by-configmap"
    kubelet_configmap_update(
        pod.routes_dir, {"routes.yaml": yaml.safe_dump(table)}, "2026_11_28_00_05_00.2"
    )
    wait_for_log(pod, "applied as config_version 2", timeout=30.0)
    assert pod.proc.poll() is None  # applied by the running gateway, no restart


@pytest.mark.slow
def test_sigterm_ends_within_the_grace_period(pod: Pod) -> None:
    """After preStop, SIGTERM: the gateway must be gone before the kubelet's SIGKILL."""
    shutdown = merged_values(ENVIRONMENT)["shutdown"]
    budget = (
        shutdown["drainGraceSeconds"]
        + shutdown["shadowDrainGraceSeconds"]
        + shutdown["marginSeconds"]
    )
    started = time.monotonic()
    pod.proc.send_signal(signal.SIGTERM)
    assert pod.proc.wait(budget + 5) == 0, pod.log.read_text()
    assert time.monotonic() - started <= budget, "drained past the pod's grace period"
