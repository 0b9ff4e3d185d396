"""``--model model.onnx --data FILE.npz``: accuracy on labelled inputs, calibration on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autotune import cli
from autotune.commands._task import load_task
from autotune.errors import UserError
from autotune.task._evaluate import OrtRunner
from autotune.task._onnx_export import export_onnx


@pytest.fixture
def labelled(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    path = tmp_path / "mlp.onnx"
    export_onnx(model, (torch.randn(1, 16),), path)
    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    labels = model(torch.from_numpy(x)).argmax(1).numpy()
    labels[:30] = (labels[:30] + 1) % 4  # 30 of 300 wrong: the FP32 model scores 90%
    data = tmp_path / "data.npz"
    np.savez(data, input=x, labels=labels)
    return path, data, x


def test_npz_with_labels_scores_accuracy_and_calibrates_on_its_inputs(
    labelled: tuple[Path, Path, np.ndarray],
) -> None:
    path, data, x = labelled
    task = load_task(str(path), str(data))
    assert task.metric == "accuracy"
    assert task.evaluate(OrtRunner(path)) == pytest.approx(90.0)
    calibration = np.concatenate([b[0] for b in task.calibration])
    np.testing.assert_array_equal(calibration, x[:256])
    assert tuple(task.example_inputs["input"].shape) == (1, 16)


def test_npz_errors_are_one_line(labelled: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    path, _, x = labelled
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=x)
    with pytest.raises(UserError, match=r"no array for model input\(s\) \['input'\]"):
        load_task(str(path), str(bad))
    np.savez(bad, input=x, labels=np.zeros(5, np.int64))
    with pytest.raises(UserError, match="same number of rows"):
        load_task(str(path), str(bad))
    with pytest.raises(UserError, match=r"--data goes with --model FILE\.onnx"):
        load_task(None, str(bad))


def test_cli_search_with_data_reports_accuracy(
    labelled: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, data, _ = labelled
    args = ["search", "--model", str(path), "--data", str(data), "--budget", "100%", "--trials", "3"]
    args += [
        "--quick",
        "--no-progress",
        "--out",
        str(tmp_path / "runs"),
        "--report",
        str(tmp_path / "r.html"),
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "fidelity" not in out
    assert "90.0" in out  # the unmodified model's accuracy on the labelled rows


def test_cli_sensitivity_with_data_scores_accuracy(
    labelled: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, data, _ = labelled
    run = str(tmp_path / "run")
    assert cli.main(["sensitivity", "--model", str(path), "--data", str(data), "--quick", "--run", run]) == 0
    out = capsys.readouterr().out
    assert "unmodified: 90.00 accuracy" in out  # scored on the labelled rows, not as fidelity
    assert ":bits" in out and (tmp_path / "run" / "sensitivity.json").is_file()
