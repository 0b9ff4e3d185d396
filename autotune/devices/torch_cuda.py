"""torch on an NVIDIA GPU: the ONNX artifact run by a small ONNX -> torch interpreter.

Choice: the device measures the same ONNX file that every other backend measures and that
``evaluate`` scores, so it interprets that graph with torch ops (:mod:`._onnx_torch`) instead
of timing the Task's torch module (which would be a different model: no BN folding, no per-layer
bits). Limitation: only the operators torch.onnx emits for the zoo-style models; fp32 and fp16
(``precision="fp16"`` or the artifact's own fp16 layers); int8 QDQ graphs are refused (use
``tensorrt``). Timing: CUDA events around k back-to-back runs; the graph is captured once as a
CUDA graph when the model allows (``Measurement.cuda_graph`` says whether, and why not).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autotune._util import error_line
from autotune.devices import _cuda
from autotune.devices._base import Capabilities, Measurement, RuntimeOptions, Status
from autotune.devices._gpu import CudaDevice, Prepared
from autotune.devices._timing import load_failure

if TYPE_CHECKING:
    from autotune.space import DeviceProfile  # a later stage: the type only

HOST_RUNS = 20  # runs timed on the host (launch + sync), for extra["host_ms"]


class TorchCudaDevice(CudaDevice):
    """CUDA through torch: cuDNN/cuBLAS kernels, CUDA events, CUDA graphs."""

    backend = "torch-cuda"
    capabilities = Capabilities(
        measures="GPU time between CUDA events around back-to-back runs (CUDA graph replay when capturable)",
        bits=(32, 16),
        sparsity=(0.0,),
        precisions=("fp32", "fp16"),
        notes=(
            "runs the ONNX artifact through autotune's ONNX->torch interpreter (zoo-style operators only)",
            "int8 QDQ and int4 artifacts are refused (no real int8 kernels in torch): use tensorrt",
        ),
    )

    def __init__(self, device_id: int = 0, cuda_graphs: bool = True, cudnn_benchmark: bool = False) -> None:
        self.device_id = device_id
        self.cuda_graphs = cuda_graphs
        self.cudnn_benchmark = cudnn_benchmark

    @classmethod
    def from_profile(cls, profile: DeviceProfile, agent: str | None = None) -> TorchCudaDevice:
        opts = getattr(profile, "options", {}) or {}
        return cls(
            device_id=int(opts.get("device_id", 0)),
            cuda_graphs=bool(opts.get("cuda_graphs", True)),
            cudnn_benchmark=bool(opts.get("cudnn_benchmark", False)),
        )

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import torch
        except ImportError:
            return False, "torch is not installed"
        if torch.version.cuda is None:
            return False, f"torch {torch.__version__} is a CPU-only build (no CUDA)"
        if not torch.cuda.is_available():
            _, why = _cuda.gpu_count()
            return False, why or f"torch {torch.__version__} sees no CUDA GPU"
        return True, ""

    def fingerprint(self) -> dict[str, Any]:
        # the settings that change which kernels run key the measurement cache too
        settings = {"cuda_graphs": self.cuda_graphs, "cudnn_benchmark": self.cudnn_benchmark}
        return {**super().fingerprint(), **settings}

    def runtime_versions(self) -> dict[str, Any]:
        import torch

        return {
            "torch": torch.__version__,
            "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }

    @contextmanager
    def prepared(
        self, model_path: Path, inputs: dict[str, np.ndarray], runtime: RuntimeOptions
    ) -> Iterator[Prepared | Measurement]:
        yield self._prepare(model_path, inputs, runtime)

    def _prepare(
        self, model_path: Path, inputs: dict[str, np.ndarray], runtime: RuntimeOptions
    ) -> Prepared | Measurement:
        import torch

        from autotune.devices._onnx_torch import OnnxModule

        dev = torch.device("cuda", self.device_id)
        # off by default: with cuDNN timing its algorithms per process, the fp16/fp32 ratio of one
        # pair of files spread 6.3% over 5 processes on an H100 (heuristics: 0.08%), none faster
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        float_dtype = torch.float16 if runtime.precision == "fp16" else None
        t0 = time.perf_counter()
        try:
            module = OnnxModule(model_path, float_dtype=float_dtype).eval().to(dev)
            args = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(dev) for n in module.input_names]
            torch.cuda.synchronize(dev)
        except KeyError as exc:
            return Measurement(
                status="runtime_error", backend=self.backend, error=f"no value for input {exc}"
            )
        except Exception as exc:  # noqa: BLE001 - refused operators, bad files, OOM: results
            return load_failure(exc, self.backend)
        load_ms = (time.perf_counter() - t0) * 1e3

        def eager() -> object:
            with torch.inference_mode():
                return module(*args)

        try:  # the first inference, synchronised: cuDNN autotuning lands here
            t0 = time.perf_counter()
            eager()
            torch.cuda.synchronize(dev)
            first_ms = (time.perf_counter() - t0) * 1e3
        except Exception as exc:  # noqa: BLE001
            kind: Status = "oom" if "out of memory" in str(exc).lower() else "runtime_error"
            return Measurement(status=kind, backend=self.backend, error=error_line(exc, with_type=False))

        run, graph_note, capture_ms = eager, "disabled", None
        if self.cuda_graphs:
            try:
                t0 = time.perf_counter()
                run = _capture(eager, dev)
                capture_ms = (time.perf_counter() - t0) * 1e3  # side-stream warm-up + capture
                graph_note = "captured"
            except Exception as exc:  # noqa: BLE001 - eager is the fallback, and the result says so
                torch.cuda.synchronize(dev)
                run, graph_note = eager, f"not capturable: {error_line(exc, 200, with_type=False)}"

        def timer(fn: Any, k: int) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(k):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        def finish(m: Measurement) -> None:
            host = []
            for _ in range(HOST_RUNS):
                t0 = time.perf_counter()
                run()
                torch.cuda.synchronize(dev)
                host.append((time.perf_counter() - t0) * 1e3)
            m.extra["host_ms"] = float(np.median(host))

        extra: dict[str, Any] = {"cudnn_benchmark": self.cudnn_benchmark}
        if capture_ms is not None:
            extra["capture_ms"] = capture_ms
        return Prepared(
            run=run,
            load_ms=load_ms,
            timer=timer,
            first_run_ms=first_ms,
            finish=finish,
            extra=extra,
            cuda_graph=graph_note,
        )


def _capture(eager: Any, dev: Any) -> Any:
    """Warm up on a side stream, capture one run as a CUDA graph; returns its replay."""
    import torch

    stream = torch.cuda.Stream(dev)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream):
        for _ in range(3):
            eager()
    torch.cuda.current_stream(dev).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        eager()  # outputs live in the graph's static memory pool
    graph.replay()
    torch.cuda.synchronize(dev)
    return graph.replay
