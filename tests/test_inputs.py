"""Inputs of any kind (issue 22, item 1): int64 token ids, attention masks, several inputs, dict
inputs, ONNX inputs under any name, and ``--data`` checked against the graph in one line.

Real searches, real exports, a real agent over loopback HTTP; no stubs.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from optuna.trial import TrialState
from torch import nn

import autotune
from autotune import cli
from autotune.commands._task import load_task
from autotune.commands.measure import make_inputs
from autotune.devices import Protocol, RuntimeOptions, device_for_profile
from autotune.errors import UserError
from autotune.inputs import InputError, graph_inputs
from autotune.space import load_profile
from autotune.study import SearchConfig
from autotune.study._predictor import LatencyPredictor, kernel_work
from autotune.task import Task
from autotune.task._evaluate import OrtRunner
from autotune.task._onnx_export import export_onnx
from autotune.tune import run_search

QUICK = Protocol.quick()
VOCAB, SEQ = 50, 12


class TokenClassifier(nn.Module):
    """Keyword inputs as a Hugging Face model takes them: int64 ids and an int64 mask; a padded
    position (mask 0) must not change the logits, so a mask fed to the wrong input shows."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 32)
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 4)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        assert attention_mask is not None
        m = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.emb(input_ids) * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.fc2(torch.relu(self.fc1(pooled)))


def token_batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, SEQ), generator=g)
    lengths = torch.randint(3, SEQ + 1, (n,), generator=g)
    mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).to(torch.int64)  # right padding
    return {"input_ids": ids, "attention_mask": mask}


def token_task(name: str = "tokens") -> Task:
    torch.manual_seed(0)
    model = TokenClassifier().eval()
    data = token_batch(64)
    with torch.no_grad():
        reference = model(**data).argmax(-1).numpy()

    def evaluate(runner: Any) -> float:
        return float((runner(**data).argmax(-1) == reference).mean() * 100)

    calibration = [{k: v[i : i + 16].numpy() for k, v in data.items()} for i in range(0, 64, 16)]
    # the dict deliberately not in forward's order: the task orders it as the exporter binds it
    example = {"attention_mask": data["attention_mask"][:1], "input_ids": data["input_ids"][:1]}
    return Task(source=model, example_inputs=example, evaluate=evaluate, calibration=calibration, name=name)


# -- the torch path ------------------------------------------------------------------------------
def test_dict_inputs_export_under_their_names_and_the_runner_feeds_them_by_name(tmp_path: Path) -> None:
    task = token_task()
    assert task.input_names == ["input_ids", "attention_mask"]  # forward's order, not the dict's
    feeds = task.example_feeds()
    assert {k: v.dtype for k, v in feeds.items()} == {"input_ids": np.int64, "attention_mask": np.int64}
    assert all(b[0].dtype == np.int64 for b in task.calibration)
    path = tmp_path / "m.onnx"
    export_onnx(task.model, task.example_inputs, path)
    specs = graph_inputs(onnx.load(str(path)))
    assert [(s.name, str(s.dtype), s.dims) for s in specs] == [
        ("input_ids", "int64", (None, SEQ)),
        ("attention_mask", "int64", (None, SEQ)),
    ]
    data = token_batch(8, seed=1)
    with torch.no_grad():
        expected = task.model(**data).numpy()
    runner = OrtRunner(path, names=task.input_names)
    np.testing.assert_allclose(runner(**data), expected, rtol=1e-4, atol=1e-5)  # by keyword
    np.testing.assert_allclose(runner(data), expected, rtol=1e-4, atol=1e-5)  # one dict
    positional = runner(data["input_ids"].numpy().astype(np.int32), data["attention_mask"])
    np.testing.assert_allclose(positional, expected, rtol=1e-4, atol=1e-5)  # int32 ids cast to int64
    with pytest.raises(
        InputError, match=r"input 'input_ids' float32\[8x12\]: the model's input 'input_ids' is int64"
    ):
        runner(input_ids=data["input_ids"].float(), attention_mask=data["attention_mask"])
    with pytest.raises(InputError, match=r"no value for model input\(s\) \['attention_mask'\]"):
        runner(input_ids=data["input_ids"])


