"""Artifact: the deployable ONNX file of one candidate, content-hashed.

candidate -> torch-side knobs (width, sparsity, depth) and recovery on a copy of the torch model ->
ONNX export -> ONNX-side knobs (bit-width, as the candidate's recipe says) ->
``artifacts/<sha256>.onnx``. Every stage is timed; a stage that fails
raises :class:`CandidateError` naming it, and one that runs out of the search's memory budget
raises it with stage ``memory`` (autotune/_memory.py). When recovery ran, the same candidate
without recovery is built too (into a scratch folder), so its accuracy before recovery can be
recorded. With ``inspect``, the builder reads onnxruntime's optimised graph of the artifact and
records the precision each layer really runs in (it may differ from the candidate's choice:
autotune/devices/_ort_graph.py).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from autotune._memory import memory_failure
from autotune._tempdir import OwnedTemporaryDirectory
from autotune._util import error_line, sha256_file
from autotune.build._recover import Ran, Recovery, recover
from autotune.devices import runs_in
from autotune.errors import CandidateError
from autotune.knobs import LAYER_KNOBS, BuildContext, KnobValue, OnnxKnob, changes_weights, torch_knobs
from autotune.space import Candidate, SearchSpace
from autotune.task import Task, export_onnx

T = TypeVar("T")


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C hidden inside another error: torch-pruning's tracer retries after a bare
    ``except:``, so a KeyboardInterrupt there comes out as the retry's TypeError."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


@dataclass
class Artifact:
    path: Path
    sha256: str
    size_bytes: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    recovery: list[str] = field(default_factory=list)  # what recovery ran: bn, kd, finetune
    unrecovered: Path | None = None  # the same candidate built without recovery (scratch file)
    recovery_info: dict[str, Any] = field(default_factory=dict)  # e.g. kd_steps: distillation steps run
    #: layer -> the precision onnxruntime's CPU provider runs it in (builds with ``inspect``)
    precision: dict[str, str] | None = None


class ArtifactBuilder:
    """Builds candidates of one task into a content-addressed artifact folder."""

    def __init__(
        self,
        task: Task,
        space: SearchSpace,
        artifact_dir: Path,
        recovery: Recovery | None = None,
        keep_unrecovered: bool = True,
        inspect: bool = False,
    ) -> None:
        self.task = task
        self.inspect = inspect
        self.space = space
        self.recovery = recovery or Recovery()
        self.keep_unrecovered = keep_unrecovered
        self.artifact_dir = artifact_dir
        artifact_dir.mkdir(parents=True, exist_ok=True)
        # the unmodified model's ONNX: exported once, shared by every bits-only candidate
        self._unmodified: Path | None = task.source if isinstance(task.source, Path) else None
        self._workdir = OwnedTemporaryDirectory("build")  # the next build removes it after a kill

    def build(self, candidate: Candidate, recovery: Recovery | None = None) -> Artifact:
        """``recovery``: instead of the builder's own, for this build (final recovery)."""
        timings: dict[str, float] = {}

        @contextmanager
        def stage(name: str) -> Iterator[None]:
            t0 = time.perf_counter()
            try:
                yield
            except CandidateError:
                raise
            except Exception as exc:
                if _interrupted(exc):
                    raise KeyboardInterrupt from exc
                if (out_of_memory := memory_failure(name, exc)) is not None:
                    raise out_of_memory from exc
                msg = error_line(exc)
                raise CandidateError(name, msg) from exc
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

        ran = Ran()
        unrecovered: Path | None = None
        with tempfile.TemporaryDirectory(dir=self._workdir.name) as tmp:
            if not self._changes_torch_model(candidate):
                if self._unmodified is None:
                    path = Path(self._workdir.name) / "unmodified.onnx"
                    with stage("export"):
                        export_onnx(self.task.model.eval(), self.task.example_inputs, path)
                    self._unmodified = path  # only once the export succeeded
                fp32 = self._unmodified
            else:
                fp32 = Path(tmp) / "model.onnx"
                before = Path(tmp) / "unrecovered.onnx" if self.keep_unrecovered else None
                model, ran = self._compress(candidate, stage, before, recovery or self.recovery)
                with stage("export"):
                    export_onnx(model, self.task.example_inputs, fp32)
                if ran and before is not None:
                    unrecovered = Path(self._workdir.name) / "unrecovered.onnx"
                    with stage("quantize"):
                        self._quantize(candidate, before, unrecovered)
            final = Path(tmp) / "final.onnx"
            with stage("quantize"):
                self._quantize(candidate, fp32, final)
            precision = None
            if self.inspect:
                with stage("inspect"):
                    # units without an ONNX node of their own (a residual block) have no precision
                    nodes = {lay.name: lay.onnx_node for lay in self.space.layers if lay.onnx_node}
                    precision = runs_in(final, nodes, candidate.runtime)
            digest = sha256_file(final)
            target = self.artifact_dir / f"{digest}.onnx"
            if not target.exists():
                tmp_target = target.with_suffix(f".tmp{os.getpid()}")
                shutil.copyfile(final, tmp_target)
                os.replace(tmp_target, target)  # atomic: parallel workers may build the same one
        return Artifact(
            path=target,
            sha256=digest,
            size_bytes=target.stat().st_size,
            timings=timings,
            recovery=list(ran),
            unrecovered=unrecovered,
            recovery_info=dict(ran.info),
            precision=precision,
        )

    def _context(self, candidate: Candidate) -> BuildContext:
        return BuildContext(
            example_inputs=self.task.example_inputs,
            calibration=self.task.calibration_feeds(),
            nodes={layer.name: layer.onnx_node for layer in self.space.layers if layer.onnx_node},
            ignored=self.space.ignored,
            recipe=candidate.recipe,
        )

    @staticmethod
    def _choices(candidate: Candidate, knob: str) -> dict[str, KnobValue]:
        return {name: cfg[knob] for name, cfg in candidate.layers.items() if knob in cfg}

    def _quantize(self, candidate: Candidate, src: Path, dst: Path) -> None:
        """Every ONNX-side knob in registry order, each pass reading the last one's output."""
        ctx, current = self._context(candidate), src
        passes = [k for k in LAYER_KNOBS.values() if isinstance(k, OnnxKnob)]
        for i, knob in enumerate(passes):
            out = dst if i == len(passes) - 1 else dst.with_name(f"{dst.stem}.{knob.name}.onnx")
            if knob.apply(current, out, self._choices(candidate, knob.name), ctx):
                current = out
        if current != dst:
            shutil.copyfile(current, dst)

    @staticmethod
    def _changes_torch_model(candidate: Candidate) -> bool:
        """A torch-side knob set anywhere (defaults are not stored in a candidate)."""
        return changes_weights(candidate.layers)

    def _compress(
        self, candidate: Candidate, stage: Callable[[str], Any], before: Path | None, recovery: Recovery
    ) -> tuple[torch.nn.Module, Ran]:
        """Pruned (and recovered) copy of the model; ``before`` gets the un-recovered export."""
        teacher = self.task.model.eval()
        ctx = self._context(candidate)
        knobs = torch_knobs()
        with stage("compress"):
            model = copy.deepcopy(teacher)
            for knob in knobs:
                knob.apply(model, self._choices(candidate, knob.name), ctx)
        if before is not None:
            with stage("export"):
                unrecovered = copy.deepcopy(model)
                for knob in knobs:
                    knob.finish(unrecovered)
                export_onnx(unrecovered.eval(), self.task.example_inputs, before)
        with stage("finetune"):  # the stage name the cost split already uses for recovery
            ran = recover(model, teacher, self.task, recovery)
        with stage("compress"):
            for knob in knobs:
                knob.finish(model)
            model.eval()
        return model, ran
