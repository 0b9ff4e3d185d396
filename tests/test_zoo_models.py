"""Architectures people bring (timm, transformers): discovery finds every layer and the knobs that
apply, the most aggressive configuration builds and runs, and a short search ends cleanly.

The CI subset (``ZooModel.quick``: one model per family) runs here; the whole zoo runs with
``AUTOTUNE_ZOO=all``, and ``benchmarks/zoo.py`` searches each model and measures its floors.
Per model, the knobs searched and in how many layers are printed at the end of the session.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from zoo_models import SEARCHED, ZOO, ZooModel, searched_knobs, zoo_task

import autotune
from autotune.build._builder import ArtifactBuilder
from autotune.devices import Protocol
from autotune.space._profiles import load_profile
from autotune.space._space import build_space, load_preset
from autotune.task import evaluate_artifact

FULL = os.environ.get("AUTOTUNE_ZOO") == "all"
MISSING = [m for m in ("timm", "transformers") if importlib.util.find_spec(m) is None]


def _params() -> list[object]:
    out = []
    for entry in ZOO:
        marks = []
        if MISSING:
            marks.append(
                pytest.mark.skip(reason=f"{' and '.join(MISSING)} not installed (not in the dev extra)")
            )
        elif not (entry.quick or FULL):
            marks.append(
                pytest.mark.skip(reason="not in the CI subset (AUTOTUNE_ZOO=all, or benchmarks/zoo.py)")
            )
        out.append(pytest.param(entry, id=entry.name, marks=marks))
    return out


@pytest.mark.parametrize("entry", _params())
def test_zoo_model_is_discovered_built_and_searched(entry: ZooModel, tmp_path: Path) -> None:
    task = zoo_task(entry)
    space = build_space(task, load_preset(None), load_profile("cpu"))
    knobs = searched_knobs(space)
    SEARCHED[entry.name] = knobs
    lost = [n for n in space.notes if "layers not searched" in n]
    assert not lost, lost  # every Conv/Linear is found in the ONNX graph
    assert knobs.get("bits", 0) > 0, space.notes
    if entry.residual:
        assert knobs.get("depth", 0) > 0, space.notes

    # the most aggressive configuration (narrowest, fewest bits, every block dropped) builds and runs
    builder = ArtifactBuilder(task, space, tmp_path / "artifacts", keep_unrecovered=False)
    floor = builder.build(space.candidate(space.floor()))
    evaluate_artifact(task, floor.path)

    result = autotune.search(
        task,
        budget="50%",
        device="cpu",
        trials=3,
        out_dir=tmp_path / "runs",
        protocol=Protocol.quick(),
        progress=False,
        report=False,
        recover_final_steps=0,  # the trial count is asserted; final recovery adds a timed number
    )
    # the bar is at most 1 in 6; DeiT's w0.75 fails to export today (torch-pruning narrows
    # qkv without the head structure: issue 22 item 2, the heads knob)
    failed = [f"{f.stage}: {f.reason}" for f in result.failures]
    print(f"[zoo] {entry.name}: {len(result.trials)} trials, failed: {failed}")
    assert len(failed) <= 1 and len(result.trials) + len(failed) == 3, failed