def test_inputs_that_cannot_be_fed_are_one_line() -> None:
    with pytest.raises(UserError, match=r"example_inputs key 'token_type' is not a named parameter"):
        Task(source=TokenClassifier(), example_inputs={"token_type": torch.zeros(1, 3)}, evaluate=len)
    with pytest.raises(UserError, match=r"example_inputs\['input_ids'\] is a list that is not a tensor"):
        Task(
            source=TokenClassifier(),
            example_inputs={"input_ids": [torch.zeros(2), torch.zeros(3)]},
            evaluate=len,
        )
    with pytest.raises(UserError, match=r"example_inputs\[0\] is a ndarray that is not a tensor"):
        Task(source=TokenClassifier(), example_inputs=(np.array(["a"]),), evaluate=len)
    with pytest.raises(UserError, match=r"calibration: a batch has no array for input 'attention_mask'"):
        Task(
            source=TokenClassifier(),
            example_inputs=token_batch(1),
            evaluate=len,
            calibration=[{"input_ids": np.zeros((1, SEQ), np.int64)}],
        )


def test_token_model_with_dict_inputs_is_searched_with_width_and_int8(tmp_path: Path) -> None:
    """Measured, calibrated, pruned (recovery on int64 batches) and scored on its own inputs.
    (6 trials: fp32, int8, the two floors, then w0.75.)"""
    result = autotune.search(
        token_task(), budget="150%", trials=6, out_dir=tmp_path / "runs", protocol=QUICK,
        progress=False, report=False, recover="kd", recover_steps=5,
    )  # fmt: skip
    trials = {t.user_attrs.get("baseline"): t for t in result.study.get_trials(deepcopy=False)}
    for name in ("fp32", "int8", "w0.75"):
        assert trials[name].state == TrialState.COMPLETE, trials[name].user_attrs.get("fail_reason")
    assert trials["fp32"].values[0] == 100.0
    assert trials["int8"].values[0] >= 90.0  # int8 on real int64 calibration batches
    assert trials["w0.75"].user_attrs["recovery"]["ran"] == ["kd"]  # distilled on int64 batches
    artifact = result.run_dir / trials["int8"].user_attrs["artifact"]["path"]
    assert [s.name for s in graph_inputs(onnx.load(str(artifact)))] == ["input_ids", "attention_mask"]


def test_predictor_features_read_shapes_through_int64_inputs(tmp_path: Path) -> None:
    task = token_task()
    path = tmp_path / "m.onnx"
    export_onnx(task.model, task.example_inputs, path)
    work = kernel_work(path, task.example_feeds())
    assert sum(work.macs.values()) == 32 * 64 + 64 * 4  # fc1 + fc2 for one row, behind the Gather
    predictor = LatencyPredictor(path, task.example_feeds())
    assert np.isfinite(predictor.features(path, RuntimeOptions(threads=1))).all()


