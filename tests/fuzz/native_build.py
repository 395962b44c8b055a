"""Load gateway._native's extensions from another build directory.

`make sanitize` (gcc ASan + UBSan) and `make fuzz` (clang with fuzzer coverage) build
the extensions with `setup.py build_ext --build-lib <dir>`, beside the normal in-place
build and never over it. Setting RISKWIRE_NATIVE_BUILD=<dir> and calling
`use_native_build()` before anything imports them puts <dir>/gateway/_native first on
the package's __path__, so `gateway._native._encoder` and `_glue` come from there
while every Python module stays the working tree's. (PYTHONPATH alone cannot do it:
the build directory holds no gateway/__init__.py, so the working tree's regular
package wins.)

Also a pytest plugin: `python -m pytest -p tests.fuzz.native_build ...` applies it
before collection and names the loaded files in the report header.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

ENV = "RISKWIRE_NATIVE_BUILD"
_MODULES = ("gateway._native._encoder", "gateway._native._glue", "gateway._native._audit")


def use_native_build(build_lib: str | None = None) -> Path | None:
    """Puts `build_lib` (default: $RISKWIRE_NATIVE_BUILD) first for gateway._native.

    Returns the extensions' directory, or None when no build directory is set.

    Raises:
        RuntimeError: the directory lacks the extensions, or they were imported already.
    """
    build_lib = build_lib if build_lib is not None else os.environ.get(ENV, "")
    if not build_lib:
        return None
    import gateway._native

    directory = (Path(build_lib) / "gateway" / "_native").resolve()
    for module in _MODULES:
        name = module.rsplit(".", 1)[1]
        if not any(directory.glob(f"{name}.*.so")):
            raise RuntimeError(f"{ENV}={build_lib}: no {name} extension in {directory}")
        if module in sys.modules:
            raise RuntimeError(f"{module} was imported before use_native_build()")
    if str(directory) not in gateway._native.__path__:
        gateway._native.__path__.insert(0, str(directory))
    return directory


def describe() -> str:
    """Where the extensions load from (imports them), or why they do not load."""
    try:
        files = [importlib.import_module(module).__file__ for module in _MODULES]
    except ImportError as exc:
        return f"nowhere ({exc})"
    return ", ".join(str(f) for f in files)


def pytest_configure() -> None:
    """pytest hook (with -p tests.fuzz.native_build): applies $RISKWIRE_NATIVE_BUILD
    before collection imports gateway.features.dispatch."""
    use_native_build()


def pytest_report_header() -> str:
    """pytest hook: the extensions' files, in the header of the run."""
    return f"gateway._native: {describe()}"


def main() -> int:
    """`python -m tests.fuzz.native_build`: prints where gateway._native loads from, and
    fails unless that is $RISKWIRE_NATIVE_BUILD's directory (when set)."""
    directory = use_native_build()
    files = []
    for module in _MODULES:
        try:
            files.append(Path(str(importlib.import_module(module).__file__)).resolve())
        except ImportError as exc:
            print(f"{module}: cannot import ({exc})", file=sys.stderr)
            return 1
    print("gateway._native: " + ", ".join(map(str, files)))
    if directory is not None and any(f.parent != directory for f in files):
        print(f"not from {ENV}={directory}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
