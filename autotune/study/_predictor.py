"""An online latency predictor, per device and per study: built artifact -> predicted latency ratio.

Candidates the predictor puts beyond the budget by a safe margin are built but not measured or
evaluated: the study records them as pruned, with the predicted figure (never as a
measurement). It never decides for a candidate that could be feasible, so every Pareto member
and the best are measured.

* **Features** (:meth:`LatencyPredictor.features`), read off the built artifact as onnxruntime's
  optimiser will run it (:func:`kernel_work`): its multiply-adds by the kernel they run on (fused
  int8; float in the CPU's blocked layout; float left as written, as a Q/DQ pair the optimiser
  could not fuse leaves it; depthwise apart), as shares of the reference's; the output
  activations by precision; the elements the small nodes read (Quantize/DequantizeLinear; layout
  changes: Transpose, NCHWc reorders; elementwise ops), by family, and the node count; and the
  session knobs the graph does not show (threads, execution mode). Reading the artifact rather
  than the configuration is what makes the quantization recipe visible: s8 activations on a CPU
  without VNNI leave every Q/DQ pair unfused (66 nodes instead of 23 on the demo) and the int8
  layers run as float.
* **Target**: the measured ratio to the reference (paired timing).
* **Model**: scikit-learn's standardised ``RidgeCV`` on the ratio, weighted 1/ratio^2 so that
  errors count relatively; linear in physically additive features, so it stays sane on 20-50
  points; refitted as points arrive. Replaying 12 kept 60-candidate demo searches (recipes
  searched) it put 80-100% of the next 20 within +-10% after 30 (mean 89.4%); features of the
  configuration gave 70% and 45% on two of them (``benchmarks/predictor.py``).
* **Error**: every candidate measured after the model is trained is first predicted, so the
  MAPE and the share within +-10% are tracked on candidates measured anyway (``stats``).
* **Margin**: a candidate is skipped only when predicted above ``budget x (1 + margin)``, the
  margin being the larger of ``min_margin`` and twice the 90th percentile of the recent errors.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from autotune.records import RuntimeOptions
from autotune.space import SearchSpace
from autotune.study._onnx_stats import FAMILIES, KERNELS, KernelWork, LayerStats, kernel_work, layer_stats

__all__ = ["KernelWork", "LatencyPredictor", "LayerStats", "kernel_work", "layer_stats"]

#: fit the model once this many candidates are measured
MIN_TRAIN = 20
#: never skip a candidate predicted closer to the budget than this share
MIN_MARGIN = 0.15
#: recent prediction errors the margin is based on
RECENT = 20


class LatencyPredictor:
    """Predicts a built artifact's latency ratio to the study's reference.

    Example::

        predictor = LatencyPredictor(reference_path, inputs, space)
        skip, predicted = predictor.beyond(artifact_path, runtime, budget_ratio=0.5)
        ...  # else measure, then:
        predictor.observe(artifact_path, runtime, measured_ratio)
    """

    def __init__(
        self,
        reference: Path,
        inputs: dict[str, np.ndarray] | None = None,
        space: SearchSpace | None = None,
        min_train: int = MIN_TRAIN,
        min_margin: float = MIN_MARGIN,
    ) -> None:
        self.inputs = inputs
        self.space = space
        ref = kernel_work(reference, inputs)
        self._macs = sum(ref.macs.values()) or 1.0
        self._acts = sum(ref.activations.values()) or 1.0
        self.min_train = min_train
        self.min_margin = min_margin
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self._x: list[np.ndarray] = []
        self._y: list[float] = []
        self._model: Any = None
        self._fitted_on = 0
        self.errors: list[float] = []  # (predicted - measured) / measured, in order
        self.skipped = 0

    # -- features ------------------------------------------------------------------------
    def features(self, artifact: Path, runtime: RuntimeOptions) -> np.ndarray:
        key = (str(artifact), runtime.graph_optimization)
        if key not in self._cache:  # predicted, then observed: the graph is read once
            work = kernel_work(artifact, self.inputs, runtime)
            self._cache[key] = self._work_features(work)
        return np.concatenate([self._cache[key], self._session_features(runtime)])

    def _work_features(self, work: KernelWork) -> np.ndarray:
        return np.asarray(
            [work.macs[k] / self._macs for k in KERNELS]
            + [work.activations[k] / self._acts for k in ("int8", "fp32")]
            + [work.elements[f] / self._acts for f in FAMILIES]
            + [work.total_nodes],
            dtype=np.float64,
        )

    def _session_features(self, runtime: RuntimeOptions) -> np.ndarray:
        """What the graph does not show: threads (log), and one flag per non-default value of
        the other searched session knobs."""
        flags = [math.log(runtime.threads)]
        chosen = runtime.to_dict()
        for name, values in (self.space.study_knobs if self.space else {}).items():
            section, knob = name.split(":", 1)
            if section == "runtime" and knob != "threads":
                flags += [float(chosen.get(knob, values[0]) == v) for v in values[1:]]
        return np.asarray(flags, dtype=np.float64)

    # -- learning ------------------------------------------------------------------------
    @property
    def observed(self) -> int:
        """Measured candidates learnt from."""
        return len(self._y)

    @property
    def trained(self) -> bool:
        return len(self._y) >= self.min_train

    def predict(self, artifact: Path, runtime: RuntimeOptions) -> float | None:
        """The predicted ratio, or None before ``min_train`` measured candidates."""
        if not self.trained:
            return None
        if self._model is None or self._fitted_on != len(self._y):
            self._fit()
        y = float(self._model.predict(self.features(artifact, runtime)[None, :])[0])
        return max(y, 1e-3)

    def observe(self, artifact: Path, runtime: RuntimeOptions, ratio: float) -> float | None:
        """Add a measured ratio; returns what was predicted for it (and tracks the error)."""
        predicted = self.predict(artifact, runtime)
        if predicted is not None:
            self.errors.append((predicted - ratio) / ratio)
        if ratio > 0 and math.isfinite(ratio):
            self._x.append(self.features(artifact, runtime))
            self._y.append(ratio)
        return predicted

    def _fit(self) -> None:
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self._model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        x, y = np.vstack(self._x), np.asarray(self._y)
        self._model.fit(x, y, ridgecv__sample_weight=1.0 / y**2)  # errors count relatively
        self._fitted_on = len(self._y)

    # -- decisions -----------------------------------------------------------------------
    @property
    def margin(self) -> float:
        recent = np.abs(self.errors[-RECENT:])
        return max(self.min_margin, 2 * float(np.percentile(recent, 90))) if recent.size else self.min_margin

    def beyond(
        self, artifact: Path, runtime: RuntimeOptions, budget_ratio: float
    ) -> tuple[bool, float | None]:
        """(whether the artifact is predicted over budget by the safe margin, the prediction)."""
        predicted = self.predict(artifact, runtime)
        if predicted is None or len(self.errors) < 5:  # no skipping before its error is known
            return False, predicted
        skip = predicted > budget_ratio * (1 + self.margin)
        self.skipped += skip
        return skip, predicted

    @property
    def stats(self) -> dict[str, Any]:
        """For the summary and the report: error on candidates measured anyway, and skips."""
        err = np.abs(self.errors)
        return {
            "trained_on": self.observed,
            "min_train": self.min_train,
            "checked": int(err.size),
            "mape": round(float(err.mean()), 4) if err.size else None,
            "within_10pct": round(float((err <= 0.10).mean()), 4) if err.size else None,
            "margin": round(self.margin, 4),
            "skipped": self.skipped,
        }