@contextlib.contextmanager
def _without_torchvision_fakes() -> Iterator[None]:
    """transformers imports torchvision, whose compiled ops do not load beside the CPU torch
    wheel: registering their fake kernels fails. Model definitions never need them."""
    original = torch.library.register_fake

    @functools.wraps(original)
    def register_fake(op: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(op, str) and op.startswith("torchvision::"):
            return args[0] if args and args[0] is not None else (lambda f: f)
        return original(op, *args, **kwargs)

    torch.library.register_fake = register_fake  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.library.register_fake = original


def test_hugging_face_bert_on_token_ids_and_mask_is_searched(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    with _without_torchvision_fakes():
        from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=4,
    )  # fmt: skip
    model = BertForSequenceClassification(config).eval()
    data = token_batch(32)
    with torch.no_grad():
        reference = model(**data).logits.argmax(-1).numpy()

    def evaluate(runner: Any) -> float:
        return float((runner(data).argmax(-1) == reference).mean() * 100)

    example = {k: v[:1] for k, v in data.items()}
    result = autotune.search(
        model, example, evaluate=evaluate, budget="150%", trials=3, name="bert",
        out_dir=tmp_path / "runs", protocol=QUICK, progress=False, report=False,
    )  # fmt: skip
    trials = {t.user_attrs.get("baseline"): t for t in result.study.get_trials(deepcopy=False)}
    for name in ("fp32", "int8"):
        assert trials[name].state == TrialState.COMPLETE, trials[name].user_attrs.get("fail_reason")
        assert trials[name].user_attrs["measurement"]["median_ms"] > 0
    assert trials["fp32"].values[0] == 100.0  # the padded rows score as in torch: masks fed as masks
    assert 0.0 <= trials["int8"].values[0] <= 100.0


# -- ONNX models through the CLI -----------------------------------------------------------------
class TwoInputs(nn.Module):
    """A float image and int64 ids: several inputs of different dtypes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.emb = nn.Embedding(VOCAB, 8)
        self.fc = nn.Linear(16, 4)

    def forward(self, image: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(image)).mean((2, 3))
        return self.fc(torch.cat([x, self.emb(ids).mean(1)], 1))


@pytest.fixture
def onnx_models(tmp_path: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    single = tmp_path / "single.onnx"
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    torch.onnx.export(
        mlp, (torch.randn(1, 16),), str(single), dynamo=False, input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17,
    )  # fmt: skip
    two = tmp_path / "two.onnx"
    export_onnx(
        TwoInputs().eval(),
        {"image": torch.randn(1, 3, 8, 8), "ids": torch.zeros(1, 5, dtype=torch.int64)},
        two,
    )
    return {"single": single, "two": two}


def _search(model: Path, data: Path, out: Path) -> list[str]:
    return [
        "search", "--model", str(model), "--data", str(data), "--budget", "150%", "--trials", "2",
        "--quick", "--no-progress", "--out", str(out), "--report", str(out / "r.html"),
    ]  # fmt: skip


def test_onnx_input_named_x_is_searched_with_data(
    onnx_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "x.npz"
    x = np.random.default_rng(0).standard_normal((40, 16))  # float64: cast to the input's float32
    np.savez(data, x=x, labels=np.zeros(40, np.int64))
    assert cli.main(_search(onnx_models["single"], data, tmp_path / "runs")) == 0, capsys.readouterr().err
    assert "accuracy" in capsys.readouterr().out
    task = load_task(str(onnx_models["single"]), str(data))
    assert task.input_names == ["x"] and task.example_feeds()["x"].dtype == np.float32
    no_data = _search(onnx_models["single"], data, tmp_path / "bare")
    del no_data[3:5]  # without --data: synthetic inputs, fed as 'x'
    assert cli.main(no_data) == 0, capsys.readouterr().err
    assert "fidelity" in capsys.readouterr().out


def test_onnx_with_float_and_int64_inputs_is_searched_with_data(
    onnx_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "two.npz"
    np.savez(
        data, image=rng.standard_normal((40, 3, 8, 8)).astype(np.float32), ids=rng.integers(0, VOCAB, (40, 5))
    )
    assert cli.main(_search(onnx_models["two"], data, tmp_path / "runs")) == 0, capsys.readouterr().err
    assert "fidelity" in capsys.readouterr().out
    run = str(tmp_path / "sens")
    args = ["sensitivity", "--model", str(onnx_models["two"]), "--data", str(data), "--quick", "--run", run]
    assert cli.main(args) == 0, capsys.readouterr().err
    assert ":bits" in capsys.readouterr().out  # every single change built, measured and scored
    task = load_task(str(onnx_models["two"]), str(data))
    feeds = task.example_feeds()
    assert {k: v.dtype for k, v in feeds.items()} == {"image": np.float32, "ids": np.int64}
    assert task.calibration_feeds()[0]["ids"].dtype == np.int64


def test_onnx_without_data_gets_ids_below_its_embedding_table(onnx_models: dict[str, Path]) -> None:
    task = load_task(str(onnx_models["two"]))
    ids = task.example_feeds()["ids"]
    assert ids.dtype == np.int64 and ids.shape == (1, 5)
    calib = np.concatenate([b["ids"] for b in task.calibration_feeds()])
    assert 0 <= calib.min() and calib.max() < VOCAB and len(np.unique(calib)) > 1
    assert task.evaluate(OrtRunner(onnx_models["two"], names=task.input_names)) == 100.0


def test_measure_command_feeds_ids_below_the_table_and_names_their_dtype(
    onnx_models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["measure", str(onnx_models["two"]), "--quick"]) == 0, capsys.readouterr().err
    assert "ids int64[1x5]" in capsys.readouterr().out
    ids = make_inputs(onnx_models["two"], {}, batch=4)["ids"]
    assert ids.dtype == np.int64 and ids.shape == (4, 5) and 0 <= ids.min() and ids.max() < VOCAB


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        (
            {"image": np.zeros((4, 3, 9, 9), np.float32), "ids": np.zeros((4, 5), np.int64)},
            r"array 'image' float32\[4x3x9x9\]: the model's input 'image' is float32\[\?x3x8x8\]",
        ),
        (
            {"image": np.zeros((4, 3, 8, 8), np.float32), "ids": np.zeros((4, 5), np.float32)},
            r"array 'ids' float32\[4x5\]: the model's input 'ids' is int64\[\?x5\] \(integer data expected",
        ),
        (
            {"image": np.zeros((4, 3, 8, 8), np.float32), "ids": np.array([["a"] * 5] * 4)},
            r"array 'ids' <U1\[4x5\]: the model's input 'ids' is int64\[\?x5\] \(only numeric arrays",
        ),
        (
            {"image": np.zeros((4, 3, 8, 8), np.float32), "tokens": np.zeros((4, 5), np.int64)},
            r"no array for model input\(s\) \['ids'\]; it has \['image', 'tokens'\] \(one array per input, "
            r"named as the input: image float32\[\?x3x8x8\], ids int64\[\?x5\]",
        ),
        (
            {"image": np.zeros((4, 8, 8), np.float32), "ids": np.zeros((4, 5), np.int64)},
            r"array 'image' float32\[4x8x8\]: the model's input 'image' is float32\[\?x3x8x8\]",
        ),
    ],
    ids=["shape", "dtype", "strings", "missing", "rank"],
)
def test_bad_data_is_one_line_and_exit_2(
    onnx_models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    arrays: dict[str, np.ndarray],
    expected: str,
) -> None:
    data = tmp_path / "bad.npz"
    np.savez(data, **arrays)  # type: ignore[arg-type]
    assert cli.main(_search(onnx_models["two"], data, tmp_path / "runs")) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert re.search(expected, err), err


# -- the agent path ------------------------------------------------------------------------------
TOKEN = "inputs-test-token-0123456789abcdef"


def test_int64_inputs_measured_on_a_loopback_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Raw int64 bytes over the wire, fed to the agent's session by name; then a search."""
    from autotune.agent.process import AgentProcess

    monkeypatch.setenv("AUTOTUNE_AGENT_TOKEN", TOKEN)
    task = token_task("tokens-agent")
    path = tmp_path / "tokens.onnx"
    export_onnx(task.model, task.example_inputs, path)
    with AgentProcess(token=TOKEN, root=tmp_path / "agent") as agent:
        profile = tmp_path / "edge.yaml"
        profile.write_text(
            "name: edge-test\nbackend: remote\n"
            f"agents: [{agent.url}]\n"
            "knobs: {width: [1.0], bits: [32, 8], sparsity: [0.0]}\nruntime: {threads: [1]}\n"
        )
        device = device_for_profile(load_profile(str(profile)))
        try:
            feeds = task.example_feeds()
            m = device.measure(path, feeds, RuntimeOptions(threads=1), QUICK)
            # the wire keeps dtypes: the same ids as float32 are what the model refuses
            as_float = {**feeds, "input_ids": feeds["input_ids"].astype(np.float32)}
            refused = device.measure(path, as_float, RuntimeOptions(threads=1), QUICK)
        finally:
            device.close()
        assert m.usable, m.error
        assert m.median_ms > 0 and m.extra["agent"]["url"] == agent.url
        assert not refused.usable and "tensor(int64)" in str(refused.error), refused.error
        cfg = SearchConfig(
            budget="200%", device=str(profile), trials=2, out_dir=tmp_path / "runs",
            protocol=QUICK, report=False, progress=False,
        )  # fmt: skip
        result = run_search(task, cfg)
    trials = result.study.get_trials(deepcopy=False)
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE] * 2
    assert all(t.user_attrs["measurement"]["extra"]["agent"]["url"] == agent.url for t in trials[:2])
