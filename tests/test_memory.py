"""The search's memory budget (--max-memory): parsing, the limit, failures, and peak memory.

No test here uses much memory: an allocation over a small budget fails in the allocating call
(RLIMIT_DATA counts what is reserved, not what is touched), so the budgets stay small.
"""

import json
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from optuna.trial import TrialState
from tiny_tasks import hungry_task

import autotune
from autotune._memory import (
    PeakMeter,
    data_bytes,
    enforceable,
    format_bytes,
    is_memory_error,
    memory_failure,
    parse_max_memory,
    resolve,
)
from autotune.devices import Protocol
from autotune.errors import UserError
from autotune.study import TrialRecord

linux_only = pytest.mark.skipif(not enforceable(), reason="RLIMIT_DATA is enforced on Linux only")


def test_max_memory_takes_sizes_and_shares() -> None:
    assert parse_max_memory("8GiB").bytes == 8 << 30
    assert parse_max_memory("1.5GiB").bytes == 3 << 29
    assert parse_max_memory("512 MiB").bytes == 512 << 20
    assert parse_max_memory("16GB").bytes == 16 * 10**9
    assert parse_max_memory("8G").bytes == 8 << 30
    assert parse_max_memory(123456789).bytes == 123456789
    assert parse_max_memory("50%").fraction == 0.5
    assert parse_max_memory(None).fraction == 0.8  # the default: 80% of the available memory
    for bad in ("lots", "8XB", "0GiB", "150%", "-1", "0%", True):
        with pytest.raises(UserError, match="--max-memory"):
            parse_max_memory(bad)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="--max-memory"):
        autotune.search(object(), budget="50%", max_memory="lots")  # checked before any model work


def test_a_budget_below_what_the_process_holds_is_refused() -> None:
    held = data_bytes()
    with pytest.raises(UserError, match="already holds"):
        resolve(parse_max_memory(held // 2))
    share = resolve(parse_max_memory("50%"))
    assert share.bytes > held and "50% of available" in share.label
    assert format_bytes(3 << 29) == "1.5 GiB"


def test_out_of_memory_errors_are_recognised_whatever_raised_them() -> None:
    torch_oom = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 17179869184 bytes. Error code 12 (Cannot allocate memory)"
    )
    ort_oom = RuntimeError(
        "[ONNXRuntimeError] : 1 : FAIL : ... Failed to allocate memory for requested buffer"
    )
    wrapped = ValueError("export failed")
    wrapped.__cause__ = torch_oom
    no_thread = RuntimeError(
        "onnxruntime PosixThread: pthread_create failed, error code: 12 error msg: Cannot allocate memory"
    )
    for exc in (MemoryError(), torch_oom, ort_oom, wrapped, OSError(12, "Cannot allocate memory"), no_thread):
        assert is_memory_error(exc)
    for exc in (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), ValueError("shape mismatch")):
        assert not is_memory_error(exc)
    failure = memory_failure("finetune", torch_oom)
    assert failure is not None and failure.stage == "memory"
    assert str(failure).startswith("memory: finetune ")
    assert memory_failure("finetune", ValueError("x")) is None


@linux_only
def test_the_limit_fails_the_allocation_not_the_process_and_is_lifted_after() -> None:
    # a fresh process: the limit is process-wide, and this one runs other tests
    code = textwrap.dedent(
        """
        import resource
        import numpy as np, torch
        from autotune._memory import data_bytes, is_memory_error, memory_limit, parse_max_memory, resolve
        before = resource.getrlimit(resource.RLIMIT_DATA)
        budget = resolve(parse_max_memory(data_bytes() + (256 << 20)))
        failed = []
        with memory_limit(budget):
            for make in (lambda: torch.ones(1 << 28), lambda: np.ones(1 << 28, np.float32)):
                try:
                    make()
                except Exception as exc:
                    failed.append(is_memory_error(exc))
            torch.ones(1 << 20)  # small allocations still work
        torch.ones(1 << 26)  # 256 MiB: fine once the limit is lifted
        print(failed, resource.getrlimit(resource.RLIMIT_DATA) == before)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[True,", "True]", "True"]


def test_peak_meter_sees_a_short_lived_allocation() -> None:
    with PeakMeter() as before:
        pass
    with PeakMeter() as peak:
        a = np.ones(40 << 20, np.uint8)  # 40 MiB, touched
        del a
    assert before.bytes and peak.bytes
    assert peak.bytes >= (40 << 20)
    assert peak.bytes > before.bytes + (30 << 20)


@linux_only
def test_a_candidate_over_the_budget_fails_with_the_memory_reason_and_the_search_goes_on(
    tmp_path: Path,
) -> None:
    """Pruned candidates' recovery asks for 16 GiB under a budget of what the process holds plus
    1 GiB: those trials fail (stage memory), the others complete, and every trial's peak is kept."""
    limit_before = resource.getrlimit(resource.RLIMIT_DATA)
    budget = data_bytes() + (1 << 30)
    result = autotune.search(
        hungry_task(),
        budget="100%",
        trials=4,  # fp32, int8, w0.75, w0.5: the two pruned ones need the 16 GiB
        out_dir=tmp_path / "runs",
        study_name="hungry",
        protocol=Protocol.quick(),
        progress=False,
        report=tmp_path / "report.html",
        max_memory=budget,
    )
    assert {t.baseline for t in result.trials} == {"fp32", "int8"}
    assert [f.stage for f in result.failures] == ["memory", "memory"]
    label = format_bytes(budget)
    for f in result.failures:
        assert f.reason.startswith(f"memory: finetune needed more than the {label} budget"), f.reason
    ran = result.study.get_trials(states=(TrialState.COMPLETE, TrialState.FAIL))
    assert len(ran) == 4
    records = [TrialRecord.from_attrs(t.user_attrs) for t in ran]
    assert all(r.peak_memory_bytes and r.peak_memory_bytes > 0 for r in records)
    assert all(t.peak_memory_bytes for t in result.trials)
    summary = result.summary()
    assert f"memory budget {label}" in summary and "2 candidate(s) needed more and failed" in summary
    assert "failures: memory x2" in summary
    html = (tmp_path / "report.html").read_text()
    assert "peak memory MiB" in html and f"needed more than the {label} budget" in html
    assert result.meta.search["max_memory"]["bytes"] == budget
    exported = result.trials[0].export(tmp_path / "best.onnx")
    assert json.loads(exported.with_suffix(".json").read_text())["peak_memory_bytes"] > 0
    assert resource.getrlimit(resource.RLIMIT_DATA) == limit_before  # the limit ends with the search
