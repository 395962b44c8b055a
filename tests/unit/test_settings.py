"""Settings precedence: flags over environment over file over embedded defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import Settings, load_settings


def test_embedded_defaults_match_the_design_ports() -> None:
    settings = Settings()
    assert (settings.grpc.port, settings.admin.port, settings.metrics.port) == (50051, 50052, 9464)
    assert settings.batching.max_batch == 16


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "riskwire.yaml"
    config.write_text("grpc: {port: 6000, max_batch_transactions: 64}\nbatching: {max_batch: 8}\n")
    assert load_settings(config).grpc.port == 6000
    monkeypatch.setenv("RISKWIRE_GRPC__PORT", "7000")
    settings = load_settings(config)
    assert settings.grpc.port == 7000
    assert settings.grpc.max_batch_transactions == 64  # untouched by the environment
    assert settings.batching.max_batch == 8
    assert load_settings(config, **{"grpc.port": 8000}).grpc.port == 8000


def test_unknown_keys_and_clashing_ports_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("grpc: {prot: 1}\n")
    with pytest.raises(ValidationError, match="prot"):
        load_settings(config)
    with pytest.raises(ValidationError, match="ports must differ"):
        load_settings(None, **{"admin.port": 50051})
    # gRPC core's pending-call bounds: refusing all before refusing some is no policy.
    with pytest.raises(ValidationError, match="max_pending_calls_hard"):
        load_settings(None, **{"grpc.max_pending_calls": 100, "grpc.max_pending_calls_hard": 10})


def test_admin_token_is_made_once_and_reused(tmp_path: Path) -> None:
    from gateway.server import admin_token

    settings = load_settings(None, state_dir=tmp_path / "state")
    first = admin_token(settings)
    assert len(first) >= 32
    assert admin_token(settings) == first
    path = tmp_path / "state" / "admin.token"
    assert path.stat().st_mode & 0o777 == 0o600
    given = tmp_path / "token"
    given.write_text("from-a-secret\n")
    assert admin_token(load_settings(None, **{"admin.token_file": given})) == "from-a-secret"


def test_admin_token_from_the_environment_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.server import admin_token

    token_file = tmp_path / "admin.token"
    token_file.write_text("from-the-file\n")
    monkeypatch.setenv("RISKWIRE_ADMIN__TOKEN_FILE", str(token_file))
    assert admin_token(load_settings(None)) == "from-the-file"
    monkeypatch.setenv("RISKWIRE_ADMIN__TOKEN", "from-the-secret-store")
    settings = load_settings(None)
    assert admin_token(settings) == "from-the-secret-store"
    assert "from-the-secret-store" not in repr(settings)  # a SecretStr: never logged


def test_admin_mtls_needs_all_three_files(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    with pytest.raises(ValidationError, match="together"):
        Settings.model_validate({"admin": {"tls_cert_file": pem, "tls_key_file": pem}})
    whole = {"tls_cert_file": pem, "tls_key_file": pem, "tls_client_ca_file": pem}
    assert Settings.model_validate({"admin": whole}).admin.mtls
    assert not Settings().admin.mtls
