"""The HTML report: built from real (quick) runs, rendered in headless Chromium.

The browser test is skipped with a reason when Chromium or playwright is missing
(CI installs ``chromium`` from Debian). The screenshot path is printed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from tiny_tasks import conv_task

import autotune
from autotune.cli import main
from autotune.devices import Protocol
from autotune.report import build_html, default_path, write_report
from autotune.report.browser import chromium_path
from autotune.result._pareto import ParetoSet
from autotune.study._records import RunMeta

QUICK = Protocol.quick()


def _flaky_conv_task() -> autotune.Task:
    """conv_task whose every 5th evaluation fails, so the report has failures to group."""
    task = conv_task()
    inner = task.evaluate
    calls = [0]

    def evaluate(runner: autotune.Runner) -> float:
        calls[0] += 1
        if calls[0] % 5 == 0:
            raise RuntimeError("evaluation exploded on purpose")
        return inner(runner)

    task.evaluate = evaluate
    return task


def _search(out: Path, name: str, budget: str, trials: int) -> ParetoSet:
    return autotune.search(
        _flaky_conv_task(), budget=budget, trials=trials, out_dir=out, study_name=name,
        protocol=QUICK, progress=False, report=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("report") / "runs"


@pytest.fixture(scope="module")
def result(runs: Path) -> ParetoSet:
    """A real run: baselines, sampled trials, failures; everything meets the generous budget."""
    return _search(runs, "main", "50ms", 12)


@pytest.fixture(scope="module")
def none_fit(runs: Path) -> ParetoSet:
    """A real run where nothing can meet the budget (1 us)."""
    return _search(runs, "nofit", "1us", 3)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if chromium_path() is None:
        pytest.skip(
            "no Chromium at /usr/bin/chromium (apt-get install -y chromium; or set AUTOTUNE_CHROMIUM)"
        )
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    from autotune.report.browser import Browser

    with Browser() as b:
        yield b


def _figure_ids(html: str) -> list[str]:
    return re.findall(r'<div id="(fig-[a-z]+)" class="plotly-graph-div"', html)


def _check_rendered(browser: object, report: Path, shot: Path) -> object:
    rendered = browser.render(report, screenshot=shot)  # type: ignore[attr-defined]
    expected = _figure_ids(report.read_text())
    assert rendered.console_errors == []
    assert rendered.external_requests == [], "the report must not touch the network"
    assert rendered.figure_ids == expected and rendered.figures >= 5
    assert rendered.with_svg == rendered.figures and rendered.with_data == rendered.figures
    assert rendered.svgs >= rendered.figures
    assert shot.is_file() and shot.stat().st_size > 10_000
    return rendered


def test_report_renders_in_headless_chromium(
    result: ParetoSet, browser: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = result.report(tmp_path / "main.html")
    rendered = _check_rendered(browser, report, tmp_path / "main.png")
    html = report.read_text()
    assert {
        "fig-front",
        "fig-objectives",
        "fig-latency",
        "fig-layers",
        "fig-importance",
        "fig-progress",
    } <= set(
        rendered.figure_ids  # type: ignore[attr-defined]
    )
    assert "Ship trial" in html and "No trial met the budget" not in html
    for member in result.pareto:
        assert f"--trial {member.number} -o trial{member.number}.onnx" in html
    assert "evaluation exploded on purpose" in html  # the failures, grouped by reason
    # the latency intervals are drawn: one error bar per paired trial, and the confirmed ones
    paired = [t for t in result.trials if t.measurement.ratio_ci]
    assert paired and rendered.error_bars["fig-front"] >= len(paired) + len(result.confirmed)  # type: ignore[attr-defined]
    assert "confirmed (longer protocol" in html and "of the reference (95%)" in html
    with capsys.disabled():
        print(f"\nreport screenshot: {rendered.screenshot} (opened in {rendered.open_s:.2f} s)")  # type: ignore[attr-defined]


def test_borderline_candidates_are_marked_in_the_report_and_the_summary(
    result: ParetoSet, browser: object, tmp_path: Path
) -> None:
    from autotune.study import CONFIRMED_KEY

    study, best = result.study, result.best
    assert best is not None and result.confirmed
    saved = study.user_attrs[CONFIRMED_KEY]
    try:  # the best's confirmed interval straddling the budget, as a confirmation round records it
        c = dict(saved[str(best.number)], borderline=True)
        study.set_user_attr(CONFIRMED_KEY, {**saved, str(best.number): c})
        again = ParetoSet(study, result.run_dir)
        assert again.borderline == [best.number]
        assert (
            f"borderline (the confirmed interval straddles the budget) in trials [{best.number}]"
            in again.summary()
        )
        report = again.report(tmp_path / "borderline.html")
        rendered = _check_rendered(browser, report, tmp_path / "borderline.png")
        assert rendered.point_texts["fig-front"].count("borderline") == 1  # type: ignore[attr-defined]
    finally:
        study.set_user_attr(CONFIRMED_KEY, saved)


def test_no_trial_met_the_budget_is_said_plainly(
    none_fit: ParetoSet, browser: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert none_fit.best is None
    report = none_fit.report(tmp_path / "nofit.html")
    rendered = _check_rendered(browser, report, tmp_path / "nofit.png")
    html = report.read_text()
    verdict = html.index('id="verdict"')
    assert html.index("No trial met the budget of 1us") - verdict < 200  # at the top
    assert "Fastest candidates (none met the budget)" in html
    assert "need at least 8 completed trials" in html  # importances guarded, not crashed
    with capsys.disabled():
        print(f"\nno-fit report screenshot: {rendered.screenshot}")  # type: ignore[attr-defined]


def test_report_is_self_contained_and_escaped(result: ParetoSet, tmp_path: Path) -> None:
    # a copy of the real study with hostile text and a sensitivity table in its metadata
    storage = f"sqlite:///{tmp_path / 'copy.db'}"
    optuna.copy_study(
        from_study_name=result.study.study_name,
        from_storage=result.storage,
        to_storage=storage,
        to_study_name="copy",
    )
    study = optuna.load_study(study_name="copy", storage=storage)
    meta = RunMeta.from_study(study)
    assert meta is not None
    meta.task = "<img src=x onerror=alert(1)>"
    meta.sensitivity = {"stem": {"int8": -0.5, "w0.5": -3.0}, "conv1": {"int8": -0.1, "w0.5": -1.0}}
    meta.save(study)
    html = build_html(ParetoSet(study, result.run_dir))
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert html.count("<script") == 1 + len(_figure_ids(html))  # plotly.js once, one call per figure
    assert len(re.findall(r"\* plotly\.js (\(cartesian - minified\) )?v\d", html)) == 1  # embedded once
    assert not re.search(
        r"""<(script|link|img|iframe)[^>]+(src|href)=""", html
    )  # nothing loaded from elsewhere
    assert "fig-sensitivity" in html
    assert "fig-sensitivity" not in build_html(result)  # shown only when computed


def test_plotlyjs_bundle_falls_back_to_the_full_one() -> None:
    from plotly.offline import get_plotlyjs

    from autotune.report import plotlyjs

    js, label = plotlyjs.bundle({"scatter", "heatmap", "box", "bar"})
    assert "cartesian" in label and len(js) < 2_000_000 and "plotly.js (cartesian - minified) v" in js[:200]
    assert plotlyjs.bundle({"scatter", "scatter3d"}) == (
        get_plotlyjs(),
        label.replace(" (cartesian bundle)", ""),
    )


def test_report_command(result: ParetoSet, runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(runs / "main")]) == 0
    default = tmp_path / default_path("main")
    assert default == tmp_path / "reports" / "main.html" and default.is_file()
    assert main(["report", "--storage", f"sqlite:///{runs / 'main' / 'study.db'}", "--study", "main",
                 "-o", "b.html"]) == 0  # fmt: skip
    assert (tmp_path / "b.html").read_text().count("plotly-graph-div") >= 5
    out = capsys.readouterr().out
    assert "report: b.html" in out
    failures = runs / "main" / "failures"
    assert (
        result.failures
        and f"failed trial(s), grouped by reason in the report; full tracebacks in {failures}" in out
    )
    html = (tmp_path / "b.html").read_text()
    assert "full traceback (first trial)" in html and f"failures/{result.failures[0].number}.txt" in html
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert main(["report"]) == 2
    assert main(["report", str(runs / "main"), "-o", "x.pdf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("autotune: error: ") for line in err)


def test_write_report_is_atomic_and_returns_path(result: ParetoSet, tmp_path: Path) -> None:
    out = write_report(result, tmp_path / "deep" / "r.html")
    assert out == tmp_path / "deep" / "r.html" and out.is_file()
    assert not list(out.parent.glob("*.tmp"))
