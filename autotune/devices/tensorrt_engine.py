"""Native TensorRT: ONNX parser -> builder -> engine, timed like trtexec.

Build: the artifact decides the precisions. int8 comes from its QDQ nodes (explicit
quantization, INT8 flag); fp16 from its fp16 layers, or everywhere with ``precision="fp16"``;
when the artifact mixes fp16 and fp32 layers, the fp32 ones are pinned to fp32 with per-layer
precision constraints (OBEY_PRECISION_CONSTRAINTS); SPARSE_WEIGHTS is set when weights are in the
2:4 pattern. The engine is built for exactly the measured input shapes. Engines and the
timing cache persist in ``cache_dir`` (default ``~/.cache/autotune/tensorrt``), so a repeated
build is a file read.

Run: inputs and outputs live in GPU memory; one run is ``execute_async_v3`` + stream sync
(the steady-state samples). GPU compute time is taken from CUDA events around each enqueue, and
the latency with host copies (H2D + compute + D2H, pinned host memory) from a short extra
loop; all three are reported, as trtexec reports Latency, GPU Compute Time and H2D/D2H.

Needs the ``tensorrt`` and ``cuda-python`` packages: the ``tensorrt`` extra
(``pip install -e '.[tensorrt]'`` in this repository).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autotune._util import sha256_file
from autotune.devices import _cuda
from autotune.devices._base import Capabilities, Measurement, RuntimeOptions
from autotune.devices._gpu import CudaDevice, Prepared, default_cache_dir
from autotune.devices._onnx_info import static_shapes
from autotune.devices._protocol import summarize
from autotune.devices._timing import load_failure
from autotune.devices._trt import _atomic_write, _check, _cudart, build_plan, engine_key
from autotune.records import LatencyStats

if TYPE_CHECKING:
    from autotune.space import DeviceProfile  # a later stage: the type only

HOST_IO_RUNS = 20
DEFAULT_WORKSPACE = 2 << 30  # bytes of builder scratch memory


class TensorrtDevice(CudaDevice):
    """An NVIDIA GPU through the TensorRT Python API (TensorRT 10)."""

    backend = "tensorrt"
    capabilities = Capabilities(
        measures="execute_async_v3 + stream sync with I/O in GPU memory; GPU compute (CUDA events) "
        "and host latency with H2D/D2H in extra, like trtexec",
        bits=(32, 16, 8),
        sparsity=(0.0, "2:4"),
        precisions=("fp32", "fp16"),
        notes=(
            "int8: explicit quantization from QDQ nodes",
            "2:4: SPARSE_WEIGHTS on Ampere and newer (compute capability >= 8.0)",
            "mixed fp16/fp32 artifacts: fp32 layers pinned with per-layer precision constraints",
        ),
    )

    def __init__(
        self, device_id: int = 0, cache_dir: Path | None = None, workspace: int = DEFAULT_WORKSPACE
    ) -> None:
        self.device_id = device_id
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "tensorrt"
        self.workspace = workspace

    @classmethod
    def from_profile(cls, profile: DeviceProfile, agent: str | None = None) -> TensorrtDevice:
        opts = getattr(profile, "options", {}) or {}
        cache = opts.get("engine_cache")
        return cls(
            device_id=int(opts.get("device_id", 0)),
            cache_dir=Path(cache).expanduser() if cache else None,
            workspace=int(opts.get("workspace_mb", DEFAULT_WORKSPACE >> 20)) << 20,
        )

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import tensorrt  # noqa: F401
        except ImportError as exc:
            return (
                False,
                f"the tensorrt Python package is not importable ({exc}); "
                "install the tensorrt extra (pip install -e '.[tensorrt]' in this repository)",
            )
        try:
            _cudart()
        except ImportError:
            return False, "cuda-python is not installed; pip install cuda-python"
        count, why = _cuda.gpu_count()
        return (True, "") if count else (False, why)

    def runtime_versions(self) -> dict[str, Any]:
        try:
            import tensorrt as trt
        except ImportError:  # unusable then (available() says why); the fingerprint still reads
            return {"tensorrt": None}
        return {"tensorrt": trt.__version__}

    def fingerprint(self) -> dict[str, Any]:
        # the builder's workspace changes which tactics it may pick: never reuse a figure across it
        return {**super().fingerprint(), "workspace_mb": self.workspace >> 20}

    @contextmanager
    def prepared(
        self, model_path: Path, inputs: dict[str, np.ndarray], runtime: RuntimeOptions
    ) -> Iterator[Prepared | Measurement]:
        traits = self.inspect(model_path)
        if isinstance(traits, Measurement):
            yield traits
            return
        plan = build_plan(traits, runtime, _cuda.compute_capability(self.device_id))
        session = _EngineSession(self, model_path, inputs, plan)
        try:
            p = session.open()
            if isinstance(p, Prepared):
                p.extra.update(build_plan=plan, artifact_traits=traits.describe())
            yield p
        finally:
            session.close()


class _Logger:
    """Collects TensorRT's warnings and errors so a failed build says why."""

    def __new__(cls) -> Any:
        import tensorrt as trt

        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: list[str] = []

            def log(self, severity: Any, msg: str) -> None:
                if severity in (
                    trt.ILogger.Severity.INTERNAL_ERROR,
                    trt.ILogger.Severity.ERROR,
                    trt.ILogger.Severity.WARNING,
                ):
                    self.messages.append(msg)

        return Logger()


