"""The reference model, the feasibility verdict and what the report's sensitivity section gets."""

from pathlib import Path

from tiny_tasks import conv_task

from autotune.build._builder import ArtifactBuilder
from autotune.devices import OrtCpuDevice, Protocol
from autotune.measure import Measurer
from autotune.space._profiles import load_profile
from autotune.space._space import Preset, build_space, load_preset
from autotune.study._guide import Reference, infeasible_message, measure_reference, sensitivity_for_report
from autotune.study._sensitivity import Entry, Table


def test_the_reference_is_the_unmodified_model_even_when_the_preset_leaves_full_width_out(
    tmp_path: Path,
) -> None:
    task = conv_task()
    space = build_space(task, Preset(knobs={"width": [0.5], "bits": [8]}), load_profile("cpu"))
    builder = ArtifactBuilder(task, space, tmp_path / "a")
    measurer = Measurer(OrtCpuDevice(), Protocol.quick(), cache_dir=None, canary_every=0)
    inputs = {"input": task.example_inputs[0].numpy()}
    ref = measure_reference(task, space, builder, measurer, inputs)
    assert ref.accuracy == 100.0  # the model agrees with itself: nothing was narrowed or quantized
    narrow = builder.build(space.candidate(space.baselines()["w0.5+int8"]))
    assert ref.size_bytes > 2 * narrow.size_bytes
    assert Reference.from_dict(ref.to_dict()) == ref


def test_an_unreachable_budget_names_the_floor_and_what_could_go_lower() -> None:
    space = build_space(conv_task(), load_preset(None), load_profile("cpu"))
    ref = Reference(accuracy=99.0, latency_ms=1.0, sha256="x", size_bytes=1)
    measured = [("fp32", 1.0), ("int8", 1.4), ("w0.5", 0.7), ("w0.25", 0.6), ("w0.25+int8", 0.9)]
    msg = infeasible_message(measured, ref, budget_ms=0.5, space=space)
    assert msg is not None and "\n" not in msg
    assert "0.600 ms, 60% of FP32" in msg and "(w0.25)" in msg and "50% of FP32" in msg
    assert "int8 runs at 1.40x FP32" in msg and "number of small ops" in msg and "threads" in msg
    assert infeasible_message(measured, ref, budget_ms=0.65, space=space) is None


def test_a_budget_of_the_models_own_latency_is_never_infeasible() -> None:
    # --budget 100%: the unmodified model meets it by definition, even when the noise put every
    # probed configuration (FP32 itself at 1.01x, int8 slower on a CPU without VNNI) just above
    space = build_space(conv_task(), load_preset(None), load_profile("cpu"))
    ref = Reference(accuracy=99.0, latency_ms=1.0, sha256="x", size_bytes=1)
    measured = [("fp32", 1.01), ("int8", 1.3)]
    assert infeasible_message(measured, ref, budget_ms=1.0, space=space, within=False) is None
    assert infeasible_message(measured, ref, budget_ms=0.99, space=space, within=False) is not None


def test_sensitivity_reaches_the_report_as_layer_by_setting() -> None:
    table = Table(90.0, 1.0, [Entry("conv2:width", 0.5, 88.0, 0.6, -2.0, -0.4)], {})
    assert sensitivity_for_report(table) == {"conv2": {"width 0.5": -2.0}}
