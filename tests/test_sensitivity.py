"""Per-layer sensitivity: measured for real, cached in the run directory, and what it guides."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_tasks import conv_task

from autotune.build._builder import ArtifactBuilder
from autotune.devices import OrtCpuDevice, Protocol
from autotune.errors import UserError
from autotune.measure import Measurer
from autotune.space._profiles import load_profile
from autotune.space._space import build_space, load_preset
from autotune.study._samplers import SAMPLERS, make_sampler
from autotune.study._sensitivity import (
    Entry,
    Table,
    breaking_values,
    candidate_probe,
    defaults,
    drop_values,
    greedy_candidates,
    measure_sensitivity,
)

TESTS = Path(__file__).parent


def test_sensitivity_is_measured_per_layer_and_value_and_cached(tmp_path: Path) -> None:
    task = conv_task()
    space = build_space(task, load_preset(None), load_profile("cpu"))
    builder = ArtifactBuilder(task, space, tmp_path / "artifacts")
    measurer = Measurer(OrtCpuDevice(), Protocol.quick(), cache_dir=tmp_path / "m", canary_every=0)
    calls: list[dict] = []
    real = candidate_probe(task, space, builder, measurer)

    def probe(params: dict) -> tuple[float, float] | None:
        calls.append(params)
        return real(params)

    table = measure_sensitivity(space, probe, cache=tmp_path / "sensitivity.json")
    # per-layer knobs only: the study-level ones (runtime:, recipe:) are global
    expected = sum(
        len(v) - 1 for k, v in space.parameters().items() if not k.startswith(("runtime:", "recipe:"))
    )
    assert len(table.entries) + len(table.failed) == expected
    assert len(calls) == expected + 1  # + the unmodified model
    assert table.reference_accuracy == 100.0
    narrow = [e for e in table.entries if e.param == "conv2:width" and e.value == 0.25]
    assert narrow and narrow[0].d_accuracy <= 0
    # a second run reads everything back from the run directory
    again = measure_sensitivity(space, probe, cache=tmp_path / "sensitivity.json")
    assert len(calls) == expected + 1 and again.to_dict() == table.to_dict()
    assert json.loads((tmp_path / "sensitivity.json").read_text())["results"]


def table_for(space_params: dict) -> Table:
    return Table(
        reference_accuracy=90.0,
        reference_ms=10.0,
        entries=[
            Entry("a:width", 0.5, 89.5, 7.0, -0.5, -3.0),  # cheap per ms saved
            Entry("b:width", 0.5, 80.0, 6.0, -10.0, -4.0),  # harmful
            Entry("c:bits", 8, 89.8, 8.5, -0.2, -1.5),  # cheapest
            Entry("a:width", 0.25, 85.0, 5.0, -5.0, -5.0),
        ],
        failed={},
    )


def test_greedy_candidates_compress_the_least_sensitive_layers_first() -> None:
    task = conv_task()
    space = build_space(task, load_preset(None), load_profile("cpu"))
    table = table_for(space.parameters())
    # budget 6ms from 10ms: c:bits (-1.5) then a:width 0.5 (-3) predicts 5.5ms
    (first, *_rest) = greedy_candidates(space, table, budget_ms=6.0)
    base = defaults(space)
    changed = {k: v for k, v in first.items() if base.get(k) != v}
    assert changed == {"c:bits": 8, "a:width": 0.5}


def test_values_that_alone_break_the_floor_are_dropped_with_a_note() -> None:
    task = conv_task()
    space = build_space(task, load_preset(None), load_profile("cpu"))
    layer = next(lay for lay in space.layers if "width" in lay.knobs)
    entry = Entry(f"{layer.name}:width", 0.25, 50.0, 1.0, -50.0, -2.0)
    table = Table(100.0, 3.0, [entry], {})
    assert breaking_values(table, 1.0) == [entry]
    notes = drop_values(space, breaking_values(table, 1.0))
    assert 0.25 not in layer.knobs["width"] and layer.name in notes[0] and "50.00 points" in notes[0]


def test_every_sampler_name_builds_and_a_wrong_one_is_a_user_error() -> None:
    for name in SAMPLERS:
        assert make_sampler(name, 0) is not None
    with pytest.raises(UserError, match="--sampler 'cma'"):
        make_sampler("cma", 0)


def test_sensitivity_command_prints_the_table(tmp_path: Path) -> None:
    run = ["--run", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    out = subprocess.run(
        [sys.executable, "-m", "autotune", "sensitivity", "--model", "tiny_tasks:conv_task", "--quick", *run],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "unmodified: 100.00 agreement" in out.stdout
    assert "conv2:width" in out.stdout and (tmp_path / "run" / "sensitivity.json").is_file()
