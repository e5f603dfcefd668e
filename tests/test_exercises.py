"""The graded mode (`make exercises`, bench/exercises.py): every lesson has at least 3 checked exercises with folded
solutions, the checkers pass the solutions and fail the untouched stubs, and a learner's file is never overwritten."""
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import exercises as ex  # noqa: E402

LESSONS = sorted(p.stem for p in (ROOT / "nbs").glob("*.ipynb") if p.stem != "index")
MIN_EXERCISES = 3


@pytest.mark.parametrize("stem", LESSONS)
def test_lesson_has_checked_exercises_with_folded_solutions(stem):
    "At least 3 exercises, each with a folded solution and a hidden cell that runs its checker on more than one answer."
    _, found = ex.read_lesson(stem)
    assert len(found) >= MIN_EXERCISES, f"nbs/{stem}.ipynb has {len(found)} exercise(s) in the graded format; want {MIN_EXERCISES}"
    assert len({e.key for e in found}) == len(found), f"nbs/{stem}.ipynb: exercise keys repeat"
    for e in found:
        assert e.solution.strip(), f"nbs/{stem}.ipynb, exercise {e.key}: no folded solution (<details><summary>Solution</summary>)"
        checker = re.match(r"\s*(\w+)\(", e.call).group(1)
        assert e.hidden.count(checker + "(") >= 2, (f"nbs/{stem}.ipynb, exercise {e.key}: the #| hide cell must run "
                                                    f"{checker} on the solution and on at least one wrong answer")


@pytest.mark.parametrize("stem", LESSONS)
def test_checkers_pass_solutions_and_fail_stubs(stem):
    "Graded on its folded solutions a lesson scores 100%; graded on its own stubs, 0%."
    _, found = ex.read_lesson(stem)
    if not found: pytest.fail(f"nbs/{stem}.ipynb has no exercises")
    on_solutions = ex.grade(stem)
    assert all(p for _, p, _ in on_solutions), [(k, m) for k, p, m in on_solutions if not p]
    on_stubs = ex.grade(stem, ex.sections(ex.stub_file(stem, found)))
    assert not any(p for _, p, _ in on_stubs), [k for k, p, _ in on_stubs if p]
    assert all(m for _, _, m in on_stubs), "every unanswered exercise gets a message"


@pytest.mark.parametrize("stem", LESSONS)
def test_hidden_cells_run_in_the_grading_context(stem):
    "Each exercise's #| hide cell (solution passes, wrong answers fail) runs on the lesson's context alone."
    bad = [(k, err) for k, err in ex.run_hidden(stem) if err]
    assert not bad, f"nbs/{stem}.ipynb: hidden checker cells that fail: {bad}"


def test_answers_file_round_trip_and_never_overwritten(tmp_path, monkeypatch, capsys):
    "The stub file parses back into one section per exercise; main() keeps a learner's file and scores what is in it."
    stem = "03_losses"
    _, found = ex.read_lesson(stem)
    assert list(ex.sections(ex.stub_file(stem, found))) == [e.key for e in found]
    monkeypatch.setattr(ex, "OUT", tmp_path)
    mine = "\n".join(f"{ex.SECTION.format(key=e.key)}\n{e.solution}" for e in found)
    (tmp_path / f"{stem}.py").write_text(mine, encoding="utf-8")
    assert ex.main([stem]) == 0
    assert (tmp_path / f"{stem}.py").read_text(encoding="utf-8") == mine
    assert f"{stem}: {len(found)}/{len(found)}" in capsys.readouterr().out
    (tmp_path / f"{stem}.py").unlink()
    assert ex.main([stem]) == 0 and (tmp_path / f"{stem}.py").read_text(encoding="utf-8") == ex.stub_file(stem, found)
    assert f"{stem}: 0/{len(found)}" in capsys.readouterr().out  # the fresh stubs score nothing, without an error
    assert ex.main(["--solutions", stem]) == 0
