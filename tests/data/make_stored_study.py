"""How ``stored_study/`` was made: a small search run by the previous version (commit caaee44).

Run from a checkout of that commit (``git worktree add /tmp/old caaee44``)::

    PYTHONPATH=/tmp/old:/tmp/old/tests python tests/data/make_stored_study.py tests/data/stored_study

It searches ``tiny_tasks.flaky_task`` (every int8 candidate fails its evaluation, so the study
holds failures), with an accuracy floor, a relative budget (120%: the unmodified model meets it)
and a final recovery, and loads the CPUs part-way so measurements carry the host-load flag
(and, on some hosts, drift). It keeps the study database (vacuumed) and the best trial's
artifact. Then that version loads the kept copy and writes ``expected.json``: what it printed,
reported and exported for it, which tests/test_stored_study.py compares the current code against.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from tiny_tasks import flaky_task

import autotune

STUDY = "stored"


def search(out: Path) -> None:
    """Run the search in a temporary folder; keep its database and the best trial's artifact."""
    task = flaky_task()
    inner = task.evaluate
    burners: list[subprocess.Popen[bytes]] = []
    calls = [0]

    def evaluate(runner: autotune.Runner) -> float:
        calls[0] += 1
        if calls[0] == 4:  # real CPU load from here on: host-busy (and maybe drift) flags
            burners.extend(subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3))
        return inner(runner)

    task.evaluate = evaluate
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = autotune.search(
                task,
                budget="120%",
                trials=12,
                max_drop=99.0,
                keep_going=True,
                recover_final_steps=2,
                out_dir=tmp,
                study_name=STUDY,
                progress=False,
                report=False,
            )
        finally:
            for p in burners:
                p.kill()
                p.wait()
        best = result.best
        assert best is not None, result.summary()
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.run_dir / "study.db", out / "study.db")
        rel = best.artifact_path.relative_to(result.run_dir)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best.artifact_path, out / rel)


def visible_text(page: str, run_dir: Path) -> list[str]:
    """The report's text as a reader sees it (no scripts, styles or tags), paths as ``{run_dir}``,
    without the line that says when it was generated."""
    body = re.sub(r"<(script|style).*?</\1>", "", page, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", "\n", body))
    text = text.replace(str(run_dir), "{run_dir}").replace(os.path.relpath(run_dir), "{run_dir}")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Generated ")]


def expect(out: Path) -> dict[str, object]:
    """What this version prints, reports and exports for the stored study in ``out``."""
    out = out.resolve()
    result = autotune.ParetoSet.load(out)
    best = result.best
    assert best is not None
    with tempfile.TemporaryDirectory() as tmp:
        page = result.report(Path(tmp) / "report.html").read_text()
        exported = best.export(Path(tmp) / "best.onnx")
        export = json.loads(exported.with_suffix(".json").read_text())
    return {
        "version": autotune.__version__,
        "summary": result.summary().replace(str(out), "{run_dir}"),
        "table": result.table(),
        "report": visible_text(page, out),
        "best": best.number,
        "pareto": [t.number for t in result.pareto],
        "trials": {
            str(t.number): {
                "accuracy": t.accuracy,
                "latency_ms": t.latency_ms,
                "size_bytes": t.size_bytes,
                "feasible": t.feasible,
                "baseline": t.baseline,
                "status": t.measurement.status,
                "ratio": t.measurement.ratio,
                "extra": {
                    k: t.measurement.extra[k]
                    for k in ("drift_flag", "host_busy", "paired")
                    if k in t.measurement.extra
                },
            }
            for t in result.trials
        },
        "failures": {str(f.number): [f.stage, f.reason] for f in result.failures},
        "confirmed": {str(k): v for k, v in result.confirmed.items()},
        "borderline": result.borderline,
        "reference_accuracy": result.reference_accuracy,
        "export": {k: v for k, v in export.items() if k != "fingerprint"},
    }


def main(out: Path) -> None:
    search(out)
    expected = expect(out)
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    with sqlite3.connect(out / "study.db") as db:
        db.execute("VACUUM")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
