"""GPU backends: ort-cuda, ort-tensorrt, torch-cuda, tensorrt.

What needs a GPU is skipped here with the backend's own reason (``Device.available()``). What
does not is tested for real on the CPU: the builder plan an artifact implies (QDQ -> int8, fp16
layers, 2:4 weights), and the ONNX -> torch interpreter torch-cuda runs, against onnxruntime.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from autotune.devices import BACKENDS, OrtCpuDevice, Protocol, RuntimeOptions
from autotune.devices._onnx_info import analyse, is_2_4
from autotune.devices._onnx_torch import OnnxModule
from autotune.devices.tensorrt_engine import build_plan, engine_key
from autotune.knobs._quantize import quantize_model
from autotune.knobs._sparsity import apply_sparsity, make_permanent
from autotune.measure._canary import canary_inputs, write_canary
from autotune.space._profiles import load_profile
from autotune.task._onnx_export import export_onnx, weighted_nodes
from autotune.task.zoo import MLP, ConcatNet, DigitsNet, TinyTransformer

GPU_BACKENDS = ("ort-cuda", "ort-tensorrt", "torch-cuda", "tensorrt")
QUICK = Protocol.quick()


def export(model: nn.Module, x: torch.Tensor, path: Path) -> Path:
    export_onnx(model.eval(), (x,), path)
    return path


def ort_output(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


class SmallConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


# -- registry and availability --------------------------------------------------------------
def test_importing_devices_needs_no_gpu_stack() -> None:
    # the registry is lazy: naming the backends loads none of them (not even onnxruntime)
    code = (
        "import sys, autotune.records, autotune.devices as d; "
        "bad = [m for m in ('onnxruntime', 'torch', 'tensorrt', 'cuda', 'pycuda') if m in sys.modules]; "
        "assert not bad, bad; print(sorted(d.BACKENDS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for backend in ("ort-cpu", *GPU_BACKENDS):
        assert backend in out


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_backend_declares_capabilities_and_says_why_not(backend: str) -> None:
    cls = BACKENDS[backend]
    ok, why = cls.available()
    assert isinstance(ok, bool) and (ok or why)  # never a silent "no"
    caps = cls.capabilities
    assert caps.measures and 32 in caps.bits and "fp32" in caps.precisions


@pytest.mark.parametrize(
    ("profile", "backend"), [("cuda", "ort-cuda"), ("tensorrt-gpu", "tensorrt"), ("torch-gpu", "torch-cuda")]
)
def test_gpu_profiles_only_list_knob_values_their_backend_makes_real(profile: str, backend: str) -> None:
    p = load_profile(profile)
    assert p.backend == backend
    caps = BACKENDS[backend].capabilities
    assert set(p.knobs["bits"]) <= set(caps.bits) and set(p.knobs["sparsity"]) <= set(caps.sparsity)
    assert p.runtime["threads"] and p.notes


# -- what the artifact asks of the builder (no GPU needed) ----------------------------------
def test_is_2_4_pattern() -> None:
    assert is_2_4(np.array([[1, 0, 2, 0, 0, 3, 0, 4]], np.float32))
    assert not is_2_4(np.array([[1, 1, 2, 0, 0, 3, 0, 4]], np.float32))
    assert not is_2_4(np.zeros((2, 6), np.float32))  # does not divide by 4


def test_traits_of_real_artifacts_drive_the_tensorrt_build_plan(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 8, 8)
    dense = export(SmallConv(), x, tmp_path / "dense.onnx")
    sparse_model = SmallConv()
    make_permanent(apply_sparsity(sparse_model, {"conv1": "2:4", "conv2": "2:4", "fc": "2:4"}))
    sparse = export(sparse_model, x, tmp_path / "sparse.onnx")
    int8 = tmp_path / "int8.onnx"
    nodes = [n.name for n in weighted_nodes(onnx.load(str(sparse)))]
    quantize_model(sparse, int8, {n: 8 for n in nodes}, [(x.numpy(),)])
    fp16 = tmp_path / "fp16.onnx"
    quantize_model(dense, fp16, {nodes[0]: 16}, [(x.numpy(),)])

    t_dense, t_sparse, t_int8, t_fp16 = (analyse(p) for p in (dense, sparse, int8, fp16))
    assert t_dense.describe() == "fp32" and not t_dense.sparse_2_4
    assert len(t_sparse.sparse_2_4) == 3  # both convs and the Linear, input-channel groups of 4
    assert t_int8.qdq and len(t_int8.sparse_2_4) == 3  # found through DequantizeLinear
    assert t_fp16.fp16 and not t_fp16.qdq

    ampere, turing = (8, 0), (7, 5)
    fp32 = RuntimeOptions()
    assert build_plan(t_dense, fp32, ampere) == {
        "fp16": False,
        "int8": False,
        "sparse_weights": False,
        "pin_fp32_layers": False,
    }
    assert build_plan(t_int8, fp32, ampere) == {
        "fp16": False,
        "int8": True,
        "sparse_weights": True,
        "pin_fp32_layers": False,
    }
    assert not build_plan(t_sparse, fp32, turing)["sparse_weights"]  # 2:4 needs Ampere+
    # one fp16 layer: fp16 on, the artifact's fp32 layers pinned by precision constraints
    assert build_plan(t_fp16, fp32, ampere)["fp16"] and build_plan(t_fp16, fp32, ampere)["pin_fp32_layers"]
    everything_fp16 = build_plan(t_dense, RuntimeOptions(precision="fp16"), ampere)
    assert everything_fp16["fp16"] and not everything_fp16["pin_fp32_layers"]

    plan = build_plan(t_dense, fp32, ampere)
    stack = {"tensorrt": "10.0", "gpu": "A100"}
    key = engine_key("ab" * 32, plan, {"input": (1, 8, 8, 8)}, stack)
    assert key == engine_key("ab" * 32, plan, {"input": (1, 8, 8, 8)}, stack)
    assert key != engine_key("ab" * 32, plan, {"input": (2, 8, 8, 8)}, stack)
    assert key != engine_key("ab" * 32, plan, {"input": (1, 8, 8, 8)}, {**stack, "tensorrt": "10.1"})


# -- the torch-cuda interpreter, checked on the CPU against onnxruntime ----------------------
@pytest.mark.parametrize(
    ("name", "model", "shape"),
    [
        ("digits", DigitsNet(), (2, 1, 32, 32)),
        ("concat", ConcatNet(), (1, 1, 32, 32)),
        ("mlp", MLP(), (3, 64)),
        ("transformer", TinyTransformer(), (2, 16, 64)),
    ],
)
def test_onnx_torch_interpreter_matches_onnxruntime(
    name: str, model: nn.Module, shape: tuple[int, ...], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape)
    path = export(model, x, tmp_path / f"{name}.onnx")
    with torch.inference_mode():
        (ours,) = OnnxModule(path).eval()(x)
    np.testing.assert_allclose(ours.numpy(), ort_output(path, x.numpy()), rtol=1e-4, atol=1e-4)

    # an artifact with fp16 layers keeps them fp16 (Casts honoured), and still agrees
    fp16 = tmp_path / f"{name}-fp16.onnx"
    first = [n.name for n in weighted_nodes(onnx.load(str(path)))][:2]
    quantize_model(path, fp16, {n: 16 for n in first}, [(x.numpy(),)])
    module = OnnxModule(fp16)
    assert any(getattr(module, b).dtype == torch.float16 for b in module._names.values())
    with torch.inference_mode():
        (half,) = module(x)
    np.testing.assert_allclose(half.float().numpy(), ort_output(fp16, x.numpy()), rtol=2e-2, atol=2e-2)


def test_onnx_torch_interpreter_refuses_int8_by_name(tmp_path: Path) -> None:
    x = torch.randn(1, 64)
    path = export(MLP(), x, tmp_path / "mlp.onnx")
    int8 = tmp_path / "int8.onnx"
    quantize_model(path, int8, {n.name: 8 for n in weighted_nodes(onnx.load(str(path)))}, [(x.numpy(),)])
    with pytest.raises(NotImplementedError, match=r"QuantizeLinear.*tensorrt"):
        OnnxModule(int8)


# -- real GPU measurements (skipped with the reason where there is no GPU) ------------------
@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_backend_measures_with_the_protocol(backend: str, tmp_path: Path) -> None:
    cls = BACKENDS[backend]
    ok, why = cls.available()
    if not ok:
        pytest.skip(f"{backend}: {why}")
    device = cls()
    x = torch.randn(1, 1, 32, 32)
    path = export(DigitsNet(), x, tmp_path / "digits.onnx")
    m = device.measure(path, {"input": x.numpy()}, RuntimeOptions(), QUICK)
    assert m.usable, m.error
    assert m.n >= QUICK.min_samples and 0 < m.min_ms <= m.median_ms <= m.p99_ms
    assert m.load_ms > 0 and m.first_run_ms > 0
    assert m.fingerprint["gpu"] and m.fingerprint["compute_capability"]
    if backend == "tensorrt":
        assert m.gpu_compute is not None and m.gpu_compute.median_ms > 0 and (m.host_io_ms or 0) > 0
        again = device.measure(path, {"input": x.numpy()}, RuntimeOptions(), QUICK)
        assert again.extra["engine_cache"] == "hit"
    if backend == "torch-cuda":
        assert m.cuda_graph == "captured", m.cuda_graph
    if backend.startswith("ort-"):
        assert m.extra["providers"][0] == cls.provider  # type: ignore[attr-defined]
    canary = device.measure(write_canary(tmp_path), canary_inputs(), RuntimeOptions(), QUICK)
    assert canary.usable


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["tensorrt", "ort-tensorrt"])
def test_tensorrt_int8_and_fp16_artifacts_build(backend: str, tmp_path: Path) -> None:
    cls = BACKENDS[backend]
    ok, why = cls.available()
    if not ok:
        pytest.skip(f"{backend}: {why}")
    x = torch.randn(1, 8, 16, 16)
    path = export(SmallConv(), x, tmp_path / "m.onnx")
    nodes = [n.name for n in weighted_nodes(onnx.load(str(path)))]
    for bits in (8, 16):
        out = tmp_path / f"m{bits}.onnx"
        quantize_model(path, out, {n: bits for n in nodes}, [(x.numpy(),)])
        m = cls().measure(out, {"input": x.numpy()}, RuntimeOptions(), QUICK)
        assert m.usable, m.error


@pytest.mark.gpu
def test_torch_gpu_search_measures_fp16_candidates_paired(tmp_path: Path) -> None:
    ok, why = BACKENDS["torch-cuda"].available()
    if not ok:
        pytest.skip(f"torch-cuda: {why}")
    from tiny_tasks import conv_task

    import autotune

    result = autotune.search(
        conv_task(),
        budget="95%",
        device="torch-gpu",
        trials=6,
        out_dir=tmp_path / "runs",
        protocol=QUICK,
        progress=False,
        report=False,
        keep_going=True,
    )
    fp16 = result.baselines["fp16"]
    m = fp16.measurement
    assert m.usable and m.paired and m.fingerprint["backend"] == "torch-cuda", m.error
    assert m.cuda_graph == "captured" and m.extra["cudnn_benchmark"] is False
    assert m.ratio_ci[0] <= m.ratio <= m.ratio_ci[1]
    halves = [i for i in onnx.load(str(fp16.artifact_path)).graph.initializer if i.data_type == 10]
    assert halves  # the measured artifact really holds fp16 weights
    print(f"fp16 / fp32 on {m.fingerprint['gpu']}: {m.ratio:.3f} [{m.ratio_ci[0]:.3f}, {m.ratio_ci[1]:.3f}]")


def test_cpu_reference_backend_still_measures_the_canary(tmp_path: Path) -> None:
    m = OrtCpuDevice().measure(write_canary(tmp_path), canary_inputs(), RuntimeOptions(), QUICK)
    assert m.usable


def test_device_for_profile_uses_the_from_profile_classmethod() -> None:
    from autotune.devices import device_for_profile
    from autotune.space._profiles import load_profile

    assert isinstance(device_for_profile(load_profile("cpu")), OrtCpuDevice)  # base: no options
    # GPU backends override it to read their options (constructing one needs no GPU)
    profile = type("P", (), {"options": {"device_id": 1, "cuda_graphs": False}})()
    dev = BACKENDS["torch-cuda"].from_profile(profile)
    assert (dev.device_id, dev.cuda_graphs, dev.cudnn_benchmark) == (1, False, False)
    dev = BACKENDS["torch-cuda"].from_profile(load_profile("torch-gpu"))
    assert (dev.cuda_graphs, dev.cudnn_benchmark) == (True, False)  # heuristics: same pick each run
    # the settings are in the fingerprint, so a measurement cached under the other is not reused
    timed = BACKENDS["torch-cuda"](cudnn_benchmark=True)
    assert dev.fingerprint()["cudnn_benchmark"] is False and timed.fingerprint()["cudnn_benchmark"] is True
    # TensorRT's builder workspace too (it limits the tactics the builder may choose)
    trt = BACKENDS["tensorrt"].from_profile(type("P", (), {"options": {"workspace_mb": 256}})())
    assert trt.fingerprint()["workspace_mb"] == 256
    assert BACKENDS["tensorrt"]().fingerprint()["workspace_mb"] == 2048


def test_gpu_backends_share_the_single_and_paired_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CudaDevice measures alone or paired from a backend's ``prepared``; runs here without a GPU."""
    from contextlib import contextmanager

    from autotune.devices import Measurement, Reference
    from autotune.devices._gpu import CudaDevice, Prepared

    monkeypatch.setenv("AUTOTUNE_LOCK_DIR", str(tmp_path / "locks"))
    opened: list[str] = []

    class FakeGpu(CudaDevice):
        backend = "fake-gpu"

        @contextmanager
        def prepared(self, model_path, inputs, runtime):
            if model_path.name == "bad.onnx":
                yield Measurement(status="invalid_model", backend=self.backend, error="bad")
                return
            n = 40_000 if model_path.name == "big.onnx" else 500  # 80x apart: any host tells
            opened.append(model_path.name)
            yield Prepared(
                run=lambda: sum(range(n)),
                load_ms=1.0,
                finish=lambda m: m.extra.update(finished=model_path.name),
                extra={"engine_cache": "built"},
            )
            opened.remove(model_path.name)  # released after the measurement

    dev = FakeGpu()
    small, big, bad = tmp_path / "small.onnx", tmp_path / "big.onnx", tmp_path / "bad.onnx"
    m = dev.measure_paired(small, {}, Reference(big, {}, "e" * 64), RuntimeOptions(), QUICK)
    assert m.usable and m.paired and m.ratio < 1 and m.reference_sha256 == "e" * 64
    assert m.extra["finished"] == "small.onnx" and m.extra["engine_cache"] == "built" and m.load_ms == 1.0
    assert "gpu_state" in m.extra and opened == []
    alone = dev.measure(small, {}, RuntimeOptions(), QUICK)
    assert alone.usable and not alone.paired and alone.extra["finished"] == "small.onnx"
    assert dev.measure_paired(bad, {}, Reference(big, {}), RuntimeOptions(), QUICK).status == "invalid_model"
    failed = dev.measure_paired(small, {}, Reference(bad, {}), RuntimeOptions(), QUICK)
    assert failed.status == "build_error" and "the reference bad.onnx does not load" in failed.error
