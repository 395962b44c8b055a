"""cpu_profile's reading of ``perf report --sort dso --stdio``."""

from __future__ import annotations

import pytest

from benchmarks.load.cpu_profile import OTHER, group_of, shares_of_report

REPORT = """\
# To display the perf.data header info, please use --header/--header-only options.
#
# Total Lost Samples: 0
#
# Samples: 2K of event 'cpu-clock'
# Event count (approx.): 4525050100
#
# Overhead  Shared Object
# ........  ..........................................................
#
    43.27%  libpython3.11.so.1.0
    19.75%  [kernel.kallsyms]
    12.09%  cygrpc.cpython-311-x86_64-linux-gnu.so
    11.25%  onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so
     3.99%  libc.so.6
     2.92%  loop.cpython-311-x86_64-linux-gnu.so
     2.30%  _encoder.cpython-311-x86_64-linux-gnu.so
     1.77%  _multiarray_umath.cpython-311-x86_64-linux-gnu.so
     1.20%  _asyncio.cpython-311-x86_64-linux-gnu.so
     0.13%  [vdso]
"""


def test_libraries_fall_into_their_groups() -> None:
    assert group_of("libpython3.11.so.1.0") == "Python interpreter"
    assert group_of("[kernel.kallsyms]") == "kernel"
    assert group_of("_glue.cpython-311-x86_64-linux-gnu.so") == "riskwire native"
    assert group_of("[vdso]") == OTHER


def test_a_report_becomes_sample_count_and_group_shares() -> None:
    samples, shares = shares_of_report(REPORT)
    assert samples == 2000
    assert shares["Python interpreter"] == pytest.approx(0.4327)
    assert shares["event loop (uvloop, _asyncio)"] == pytest.approx(0.0292 + 0.0120)
    assert shares[OTHER] == pytest.approx(0.0013)
    assert sum(shares.values()) == pytest.approx(0.9867)
