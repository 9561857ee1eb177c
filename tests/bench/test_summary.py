"""The benchmarks' results table: what it says for a result that meets its goal, one that
does not, and one for information; and README's copy kept in step with bench/results/."""

from __future__ import annotations

import json

import pytest

from bench import summary
from bench.report import result, results_folder

MACHINE = {"cores": 2, "memory_gib": 23.5, "platform": "Linux", "python": "3.11.7"}


def _document(folder, benchmark, results):
    (folder / f"{benchmark}.json").write_text(json.dumps(
        {"benchmark": benchmark, "measured_at": "2026-11-29T10:00:00+00:00", "machine": MACHINE,
         "results": results}), encoding="utf-8")


def test_the_table_shows_each_result_against_its_goal(tmp_path):
    _document(tmp_path, "ingest", [
        result("ingest.kafka", 15886.144, 112726.721, "events/s", "≥ 0.5x", goal_ratio=0.5),
        result("ingest.one_large_vs_many_small", 13625.0, 13168.0, "events/s", "≥ 1.0x", goal_ratio=1.0)])
    _document(tmp_path, "scoring", [
        result("scoring.rules", 91.4, 41.4, "seconds", "at most 1.3x", higher_is_better=False),
        {"name": "scoring.rows_copied", "value": 0, "baseline": None, "unit": "rows", "ratio": None,
         "goal": "near 0", "met": True}])

    lines = summary.render(tmp_path).splitlines()

    assert lines[2:6] == [
        "| ingest | kafka | 15,886 | 112,727 | events/s | 0.141 | ≥ 0.5x | **no** | 2026-11-29 |",
        "| ingest | one_large_vs_many_small | 13,625 | 13,168 | events/s | 1.03 | ≥ 1.0x | yes | 2026-11-29 |",
        "| scoring | rules | 91.4 | 41.4 | seconds | 0.453 | at most 1.3x | — | 2026-11-29 |",
        "| scoring | rows_copied | 0 | — | rows | — | near 0 | yes | 2026-11-29 |",
    ]
    assert "2 cores, 23.5 GiB, Python 3.11.7" in lines[-1]


def test_a_time_that_beats_its_goal_ratio_is_met():
    # 1.2 s against a 1.0 s baseline, lower is better: ratio 0.833, goal at most 1.3x.
    measured = result("merge.batch", 1.2, 1.0, "seconds", "at most 1.3x", higher_is_better=False,
                      goal_ratio=round(1 / 1.3, 3))
    assert (measured["ratio"], measured["met"]) == (0.833, True)
    slower = result("merge.batch", 1.4, 1.0, "seconds", "at most 1.3x", higher_is_better=False,
                    goal_ratio=round(1 / 1.3, 3))
    assert (slower["ratio"], slower["met"]) == (0.714, False)


def test_readme_and_summary_hold_the_table_of_the_committed_results():
    readme = summary.README.read_text(encoding="utf-8")
    table = summary.render(results_folder())
    assert summary.with_table(readme, table) == readme, (
        "README.md's benchmark table is out of date: run .venv/bin/python -m bench.summary")
    assert (results_folder() / "summary.md").read_text(encoding="utf-8") == table
    assert summary.main(["--check"]) == 0


def test_check_fails_when_a_result_changes_without_its_table(tmp_path, monkeypatch, capsys):
    _document(tmp_path, "merge", [result("merge.batch", 1.2, 1.0, "seconds", "at most 1.3x",
                                         higher_is_better=False, goal_ratio=0.769)])
    monkeypatch.setenv("TAILOR_BENCH_RESULTS", str(tmp_path))
    assert summary.main(["--check"]) == 1
    assert "run: .venv/bin/python -m bench.summary" in capsys.readouterr().err


def test_a_readme_without_the_markers_is_refused():
    with pytest.raises(SystemExit, match="bench-results:start"):
        summary.with_table("# Tailor\n", "| table |\n")
