"""Start ``riskwire serve`` as a real subprocess on 127.0.0.1 and wait on gRPC health."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    port: int
    admin_port: int
    metrics_port: int
    admin_token: str
    log_path: Path
    lines: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def terminate(self, timeout: float = 30.0, already_signalled: bool = False) -> int:
        """SIGTERM (unless sent already), then wait; SIGKILL only if it will not stop."""
        if self.proc.poll() is None and not already_signalled:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            message = f"server did not stop within {timeout}s; log: {self.log()}"
            raise AssertionError(message) from None
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def write_config(directory: Path, models: Path, **sections: Any) -> Path:
    """A settings YAML for tests: every port 0, a fixed admin token, given overrides."""
    token_file = directory / "admin.token"
    token_file.write_text("test-admin-token\n")
    config: dict[str, Any] = {
        "grpc": {"host": "127.0.0.1", "port": 0},
        "admin": {"host": "127.0.0.1", "port": 0, "token_file": str(token_file)},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "models": {"repository": str(models)},
        "state_dir": str(directory / "state"),
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    path = directory / "riskwire.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_server(
    config: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 90.0
) -> ServerProcess:
    log_path = config.parent / f"server-{time.monotonic_ns()}.log"
    full_env = {**os.environ, **(env or {})}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=full_env,
        )
    ports: dict[str, int] = {}
    lines: list[str] = []
    pending = b""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while len(ports) < 3:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                raise AssertionError(
                    f"server did not announce its ports (exit {proc.poll()}): "
                    f"{log_path.read_text()}"
                )
            if selector.select(remaining):
                # os.read, not readline: a buffered reader would hide lines from select.
                pending += os.read(proc.stdout.fileno(), 4096)
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    line = raw.decode()
                    lines.append(line)
                    key, _, value = line.strip().partition(" ")
                    if key in ("PORT", "ADMIN_PORT", "METRICS_PORT"):
                        ports[key] = int(value)
    except BaseException:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        raise
    finally:
        selector.close()
    server = ServerProcess(
        proc,
        ports["PORT"],
        ports["ADMIN_PORT"],
        ports["METRICS_PORT"],
        "test-admin-token",
        log_path,
        lines,
    )
    wait_serving(server.target, deadline - time.monotonic())
    return server


def wait_serving(target: str, timeout: float) -> None:
    """Block until grpc.health.v1 says SERVING: a condition, never a sleep."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(
            health_pb2.HealthCheckRequest(service=""),
            timeout=max(timeout, 1.0),
            wait_for_ready=True,
        )
        assert response.status == health_pb2.HealthCheckResponse.SERVING
