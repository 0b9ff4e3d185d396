"""Samplers and recovery methods are named once, in a registry that the configuration check, the
CLI's choices and help, and the code that runs them all read."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import TypeVar

import optuna
import pytest
import torch
from tiny_tasks import agreement_task

from autotune._registry import Registry
from autotune.build import FINAL_RECOVERY, RECOVERIES, Recovery, recover
from autotune.cli import make_parser
from autotune.errors import UserError
from autotune.study import SAMPLERS, SearchConfig, make_sampler
from autotune.task.zoo import DigitsNet

T = TypeVar("T")


@contextlib.contextmanager
def registered(registry: Registry[T], name: str, impl: T, help: str) -> Iterator[None]:
    registry.add(name, impl, help)
    try:
        yield
    finally:
        registry.remove(name)


def _refused_by_the_parser(verb: str, args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser, _ = make_parser(verb)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_sampler_registered_in_a_test_is_accepted_and_listed_everywhere(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seeds: list[int] = []

    def toy(seed: int) -> optuna.samplers.BaseSampler:
        seeds.append(seed)
        return optuna.samplers.RandomSampler(seed=seed)

    with registered(SAMPLERS, "toy", toy, "a sampler registered by a test"):
        assert SearchConfig(budget="10ms", sampler="toy").sampler == "toy"
        assert isinstance(make_sampler("toy", 7), optuna.samplers.RandomSampler) and seeds == [7]
        parser, _ = make_parser("search")
        assert parser.parse_args(["--budget", "10ms", "--sampler", "toy"]).sampler == "toy"
        text = " ".join(parser.format_help().split())  # argparse wraps the help text
        assert "--sampler {auto,tpe,nsga2,gp,random,toy}" in text
        assert "toy: a sampler registered by a test" in text

    # unregistered again: refused in one line that lists the registry's names
    names = ", ".join(SAMPLERS.names())
    with pytest.raises(UserError) as refused:
        SearchConfig(budget="10ms", sampler="toy")
    assert str(refused.value) == f"--sampler 'toy': choose one of {names}"
    with pytest.raises(UserError, match="--sampler 'toy'"):
        make_sampler("toy", 0)
    err = _refused_by_the_parser("search", ["--budget", "10ms", "--sampler", "toy"], capsys)
    assert "invalid choice: 'toy'" in err and all(repr(n) in err for n in SAMPLERS.names())


def test_a_recovery_method_registered_in_a_test_is_accepted_listed_and_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    torch.manual_seed(0)
    task = agreement_task(DigitsNet(16), torch.randn(32, 1, 32, 32), "digits")
    calls: list[int] = []

    def toy(student: torch.nn.Module, teacher: torch.nn.Module, task: object, r: Recovery) -> list[str]:
        calls.append(r.steps)
        return ["toy"]

    with registered(RECOVERIES, "toy", toy, "a recovery registered by a test"):
        assert SearchConfig(budget="10ms", recover="toy").recover == "toy"
        student = copy.deepcopy(task.model)
        assert recover(student, task.model, task, Recovery(mode="toy", steps=3)) == ["toy"]
        assert calls == [3]
        for verb, args in (("search", ["--budget", "10ms"]), ("sensitivity", [])):
            parser, _ = make_parser(verb)
            assert parser.parse_args([*args, "--recover", "toy"]).recover == "toy"
            text = " ".join(parser.format_help().split())
            assert "--recover {bn,kd,none,toy}" in text and "toy: a recovery registered by a test" in text

    names = ", ".join(RECOVERIES.names())
    for make in (lambda: SearchConfig(budget="10ms", recover="toy"), lambda: Recovery(mode="toy")):
        with pytest.raises(UserError) as refused:
            make()
        assert str(refused.value) == f"--recover 'toy': choose one of {names}"
    for verb, args in (("search", ["--budget", "10ms"]), ("sensitivity", [])):
        err = _refused_by_the_parser(verb, [*args, "--recover", "toy"], capsys)
        assert "invalid choice: 'toy'" in err and all(repr(n) in err for n in RECOVERIES.names())


def test_the_final_recovery_is_a_registered_method() -> None:
    assert FINAL_RECOVERY in RECOVERIES
    assert Recovery(mode=FINAL_RECOVERY).mode == FINAL_RECOVERY


def test_a_registry_refuses_a_second_entry_of_a_name_and_a_help_of_several_lines() -> None:
    reg: Registry[int] = Registry("--thing")
    reg.add("a", 1, "the first, 50% of it")
    with pytest.raises(ValueError, match="registered already"):
        reg.add("a", 2, "again")
    with pytest.raises(ValueError, match="one-line help"):
        reg.add("b", 2, "two\nlines")
    assert reg.names() == ("a",) and reg.get("a") == 1 and "b" not in reg
    assert reg.cli("thing", "a")["help"] == "thing (default: a). a: the first, 50%% of it"  # argparse's %
    with pytest.raises(UserError, match="--thing 'z': choose one of a"):
        reg.cli("thing", "z")
