"""Benchmark fixtures: a session-wide collector of result cases, written at the end of
the session as ``<device>-<date>.json`` + PNG (see benchmarks/lib.py ``output_dir``:
benchmarks/results only on a GPU or when ``FSN_BENCH_OUT`` says so; CPU runs go to
``.benchmarks/cpu``, which git ignores)."""
import os

import pytest

_CASES = []


@pytest.fixture(autouse=True, scope="module")
def _cpu_threads():
    """CPU timings single-threaded by default (``FSN_BENCH_THREADS`` to change): on a shared
    2-core machine OpenMP spin-waiting made tiny steps 100x slower and the timings noise.
    Applies to benchmarks/ only; restored afterwards."""
    import torch

    if torch.cuda.is_available():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("FSN_BENCH_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture
def record_case():
    """Append one result case (a dict in the result-file schema)."""
    import torch

    def record(case):
        if not torch.cuda.is_available():
            case = dict(case, cpu_threads=torch.get_num_threads())
        _CASES.append(case)
    return record


def pytest_sessionfinish(session, exitstatus):
    if not _CASES or os.environ.get("FSN_BENCH_NO_WRITE"):
        return
    from benchmarks import lib

    paths = lib.write_results(list(_CASES))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"fsn benchmark results: {paths['json']} and {paths['png']}")
