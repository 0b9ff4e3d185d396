"""onnxruntime on an NVIDIA GPU: the CUDA and TensorRT execution providers (onnxruntime-gpu).

Inputs and outputs are bound to GPU memory once (IOBinding), so the steady-state samples are
the model's latency with data resident on the device (``Run`` synchronises the stream before it
returns). The latency with host copies (numpy in, numpy out) is reported beside it in
``host_io_ms``, the way trtexec reports both.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import onnxruntime as ort

from autotune._util import error_line
from autotune.devices import _cuda
from autotune.devices._base import Capabilities, Measurement, RuntimeOptions
from autotune.devices._gpu import CudaDevice, Prepared, default_cache_dir
from autotune.devices._onnx_info import static_shapes
from autotune.devices._ort import feeds_for, load_session, session_options
from autotune.devices._timing import load_failure

if TYPE_CHECKING:
    from autotune.space import DeviceProfile  # a later stage: the type only

HOST_IO_RUNS = 20  # runs with host copies, for host_io_ms
_MEASURES = "Run latency, I/O resident in GPU memory (IOBinding); latency with host copies beside it"


class _OrtGpuDevice(CudaDevice):
    """Shared by the CUDA and TensorRT execution providers."""

    provider: ClassVar[str] = ""

    def __init__(self, device_id: int = 0, cache_dir: Path | None = None) -> None:
        self.device_id = device_id
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "ort-tensorrt"

    @classmethod
    def from_profile(cls, profile: DeviceProfile, agent: str | None = None) -> _OrtGpuDevice:
        opts = getattr(profile, "options", {}) or {}
        cache = opts.get("engine_cache")
        return cls(
            device_id=int(opts.get("device_id", 0)), cache_dir=Path(cache).expanduser() if cache else None
        )

    @classmethod
    def available(cls) -> tuple[bool, str]:
        providers = ort.get_available_providers()
        if cls.provider not in providers:
            return False, (
                f"onnxruntime {ort.__version__} has no {cls.provider} "
                f"(has {', '.join(providers)}); pip install onnxruntime-gpu"
            )
        count, why = _cuda.gpu_count()
        if not count:
            return False, why
        return True, ""

    def runtime_versions(self) -> dict[str, Any]:
        return {
            "onnxruntime": ort.__version__,
            "ort_build": ort.get_build_info() if hasattr(ort, "get_build_info") else None,
            "execution_provider": self.provider,
            "execution_providers": ort.get_available_providers(),
        }

    def provider_options(
        self, traits: Any, inputs: dict[str, np.ndarray], runtime: RuntimeOptions
    ) -> dict[str, Any]:
        return {"device_id": self.device_id}

    @contextmanager
    def prepared(
        self, model_path: Path, inputs: dict[str, np.ndarray], runtime: RuntimeOptions
    ) -> Iterator[Prepared | Measurement]:
        traits = self.inspect(model_path)
        if isinstance(traits, Measurement):
            yield traits
            return
        if runtime.precision not in self.capabilities.precisions:
            yield Measurement(
                status="build_error",
                backend=self.backend,
                error=f"{self.backend} runs the artifact's own precision; precision={runtime.precision} "
                "needs the tensorrt backend (or bits=16 layers in the artifact)",
            )
            return
        options = self.provider_options(traits, inputs, runtime)
        providers = [(self.provider, options), "CPUExecutionProvider"]
        yield self._session(model_path, inputs, runtime, providers, options, traits)

    def _session(
        self,
        model_path: Path,
        inputs: dict[str, np.ndarray],
        runtime: RuntimeOptions,
        providers: list[Any],
        options: dict[str, Any],
        traits: Any,
    ) -> Prepared | Measurement:
        try:
            session, load_ms = load_session(model_path, session_options(runtime), providers)
        except Exception as exc:  # noqa: BLE001
            return load_failure(exc, self.backend)
        if session.get_providers()[0] != self.provider:
            return Measurement(
                status="build_error",
                backend=self.backend,
                error=f"{self.provider} was not used (session providers: {session.get_providers()})",
            )
        try:
            feeds = feeds_for(session, inputs)
            binding = session.io_binding()
            for name, array in feeds.items():
                binding.bind_ortvalue_input(
                    name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", self.device_id)
                )
            for out in session.get_outputs():
                binding.bind_output(out.name, "cuda", self.device_id)
        except Exception as exc:  # noqa: BLE001
            return Measurement(
                status="runtime_error", backend=self.backend, error=error_line(exc, with_type=False)
            )

        def finish(m: Measurement) -> None:
            host = []
            for _ in range(HOST_IO_RUNS):
                t0 = time.perf_counter()
                session.run(None, feeds)
                host.append((time.perf_counter() - t0) * 1e3)
            m.host_io_ms = float(np.median(host))
            # TensorRT EP builds its engine lazily, at the first run: build = load + first run
            m.extra["build_ms"] = load_ms + m.first_run_ms
            m.extra["providers"] = session.get_providers()

        return Prepared(
            run=lambda: session.run_with_iobinding(binding),
            load_ms=load_ms,
            finish=finish,
            extra={"artifact_traits": traits.describe()},
            provider_options={k: str(v) for k, v in options.items()},
        )


class OrtCudaDevice(_OrtGpuDevice):
    """onnxruntime's CUDAExecutionProvider (cuDNN convolutions; the algorithm search is the
    ``cudnn_conv_algo_search`` runtime knob, EXHAUSTIVE by default)."""

    backend = "ort-cuda"
    provider = "CUDAExecutionProvider"
    capabilities = Capabilities(
        measures=_MEASURES,
        bits=(32, 16),
        sparsity=(0.0,),
        precisions=("fp32",),
        notes=(
            "fp16: bits=16 layers of the artifact run as fp16 CUDA kernels",
            "int8 QDQ is not fused into int8 kernels by the CUDA EP (no speed-up): use tensorrt",
            "2:4 sparsity needs TensorRT",
        ),
    )

    def provider_options(
        self, traits: Any, inputs: dict[str, np.ndarray], runtime: RuntimeOptions
    ) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "cudnn_conv_algo_search": runtime.cudnn_conv_algo_search,
            "do_copy_in_default_stream": True,
        }


class OrtTensorrtDevice(_OrtGpuDevice):
    """onnxruntime's TensorrtExecutionProvider, with engine and timing caches on disk.

    Nodes TensorRT cannot take fall back to the CUDA EP. The engine is built for exactly the
    measured input shapes; the build time is in ``load_ms + first_run_ms`` (a cached engine
    loads in milliseconds).
    """

    backend = "ort-tensorrt"
    provider = "TensorrtExecutionProvider"
    capabilities = Capabilities(
        measures=_MEASURES,
        bits=(32, 16, 8),
        sparsity=(0.0, "2:4"),
        precisions=("fp32", "fp16"),
        notes=(
            "int8: explicit quantization from the artifact's QDQ nodes",
            "2:4: sparse tensor cores on Ampere and newer (compute capability >= 8.0)",
            "precision=fp16 lets TensorRT run any layer in fp16",
        ),
    )

    def provider_options(
        self, traits: Any, inputs: dict[str, np.ndarray], runtime: RuntimeOptions
    ) -> dict[str, Any]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        shapes = ",".join(f"{n}:{'x'.join(map(str, s))}" for n, s in static_shapes(inputs).items())
        return {
            "device_id": self.device_id,
            "trt_fp16_enable": runtime.precision == "fp16" or traits.fp16,
            "trt_int8_enable": traits.qdq,  # explicit quantization: scales come from the QDQ nodes
            "trt_sparsity_enable": bool(traits.sparse_2_4),
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(self.cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(self.cache_dir),
            "trt_profile_min_shapes": shapes,
            "trt_profile_opt_shapes": shapes,
            "trt_profile_max_shapes": shapes,
        }
