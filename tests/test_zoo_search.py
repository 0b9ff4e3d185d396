"""Architectures that break naive compression run end to end: channel shuffle, SE + hardswish,
and a model torch-pruning cannot trace at all (discovery degrades to knobs left out)."""

from pathlib import Path

import torch
from tiny_tasks import agreement_task

import autotune
from autotune.devices import Protocol
from autotune.space._profiles import load_profile
from autotune.space._space import build_space, load_preset
from autotune.task.zoo import MobileNetV3, ShuffleNet


def run(task: autotune.Task, tmp_path: Path, trials: int = 7) -> autotune.ParetoSet:
    return autotune.search(
        task,
        budget="50ms",
        trials=trials,
        out_dir=tmp_path / "runs",
        protocol=Protocol.quick(),
        progress=False,
        report=False,
        recover_final_steps=0,  # trial counts are asserted; final recovery adds a timed number
    )


def test_channel_shuffle_net_searches_without_width_and_says_why(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = agreement_task(ShuffleNet(), torch.randn(32, 1, 32, 32), "shufflenet")
    result = run(task, tmp_path)
    notes = result.meta.notes
    width_notes = [n for n in notes if n.startswith("width not searched")]
    assert width_notes and "torch-pruning" in width_notes[0] and "\n" not in width_notes[0]
    assert not any("width" in layer["knobs"] for layer in result.meta.space["layers"])
    # the remaining knobs are still searched: int8 somewhere, every trial built and scored
    assert not result.failures, [f.user_attrs["fail_reason"] for f in result.failures]
    assert len(result.trials) == 7 and "int8" in result.baselines
    assert result.best is not None


def test_mobile_net_with_squeeze_excite_and_hardswish_prunes_and_quantizes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = agreement_task(MobileNetV3(), torch.randn(32, 1, 64, 64), "mobilenetv3")
    result = run(task, tmp_path)
    assert not result.failures, [f.user_attrs["fail_reason"] for f in result.failures]
    widths = [layer["name"] for layer in result.meta.space["layers"] if "width" in layer["knobs"]]
    assert any(".se." in name for name in widths)  # SE convs couple with their block's channels
    narrow = result.baselines["w0.5"]
    assert narrow.size_bytes < 0.6 * result.baselines["fp32"].size_bytes


class Untraceable(torch.nn.Module):
    """Raises inside torch-pruning's tracing (grad enabled, not exporting), as the ShuffleNet of
    issue 13 did with ZeroDivisionError; exports and runs normally otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export():
            raise ZeroDivisionError("integer division or modulo by zero")
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_a_tracing_crash_leaves_width_out_with_one_note(tmp_path: Path) -> None:
    x = torch.randn(8, 1, 16, 16)
    with torch.no_grad():
        task = agreement_task(Untraceable(), x, "untraceable")
    space = build_space(task, load_preset(None), load_profile("cpu"))
    notes = [n for n in space.notes if n.startswith("width not searched")]
    assert notes == [
        "width not searched: torch-pruning cannot trace the model "
        "(ZeroDivisionError: integer division or modulo by zero)"
    ]
    per_layer = {k: v for k, v in space.parameters().items() if not k.startswith(("runtime:", "recipe:"))}
    assert per_layer == {"conv:bits": [32, 8], "fc:bits": [32, 8]}
