import pytest

from autotune.budget import format_ms, parse_budget, parse_budget_spec, parse_duration, parse_max_drop
from autotune.errors import UserError


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("10ms", 10.0),
        ("10 ms", 10.0),
        ("0.01s", 10.0),
        ("500us", 0.5),
        ("2.5ms", 2.5),
        ("1e-3s", 1.0),
        (3, 3.0),
    ],
)
def test_accepted_forms(text: str, ms: float) -> None:
    assert parse_budget(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["abc", "-3ms", "0", "0ms", "10", "10 kg", "", "ms", "nanms"])
def test_rejected_forms_name_the_accepted_ones(text: str) -> None:
    with pytest.raises(UserError) as err:
        parse_budget(text)
    assert "10ms" in str(err.value) and "500us" in str(err.value)
    assert "\n" not in str(err.value)


def test_format_round_trips() -> None:
    for ms in (0.05, 0.5, 12.0, 250.0):
        assert parse_budget(format_ms(ms)) == pytest.approx(ms)


@pytest.mark.parametrize(("text", "fraction"), [("50%", 0.5), (" 35 % ", 0.35), ("0.5x", 0.5), ("1.2x", 1.2)])
def test_relative_budgets_are_a_share_of_the_reference(text: str, fraction: float) -> None:
    budget = parse_budget_spec(text)
    assert budget.relative and budget.fraction == pytest.approx(fraction)
    assert budget.resolve(2.0) == pytest.approx(2.0 * fraction)
    assert "%" not in budget.slug


def test_absolute_budgets_stay_absolute() -> None:
    budget = parse_budget_spec("0.6ms")
    assert not budget.relative and budget.resolve() == pytest.approx(0.6) and budget.label == "0.6ms"


@pytest.mark.parametrize("text", ["0%", "-5%", "0x", "%", "50", "fifty%"])
def test_bad_relative_budgets_name_both_forms(text: str) -> None:
    with pytest.raises(UserError) as err:
        parse_budget_spec(text)
    assert "50%" in str(err.value) and "10ms" in str(err.value)


def test_max_drop_in_points_or_relative() -> None:
    assert parse_max_drop("1.0").floor(98.0) == pytest.approx(97.0)
    assert parse_max_drop("1%").floor(90.0) == pytest.approx(89.1)
    assert parse_max_drop(0.5).label == "0.5 points"
    for bad in ("-1", "abc", "100%", "nan"):
        with pytest.raises(UserError, match="--max-drop"):
            parse_max_drop(bad)


def test_timeouts() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    assert parse_duration(12) == 12
    for bad in ("0s", "-3m", "soon", "3d"):
        with pytest.raises(UserError, match="--timeout"):
            parse_duration(bad)
