"""An online latency predictor, per device and per study: candidate -> predicted latency ratio.

Candidates the predictor puts beyond the budget by a safe margin need not be built, measured
or evaluated: the study records them as pruned, with the predicted figure (never as a
measurement). It never decides for a candidate that could be feasible, so every Pareto member
and the best are measured.

* **Features** (:meth:`LatencyPredictor.features`). The search uses the per-layer set: per
  search-space layer, its width, bits (one-hot int8 / int4 / fp16) and sparsity; over the model,
  the shares of the reference's MACs, parameters and channels left, by precision and op type,
  the MAC-weighted sparsity, the threads, the int8 layers and precision boundaries (each costs
  a (De)QuantizeLinear), and the searched session and recipe knobs (:meth:`_study_features`).
  With the model's graph (:func:`model_graph`), an additive set: the MAC
  and output-activation shares left after pruning, by precision, widths propagated as
  torch-pruning prunes coupled channels (:meth:`LatencyPredictor.scales`). On the 60-candidate
  demo search the per-layer set did better (80% of the next 20 within +-10% after 30, vs 65%).
* **Target**: the measured ratio to the reference (paired timing); its log for the per-layer
  set (errors relative, never a negative latency).
* **Model**: scikit-learn's standardised ``RidgeCV`` (with the graph: on the ratio, weighted
  1/ratio^2 so that errors count relatively); linear, so it stays sane on 20-50 points;
  refitted as points arrive.
* **Error**: every candidate measured after the model is trained is first predicted, so the
  MAPE and the share within +-10% are tracked on candidates measured anyway (``stats``).
* **Margin**: a candidate is skipped only when predicted above ``budget x (1 + margin)``, the
  margin being the larger of ``min_margin`` and twice the 90th percentile of the recent errors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from autotune._onnx_stats import ELEMENTWISE, OPS, RESHAPING, GraphNode, LayerStats, layer_stats, model_graph
from autotune.space import Candidate, SearchSpace

__all__ = ["GraphNode", "LatencyPredictor", "LayerStats", "layer_stats", "model_graph"]

#: fit the model once this many candidates are measured
MIN_TRAIN = 20
#: never skip a candidate predicted closer to the budget than this share
MIN_MARGIN = 0.15
#: recent prediction errors the margin is based on
RECENT = 20
_BITS = (8, 4, 16)


class LatencyPredictor:
    """Predicts a candidate's latency ratio to the study's reference from its configuration.

    Example::

        predictor = LatencyPredictor(space, layer_stats(reference_path, inputs))
        skip, predicted = predictor.beyond(candidate, budget_ratio=0.5)
        ...  # else measure, then:
        predictor.observe(candidate, measured_ratio)
    """

    def __init__(
        self,
        space: SearchSpace,
        stats: dict[str, LayerStats],
        min_train: int = MIN_TRAIN,
        min_margin: float = MIN_MARGIN,
        graph: list[GraphNode] | None = None,
    ) -> None:
        self.space = space
        self.layers = [(layer, stats.get(layer.onnx_node)) for layer in space.layers]
        self.layer_stats = stats
        self.graph = graph
        self.by_node = {layer.onnx_node: layer.name for layer in space.layers}
        self.depthwise = {n.name for n in graph or [] if n.depthwise}
        self.min_train = min_train
        self.min_margin = min_margin
        self._x: list[np.ndarray] = []
        self._y: list[float] = []
        self._model: Any = None
        self._fitted_on = 0
        self.errors: list[float] = []  # (predicted - measured) / measured, in order
        self.skipped = 0

    # -- features ------------------------------------------------------------------------
    def scales(self, candidate: Candidate) -> dict[str, tuple[float, float]]:
        """Per weighted node: (input, output) channel share left by the candidate's widths.

        Widths propagate through the graph: a node's input share is its producer's output
        share; a depthwise conv follows its input; an elementwise join (a residual Add) keeps
        the smallest share of its inputs, and the convolutions feeding it are pruned with it
        (torch-pruning prunes coupled channels together), as is the producer of a pruned
        depthwise conv.
        """
        assert self.graph is not None
        widths = {n: float(candidate.value(layer, "width")) for n, layer in self.by_node.items()}
        widths = {n: w for n, w in widths.items() if w != 1.0}
        coupled: dict[str, float] = {}
        out: dict[str, tuple[float, float]] = {}
        for _ in range(3):  # later passes apply the couplings the earlier ones found
            scale: dict[str, float] = {}
            producers: dict[str, frozenset[str]] = {}  # weighted nodes whose channels a tensor carries
            for node in self.graph:
                s_in = scale.get(node.inputs[0], 1.0) if node.inputs else 1.0
                before = frozenset().union(*(producers.get(t, frozenset()) for t in node.inputs))
                if node.name in self.layer_stats:
                    if node.name in widths:
                        s_out = widths[node.name]
                    elif node.depthwise:
                        s_out = s_in
                    else:
                        s_out = coupled.get(node.name, 1.0)
                    out[node.name] = (s_in, s_out)
                    if node.depthwise and node.name in widths:
                        for p in before - widths.keys():
                            coupled[p] = min(coupled.get(p, 1.0), widths[node.name])
                    carried = frozenset([node.name])
                elif node.op in ELEMENTWISE and len(node.inputs) > 1:
                    s_out = min(scale.get(t, 1.0) for t in node.inputs)
                    for p in before - widths.keys():
                        if s_out < 1.0:
                            coupled[p] = min(coupled.get(p, 1.0), s_out)
                    carried = before
                else:
                    s_out = s_in
                    carried = before if node.op not in RESHAPING else frozenset()
                for o in node.outputs:
                    scale[o] = s_out
                    producers[o] = carried
        return out

    def _graph_features(self, candidate: Candidate) -> np.ndarray:
        """Physically additive features: the share of the reference's MACs left after pruning
        (summed over the weighted nodes), split by precision; the share of their output
        activations left (memory traffic), also for int8; the precision boundaries."""
        total = sum(s.macs for s in self.layer_stats.values()) or 1.0
        channels = sum(s.channels for s in self.layer_stats.values()) or 1.0
        acts = sum(s.activations for s in self.layer_stats.values()) or 1.0
        sums = dict.fromkeys(("fp32", "int8", "other", "sparse", "channels", "dw", "acts", "acts8"), 0.0)
        precision: dict[str, bool] = {}
        for node, (s_in, s_out) in self.scales(candidate).items():
            st = self.layer_stats[node]
            layer = self.by_node.get(node)
            bits = int(candidate.value(layer, "bits")) if layer else 32
            sparsity = candidate.value(layer, "sparsity") if layer else 0.0
            sp = 0.5 if sparsity == "2:4" else float(sparsity)
            depthwise = node in self.depthwise
            share = st.macs * (s_out if depthwise else s_in * s_out) / total
            kind = "fp32" if bits == 32 else "int8" if bits == 8 else "other"
            sums[kind] += share
            sums["sparse"] += share * sp
            sums["channels"] += st.channels * s_out / channels
            sums["dw"] += share if depthwise else 0.0
            sums["acts"] += st.activations * s_out / acts
            sums["acts8"] += st.activations * s_out / acts * (bits == 8)
            precision[node] = bits == 8
        # int8 layers cost (De)QuantizeLinear nodes where precision changes between layers
        int8 = list(precision.values())
        boundaries = sum(a != b for a, b in zip([False, *int8], [*int8, False], strict=True))
        head = [*sums.values(), float(boundaries), float(sum(int8)), math.log(candidate.runtime.threads)]
        # (per-node shares as features too overfit 30 noisy points: 57% within +-10% vs 64%)
        return np.asarray(head, dtype=np.float64)

    def features(self, candidate: Candidate) -> np.ndarray:
        own = self._graph_features(candidate) if self.graph is not None else self._layer_features(candidate)
        return np.concatenate([own, self._study_features(candidate)])

    def _study_features(self, candidate: Candidate) -> np.ndarray:
        """Searched session and recipe knobs, one-hot per non-default value. A session knob
        (graph level, execution mode) or the transformer optimizer changes the whole graph, so
        its flag is a feature of its own; a recipe knob changes only the int8 kernels (u8 or s8
        activations, per-channel scales, pre-processing), so its flag is scaled by the share of
        int8 MACs and of int8 layers (on the 60-candidate demo replay: 25% within +-10% with
        plain flags, 70% with scaled ones). Calibration only moves scales: left out."""
        chosen = {**candidate.runtime.to_dict(), **candidate.recipe.to_dict()}
        whole: list[float] = []
        int8: list[float] = []
        for name, values in self.space.study_knobs.items():
            section, knob = name.split(":", 1)
            if knob in ("threads", "calibration"):  # threads: its log is a feature of its own
                continue
            flags = [float(chosen.get(knob, values[0]) == v) for v in values[1:]]
            (int8 if section == "recipe" and knob != "optimizer" else whole).extend(flags)
        total = sum(s.macs for _, s in self.layers if s) or 1.0
        bits = [int(candidate.value(layer.name, "bits")) == 8 for layer, _ in self.layers]
        mac_share = sum(s.macs for (_, s), b in zip(self.layers, bits, strict=True) if s and b) / total
        layer_share = sum(bits) / max(1, len(bits))
        scaled = np.asarray(int8, dtype=np.float64)
        return np.concatenate([np.asarray(whole, dtype=np.float64), scaled * mac_share, scaled * layer_share])

    def _layer_features(self, candidate: Candidate) -> np.ndarray:
        total = {
            k: sum(getattr(s, k) for _, s in self.layers if s) or 1.0 for k in ("macs", "params", "channels")
        }
        per_layer: list[float] = []
        macs_left = params_left = channels_left = sparse = 0.0
        by_bits = dict.fromkeys(_BITS, 0.0)
        by_op = {op: [0.0, 0.0] for op in OPS}  # MAC share, int8 MAC share
        prev_width = 1.0
        for layer, s in self.layers:
            width = float(candidate.value(layer.name, "width"))
            bits = int(candidate.value(layer.name, "bits"))
            sparsity = candidate.value(layer.name, "sparsity")
            sp = 0.5 if sparsity == "2:4" else float(sparsity)
            per_layer += [width, *(float(bits == b) for b in _BITS), sp]
            if s is None:
                continue
            share = s.macs * width * prev_width / total["macs"]  # in and out channels both shrink
            macs_left += share
            params_left += s.params * width * prev_width / total["params"]
            channels_left += s.channels * width / total["channels"]
            sparse += share * sp
            if bits in by_bits:
                by_bits[bits] += share
            by_op[s.op][0] += share
            by_op[s.op][1] += share * (bits == 8)
            prev_width = width
        model_wide = [macs_left, params_left, channels_left, sparse, *by_bits.values()]
        model_wide += [v for pair in by_op.values() for v in pair]
        model_wide.append(math.log(candidate.runtime.threads))
        # int8 layers cost (De)QuantizeLinear nodes where precision changes along the model
        int8 = [candidate.value(layer.name, "bits") == 8 for layer, _ in self.layers]
        boundaries = sum(a != b for a, b in zip([False, *int8], [*int8, False], strict=True))
        model_wide += [float(boundaries), float(sum(int8))]
        return np.asarray(model_wide + per_layer, dtype=np.float64)

    # -- learning ------------------------------------------------------------------------
    @property
    def observed(self) -> int:
        """Measured candidates learnt from."""
        return len(self._y)

    @property
    def trained(self) -> bool:
        return len(self._y) >= self.min_train

    def predict(self, candidate: Candidate) -> float | None:
        """The predicted ratio, or None before ``min_train`` measured candidates."""
        if not self.trained:
            return None
        if self._model is None or self._fitted_on != len(self._y):
            self._fit()
        y = float(self._model.predict(self.features(candidate)[None, :])[0])
        return max(y, 1e-3) if self.graph is not None else float(math.exp(y))

    def observe(self, candidate: Candidate, ratio: float) -> float | None:
        """Add a measured ratio; returns what was predicted for it (and tracks the error)."""
        predicted = self.predict(candidate)
        if predicted is not None:
            self.errors.append((predicted - ratio) / ratio)
        if ratio > 0 and math.isfinite(ratio):
            self._x.append(self.features(candidate))
            self._y.append(math.log(ratio))
        return predicted

    def _fit(self) -> None:
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self._model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        x, y = np.vstack(self._x), np.asarray(self._y)
        if self.graph is None:
            self._model.fit(x, y)  # log ratio
        else:  # additive features: the ratio itself, weighted so that errors count relatively
            ratio = np.exp(y)
            self._model.fit(x, ratio, ridgecv__sample_weight=1.0 / ratio**2)
        self._fitted_on = len(self._y)

    # -- decisions -----------------------------------------------------------------------
    @property
    def margin(self) -> float:
        recent = np.abs(self.errors[-RECENT:])
        return max(self.min_margin, 2 * float(np.percentile(recent, 90))) if recent.size else self.min_margin

    def beyond(self, candidate: Candidate, budget_ratio: float) -> tuple[bool, float | None]:
        """(whether the candidate is predicted over budget by the safe margin, the prediction)."""
        predicted = self.predict(candidate)
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
