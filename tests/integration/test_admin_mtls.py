"""The admin plane over mutual TLS: a client certificate of the configured CA replaces
the bearer token; a client without one, or with another CA's, never gets a call in."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from riskwire.admin.v1 import admin_pb2, admin_pb2_grpc
from tests.integration.serverproc import ServerProcess, start_server, write_config


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return key, cert


def _signed(directory: Path, name: str, ca: tuple[Path, Path], san: str = "") -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}{ext}" for ext in (".key", ".csr", ".pem"))
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    extra = directory / f"{name}.ext"
    extra.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
        "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(extra),
    )  # fmt: skip
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("pki")
    ca = _ca(directory, "riskwire-ops-ca")
    rogue_ca = _ca(directory, "rogue-ca")
    return {
        "ca": ca,
        "server": _signed(directory, "localhost", ca, san="DNS:localhost,IP:127.0.0.1"),
        "alice": _signed(directory, "ops-alice", ca),
        "mallory": _signed(directory, "mallory", rogue_ca),
    }


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    model_repository: Path,
    pki: dict[str, tuple[Path, Path]],
) -> Iterator[ServerProcess]:
    admin = {
        "tls_cert_file": str(pki["server"][1]),
        "tls_key_file": str(pki["server"][0]),
        "tls_client_ca_file": str(pki["ca"][1]),
    }
    running = start_server(
        write_config(tmp_path_factory.mktemp("mtls"), model_repository, admin=admin)
    )
    yield running
    assert running.terminate() == 0, running.log()


def _channel(
    server: ServerProcess, pki: dict[str, tuple[Path, Path]], client: str | None
) -> grpc.Channel:
    key, cert = pki[client] if client else (None, None)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["ca"][1].read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    return grpc.secure_channel(f"localhost:{server.admin_port}", credentials)


def test_a_client_certificate_of_the_ca_replaces_the_token(
    server: ServerProcess, pki: dict[str, tuple[Path, Path]]
) -> None:
    with _channel(server, pki, "alice") as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        status = admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=10)
        assert status.config_version == 1
        routes = admin.GetRoutes(admin_pb2.GetRoutesRequest(), timeout=10)
        applied = admin.ApplyRoutes(
            admin_pb2.ApplyRoutesRequest(
                routes_yaml=routes.routes_yaml, expected_config_version=1, reason="mtls check"
            ),
            timeout=10,
        )
        history = admin.GetHistory(admin_pb2.GetHistoryRequest(limit=1), timeout=10)
    # The certificate names who made the change.
    assert history.entries[0].config_version == applied.config_version
    assert history.entries[0].actor == "cn:ops-alice"


@pytest.mark.parametrize("client", [None, "mallory"])
def test_no_certificate_or_another_cas_never_reaches_a_method(
    server: ServerProcess, pki: dict[str, tuple[Path, Path]], client: str | None
) -> None:
    with _channel(server, pki, client) as channel, pytest.raises(grpc.RpcError) as caught:
        admin_pb2_grpc.AdminStub(channel).GetStatus(
            admin_pb2.GetStatusRequest(),
            timeout=10,
            metadata=[("authorization", f"Bearer {server.admin_token}")],
        )
    # The handshake fails: even the right token does not open the port without a cert.
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
