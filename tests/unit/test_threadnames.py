"""OS thread names: what ``top -H`` and benchmarks/load/cpu_profile.py see."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from gateway.threadnames import name_this_thread, os_name


def test_os_name_drops_the_common_prefix_and_fits_the_kernels_15_bytes() -> None:
    assert os_name("riskwire-outcomes-writer") == b"outcomes-writer"
    assert os_name("audit-writer-0") == b"audit-writer-0"
    assert len(os_name("model-fraud-gbdt/1_0")) == 15
    assert os_name("é") == b"?"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl names are Linux's")
def test_a_thread_is_named_where_the_kernel_shows_it() -> None:
    seen: list[str] = []

    def run() -> None:
        name_this_thread()
        tid = threading.get_native_id()
        seen.append(Path(f"/proc/self/task/{tid}/comm").read_text().strip())

    thread = threading.Thread(target=run, name="riskwire-outcomes-reports")
    thread.start()
    thread.join()
    assert seen == ["outcomes-report"]