class _EngineSession:
    """Build (or load) an engine, allocate its buffers, run and time it. GPU only."""

    def __init__(
        self, device: TensorrtDevice, model_path: Path, inputs: dict[str, np.ndarray], plan: dict[str, Any]
    ):
        self.device = device
        self.model_path = Path(model_path)
        self.inputs = inputs
        self.plan = plan
        self.allocations: list[int] = []
        self.host_allocations: list[int] = []
        self.events: list[Any] = []
        self.stream: Any = None
        self.logger: Any = None
        self.runtime: Any = None

    # -- build ------------------------------------------------------------------------------
    def _build(self, trt: Any, logger: Any) -> tuple[bytes, bool]:
        """Serialized engine bytes, and whether they came from the engine cache."""
        dev = self.device
        dev.cache_dir.mkdir(parents=True, exist_ok=True)
        stack = {"tensorrt": trt.__version__, **_cuda.gpu_info(dev.device_id), "workspace": dev.workspace}
        key = engine_key(sha256_file(self.model_path), self.plan, static_shapes(self.inputs), stack)
        engine_path = dev.cache_dir / f"{key}.engine"
        if engine_path.is_file():
            return engine_path.read_bytes(), True

        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch, weakly typed
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(self.model_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ValueError(f"INVALID_GRAPH: the TensorRT ONNX parser refused the model: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, dev.workspace)
        if self.plan["fp16"]:
            config.set_flag(trt.BuilderFlag.FP16)
        if self.plan["int8"]:
            config.set_flag(trt.BuilderFlag.INT8)  # scales come from the QDQ nodes: no calibrator
        if self.plan["sparse_weights"]:
            config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
        if self.plan["pin_fp32_layers"]:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            for i in range(network.num_layers):
                layer = network.get_layer(i)
                outs = [layer.get_output(j) for j in range(layer.num_outputs)]
                if outs and all(o.dtype == trt.float32 for o in outs):
                    layer.precision = trt.float32
                    for j in range(layer.num_outputs):
                        layer.set_output_type(j, trt.float32)
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if tensor.name not in self.inputs:
                raise KeyError(tensor.name)
            shape = static_shapes(self.inputs)[tensor.name]
            profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)
        timing_path = dev.cache_dir / "timing.cache"
        cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
        config.set_timing_cache(cache, False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("TensorRT build failed: " + "; ".join(logger.messages[-3:]))
        _atomic_write(timing_path, bytes(config.get_timing_cache().serialize()))
        data = bytes(serialized)
        _atomic_write(engine_path, data)
        return data, False

    # -- run --------------------------------------------------------------------------------
    def open(self) -> Prepared | Measurement:
        """Build or load the engine, bind its buffers, upload the inputs: ready to run."""
        import tensorrt as trt

        cudart = _cudart()
        backend = self.device.backend
        # the logger and the runtime must outlive the engine (TensorRT keeps raw pointers to them)
        self.logger = logger = _Logger()
        _check(cudart.cudaSetDevice(self.device.device_id))
        t0 = time.perf_counter()
        try:
            data, cached = self._build(trt, logger)
            self.runtime = trt.Runtime(logger)
            engine = self.runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise RuntimeError("cannot deserialize the engine: " + "; ".join(logger.messages[-3:]))
            context = engine.create_execution_context()
            self.stream = _check(cudart.cudaStreamCreate())
            io = self._bind(trt, engine, context)
        except KeyError as exc:
            return Measurement(
                status="runtime_error", backend=backend, error=f"no value for model input {exc}"
            )
        except Exception as exc:  # noqa: BLE001 - a failed build is a result
            return load_failure(exc, backend)
        load_ms = (time.perf_counter() - t0) * 1e3

        start, end = (_check(cudart.cudaEventCreate()) for _ in range(2))
        self.events += [start, end]
        compute_ms: list[float] = []
        stream = self.stream

        def run() -> None:
            _check(cudart.cudaEventRecord(start, stream))
            if not context.execute_async_v3(stream):
                raise RuntimeError("execute_async_v3 failed")
            _check(cudart.cudaEventRecord(end, stream))
            _check(cudart.cudaStreamSynchronize(stream))
            compute_ms.append(_check(cudart.cudaEventElapsedTime(start, end)))

        for host, dev_ptr, nbytes in io["inputs"]:  # inputs uploaded once for the steady state
            _check(cudart.cudaMemcpy(dev_ptr, host, nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))

        def finish(m: Measurement) -> None:
            # CUDA-event compute times of the steady-state runs (not warm-up)
            steady = compute_ms[-m.n * m.runs_per_sample :]
            m.gpu_compute = LatencyStats.from_dict(summarize(steady))
            m.host_io_ms, m.h2d_ms, m.d2h_ms = self._host_io(cudart, run, io)

        return Prepared(
            run=run, load_ms=load_ms, finish=finish, extra={"engine_cache": "hit" if cached else "built"}
        )

    def _bind(self, trt: Any, engine: Any, context: Any) -> dict[str, list[tuple[int, int, int]]]:
        """Pinned host + device buffers for every I/O tensor; inputs filled from ``self.inputs``."""
        cudart = _cudart()
        io: dict[str, list[tuple[int, int, int]]] = {"inputs": [], "outputs": []}
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        for name in names:
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                context.set_input_shape(name, tuple(self.inputs[name].shape))
        for name in names:
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(context.get_tensor_shape(name))
            nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
            dev_ptr = _check(cudart.cudaMalloc(nbytes))
            self.allocations.append(dev_ptr)
            host_ptr = _check(cudart.cudaMallocHost(nbytes))
            self.host_allocations.append(host_ptr)
            if is_input:
                src = np.ascontiguousarray(self.inputs[name], dtype=dtype)
                ctypes.memmove(host_ptr, src.ctypes.data, src.nbytes)
            context.set_tensor_address(name, int(dev_ptr))
            io["inputs" if is_input else "outputs"].append((host_ptr, dev_ptr, nbytes))
        return io

    def _host_io(
        self, cudart: Any, run: Any, io: dict[str, list[tuple[int, int, int]]]
    ) -> tuple[float, float, float]:
        """H2D + run + D2H from pinned memory: trtexec's host latency, with its parts (H2D, D2H)."""
        h2d_k, d2h_k = (
            cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
            cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
        )
        total, h2d, d2h = [], [], []
        for _ in range(HOST_IO_RUNS):
            t0 = time.perf_counter()
            for host, dev_ptr, nbytes in io["inputs"]:
                _check(cudart.cudaMemcpyAsync(dev_ptr, host, nbytes, h2d_k, self.stream))
            _check(cudart.cudaStreamSynchronize(self.stream))
            t1 = time.perf_counter()
            run()
            t2 = time.perf_counter()
            for host, dev_ptr, nbytes in io["outputs"]:
                _check(cudart.cudaMemcpyAsync(host, dev_ptr, nbytes, d2h_k, self.stream))
            _check(cudart.cudaStreamSynchronize(self.stream))
            t3 = time.perf_counter()
            total.append((t3 - t0) * 1e3)
            h2d.append((t1 - t0) * 1e3)
            d2h.append((t3 - t2) * 1e3)
        return float(np.median(total)), float(np.median(h2d)), float(np.median(d2h))

    def close(self) -> None:
        cudart = _cudart()
        for ev in self.events:
            cudart.cudaEventDestroy(ev)
        for ptr in self.allocations:
            cudart.cudaFree(ptr)
        for ptr in self.host_allocations:
            cudart.cudaFreeHost(ptr)
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
