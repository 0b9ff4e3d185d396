"""Baselines are named by what they really are, and the most aggressive configuration is one."""

import torch
from tiny_tasks import agreement_task, conv_task

from autotune.space._profiles import load_profile
from autotune.space._space import Preset, build_space, load_preset
from autotune.task.zoo import TinyTransformer


def test_default_space_baselines_cover_every_uniform_width_with_and_without_int8() -> None:
    space = build_space(conv_task(), load_preset(None), load_profile("cpu"))
    names = list(space.baselines())
    # the floors (this model has no residual block to drop: w0.25+int8 and w0.25) come third and
    # fourth, so that a short run's feasibility probe sees them
    assert names == ["fp32", "int8", "w0.25+int8", "w0.25", "w0.75", "w0.5", "w0.75+int8", "w0.5+int8"]
    assert all(v == 0.25 for k, v in space.baselines()["w0.25"].items() if k.endswith(":width"))


def test_a_preset_without_full_width_gets_no_baseline_called_fp32() -> None:
    preset = Preset(knobs={"width": [0.75, 0.5], "bits": [32, 8]})
    space = build_space(conv_task(), preset, load_profile("cpu"))
    names = list(space.baselines())
    assert "fp32" not in names and "int8" not in names
    assert names[:2] == ["w0.75", "w0.5"]


def test_the_floor_is_the_most_aggressive_configuration() -> None:
    torch.manual_seed(0)
    task = agreement_task(TinyTransformer(), torch.randn(8, 16, 64), "tt")
    space = build_space(task, load_preset(None), load_profile("cpu"))
    floor = space.baselines()["floor"]  # int4 on MatMuls, int8 elsewhere: not a uniform config
    bits = {k: v for k, v in floor.items() if k.endswith(":bits")}
    assert 4 in bits.values() and 8 in bits.values() and 32 not in bits.values()


def test_gpu_profiles_search_fp16_in_every_layer_and_get_fp16_baselines() -> None:
    """The fp16 artifacts were invalid (unsorted graph), so discovery dropped 16 bits everywhere."""
    space = build_space(conv_task(), load_preset(None), load_profile("torch-gpu"))
    assert all(16 in layer.knobs["bits"] for layer in space.layers), space.notes
    names = list(space.baselines())
    assert names == ["fp32", "fp16", "w0.25+fp16", "w0.25", "w0.75", "w0.5", "w0.75+fp16", "w0.5+fp16"]
