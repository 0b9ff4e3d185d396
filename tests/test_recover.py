"""Built-in recovery: BatchNorm re-estimation, distillation, and how the artifact builder uses them."""

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_tasks import agreement_task

from autotune._util import sha256_file
from autotune.build._builder import ArtifactBuilder
from autotune.build._recover import Recovery, distill, recalibrate_bn, recover
from autotune.errors import UserError
from autotune.knobs._width import prune_width
from autotune.space._profiles import load_profile
from autotune.space._space import build_space, load_preset
from autotune.task.zoo import DigitsNet


def test_batchnorm_statistics_are_re_estimated_exactly_on_the_inputs() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8)).eval()
    batches = [(torch.randn(16, 1, 8, 8) * 2 + 3,) for _ in range(4)]
    assert recalibrate_bn(model, batches)
    with torch.no_grad():
        acts = torch.cat([model[0](b[0]) for b in batches])
    bn = model[1]
    assert torch.allclose(bn.running_mean, acts.mean((0, 2, 3)), atol=1e-4)
    assert bn.momentum == 0.1 and not bn.training  # restored


def test_too_few_inputs_leave_the_statistics_alone() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8)).eval()
    assert not recalibrate_bn(model, [(torch.randn(1, 1, 8, 8),)])
    assert torch.equal(model[1].running_mean, torch.zeros(8))


def test_distillation_brings_a_pruned_student_closer_to_its_teacher() -> None:
    torch.manual_seed(0)
    teacher = DigitsNet(16).eval()
    batches = [(torch.randn(32, 1, 32, 32),) for _ in range(4)]
    recalibrate_bn(teacher, batches)  # statistics that fit the data, as a trained model's do
    with torch.no_grad():
        teacher.fc.weight.mul_(20)  # confident outputs, so there is something to distill
    x = torch.randn(1, 1, 32, 32)
    student = copy.deepcopy(teacher)
    prune_width(student, (x,), {"stem.0": 0.5, "layer2.0.conv1": 0.5}, ["fc"])

    def kl() -> float:
        with torch.no_grad():
            data = torch.cat([b[0] for b in batches])
            return float(
                F.kl_div(
                    F.log_softmax(student(data), -1), F.softmax(teacher(data), -1), reduction="batchmean"
                )
            )

    before = kl()
    distill(student, teacher, batches, Recovery(mode="kd", steps=40))
    assert kl() < 0.5 * before
    assert not student.training


def test_a_users_finetune_takes_precedence_over_distillation() -> None:
    torch.manual_seed(0)
    calls: list[str] = []
    task = agreement_task(DigitsNet(16), torch.randn(32, 1, 32, 32), "digits")
    task.finetune = lambda student, teacher: calls.append("finetune")
    student = copy.deepcopy(task.model)
    assert recover(student, task.model, task, Recovery(mode="kd", steps=5)) == ["bn", "finetune"]
    assert calls == ["finetune"]
    # final recovery distils on top of the task's finetune, and says how many steps ran
    ran = recover(student, task.model, task, Recovery(mode="kd", steps=3, after_finetune=True))
    assert ran == ["bn", "finetune", "kd"] and ran.info == {"kd_steps": 3} and calls == ["finetune"] * 2
    task.finetune = None
    assert recover(student, task.model, task, Recovery(mode="none")) == []


def test_bad_recovery_options_are_one_line_errors() -> None:
    with pytest.raises(UserError, match="--recover 'kdd'"):
        Recovery(mode="kdd")
    with pytest.raises(UserError, match="--recover-steps"):
        Recovery(steps=-1)


def test_pruned_candidates_are_recovered_and_their_unrecovered_build_kept(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = agreement_task(DigitsNet(16), torch.randn(64, 1, 32, 32), "digits")
    space = build_space(task, load_preset(None), load_profile("cpu"))
    builder = ArtifactBuilder(task, space, tmp_path / "a", recovery=Recovery(mode="kd", steps=10))
    narrow = space.candidate(space.baselines()["w0.5+int8"])
    art = builder.build(narrow)
    assert art.recovery == ["bn", "kd"]
    assert art.unrecovered is not None and sha256_file(art.unrecovered) != art.sha256
    assert art.timings["finetune"] > 0
    bits_only = builder.build(space.candidate(space.baselines()["int8"]))
    assert bits_only.recovery == [] and bits_only.unrecovered is None
