"""Name the operating-system thread behind a Python thread, so that ``top -H``,
``ps -L`` and benchmarks/load/cpu_profile.py can tell riskwire's threads apart.

Python 3.11 names its ``threading.Thread`` objects only inside Python; the kernel
sees every thread under the process's name. Linux only, best effort: elsewhere, or
if ``prctl`` is unavailable, nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

_PR_SET_NAME = 15
_COMM_BYTES = 15
"""The kernel keeps 15 bytes of a thread's name (16 with the terminating NUL)."""


def _prctl() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def os_name(name: str) -> bytes:
    """``name`` as the kernel will keep it: a leading ``riskwire-`` dropped (every
    thread is riskwire's), ASCII, at most 15 bytes."""
    name = name.removeprefix("riskwire-")
    return name.encode("ascii", "replace")[:_COMM_BYTES]


def name_this_thread(name: str | None = None) -> None:
    """Give the calling thread's OS thread ``name`` (default: its Python name)."""
    if _PRCTL is None:
        return
    raw = os_name(name if name is not None else threading.current_thread().name)
    _PRCTL(_PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0)
