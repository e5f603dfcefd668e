"""The graded mode: `make exercises` copies each lesson's exercise stubs into exercises/ and scores your answers.

    python -m bench.exercises                    # every lesson: write missing stubs, grade exercises/<stem>.py
    python -m bench.exercises 03_losses 06_lora  # only these lessons
    python -m bench.exercises --solutions        # grade the lessons' own folded solutions (exit 1 unless 100%)

How a lesson marks an exercise (the notebooks follow this; `tests/test_exercises.py` checks it):
- a markdown cell `### Exercise N: <title>` states the task;
- the code cell after it starts with `# exercise: <key>`, defines the checker(s), then a line `# your answer`,
  the stub (e.g. `answer_1 = None` or a function that raises NotImplementedError), and ends with `print(<check call>)`;
- the next markdown cell folds the solution: `<details><summary>Solution</summary>` with one ```python block that
  replaces the stub;
- a `#| hide` cell after it runs the checker on the solution (passes) and on at least one wrong answer (fails).

A checker returns a message that starts with "Correct" when the answer is right, and otherwise says what is wrong.
Grading runs, in one fresh namespace per lesson, the lesson's context (its import cells, its `#| export` cells and
any cell that starts with `# exercise setup`), then each checker, your section of exercises/<stem>.py and the check
call. A file you saved in exercises/ is never overwritten: delete it to get the stub back.
"""
from __future__ import annotations

import ast
import json
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
OUT = ROOT / "exercises"  # git-ignored: the learner's answers
KEY = re.compile(r"^# exercise: *([\w-]+) *$")  # first line of an exercise's code cell
ANSWER = "# your answer"  # the line after which the stub starts
SECTION = "# === exercise: {key} ==="  # a section header in exercises/<stem>.py
SOLUTION = re.compile(r"<details>\s*<summary>\s*Solution\s*</summary>.*?```python\n(.*?)```", re.S)
SETUP = "# exercise setup"  # first line of a cell the checkers need as context


@dataclass
class Exercise:
    "One exercise as a lesson states it."
    key: str  # its name, unique in the lesson, e.g. 'bce'
    title: str  # from the `### Exercise N: title` cell
    task: str  # the task, as the markdown cell states it
    checker: str  # code that defines the checker(s)
    stub: str  # what the learner starts from
    call: str  # the expression that returns the checker's message
    solution: str  # the folded solution's code ('' when the lesson has none)
    hidden: str  # the `#| hide` cell after the solution ('' when there is none)


def _src(cell: dict) -> str: return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _context(src: str) -> str:
    "What of a cell the checkers may rely on: a `#| export` cell or an exercise setup whole, else its import statements."
    lines = [l for l in src.splitlines() if not l.lstrip().startswith(("%", "!"))]
    if not lines: return ""
    if lines[0].startswith(SETUP) or any(re.match(r"#\|\s*exports?\b", l) for l in lines): return "\n".join(lines)
    try: tree = ast.parse("\n".join(lines))
    except SyntaxError: return ""
    return "\n".join(ast.unparse(s) for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom)))


def _split(src: str, where: str) -> tuple[str, str, str]:
    "An exercise cell's checker code, stub and check call."
    body = src.split("\n", 1)[1] if "\n" in src else ""
    if ANSWER not in body: raise ValueError(f"{where}: no line '{ANSWER}' between the checker and the stub")
    checker, rest = body.split(ANSWER, 1)
    lines = rest.split("\n", 1)[1].rstrip().splitlines() if "\n" in rest else []
    if not lines or not (m := re.fullmatch(r"print\((.*)\)\s*", lines[-1])):
        raise ValueError(f"{where}: the cell must end with print(<check call>)")
    return checker, "\n".join(lines[:-1]).strip("\n") + "\n", m.group(1)


def read_lesson(stem: str) -> tuple[list[str], list[Exercise]]:
    "The context cells and the exercises of nbs/<stem>.ipynb."
    cells = json.loads((NBS / f"{stem}.ipynb").read_text(encoding="utf-8"))["cells"]
    context, found = [], []
    for i, c in enumerate(cells):
        src = _src(c)
        if c["cell_type"] != "code": continue
        if m := KEY.match(src.split("\n", 1)[0]):
            found.append(_exercise(stem, cells, i, m.group(1)))
        elif code := _context(src): context.append(code)
    return context, found


def _exercise(stem: str, cells: list, i: int, key: str) -> Exercise:
    "The exercise whose code cell is cells[i]."
    where = f"nbs/{stem}.ipynb, exercise '{key}'"
    task = next((_src(c) for c in reversed(cells[:i]) if c["cell_type"] == "markdown"), "")
    task = task[task.find("### Exercise"):] if "### Exercise" in task else task
    title = m.group(1).strip() if (m := re.search(r"###\s*Exercise\s*\d+\s*:?\s*(.*)", task)) else key
    checker, stub, call = _split(_src(cells[i]), where)
    after = cells[i + 1:i + 4]
    sol = next((m.group(1) for c in after if c["cell_type"] == "markdown" and (m := SOLUTION.search(_src(c)))), "")
    hidden = next((_src(c) for c in after if c["cell_type"] == "code" and _src(c).startswith("#| hide")), "")
    return Exercise(key, title, task, checker, stub, call, sol, hidden)


def stub_file(stem: str, exercises: list[Exercise]) -> str:
    "The text of exercises/<stem>.py: each exercise's task as comments, then its stub."
    head = f'"""Your answers to the exercises of nbs/{stem}.ipynb: edit each section, then run `make exercises`."""\n'
    parts = [head]
    for e in exercises:
        task = "\n".join(f"# {l}".rstrip() for l in e.task.strip().splitlines())
        parts.append(f"\n{SECTION.format(key=e.key)}\n{task}\n{e.stub}")
    return "\n".join(parts)


def sections(text: str) -> dict[str, str]:
    "The learner's code for each exercise key in the text of an answers file."
    out, key, buf = {}, None, []
    for line in text.splitlines():
        if m := re.fullmatch(r"# === exercise: *([\w-]+) *===", line.strip()):
            if key: out[key] = "\n".join(buf)
            key, buf = m.group(1), []
        elif key: buf.append(line)
    if key: out[key] = "\n".join(buf)
    return out


def _run(code: str, ns: dict, what: str) -> str | None:
    "Execute code in ns (with the lesson module's __future__ flags); None when it ran, else the error in one line."
    flags = ns.get("__future_flags__", 0)
    try: exec(compile(code, what, "exec", flags=flags, dont_inherit=True), ns); return None
    except NotImplementedError: return "Not done yet: replace `raise NotImplementedError` with your answer."
    except Exception as e: return f"{type(e).__name__}: {e}"


def namespace(stem: str, context: list[str]) -> dict:
    "A fresh grading namespace, registered as a module (dataclasses look it up), with the exported module's __future__ flags."
    import __future__
    import types
    mod = types.ModuleType(f"exercises_{stem}")
    sys.modules[mod.__name__] = mod
    if any("from __future__ import annotations" in c for c in context):  # nbdev's module has it for every cell
        mod.__dict__["__future_flags__"] = __future__.annotations.compiler_flag
    return mod.__dict__


def grade(stem: str, answers: dict[str, str] | None = None) -> list[tuple[str, bool, str]]:
    "Grade a lesson: (key, passed, message) per exercise; answers maps keys to code (None: the folded solutions)."
    context, exercises = read_lesson(stem)
    ns = namespace(stem, context)
    for i, src in enumerate(context):
        if err := _run(src, ns, f"{stem} context cell {i}"): raise RuntimeError(f"nbs/{stem}.ipynb: a context cell fails: {err}")
    out = []
    for e in exercises:
        code = e.solution if answers is None else answers.get(e.key)
        if code is None: out.append((e.key, False, f"no section '{SECTION.format(key=e.key)}' in exercises/{stem}.py")); continue
        msg = _run(e.checker, ns, f"{stem}:{e.key} checker") or _run(code, ns, f"exercises/{stem}.py:{e.key}")
        if msg is None:
            try: msg = str(eval(e.call, ns))
            except NotImplementedError: msg = "Not done yet: replace `raise NotImplementedError` with your answer."
            except Exception as ex: msg = f"the check raised {type(ex).__name__}: {ex}"
        out.append((e.key, msg.startswith("Correct"), msg))
    return out


def run_hidden(stem: str) -> list[tuple[str, str | None]]:
    "Run each exercise's `#| hide` cell (the checker on the solution and on wrong answers) in the grading context."
    context, exercises = read_lesson(stem)
    ns = namespace(stem, context)
    for i, src in enumerate(context): _run(src, ns, f"{stem} context cell {i}")
    return [(e.key, _run(e.checker, ns, f"{stem}:{e.key} checker") or _run(e.hidden, ns, f"{stem}:{e.key} hidden cell"))
            for e in exercises]


def lessons() -> list[str]:
    "Every notebook in nbs/ that has exercises, in the route's order."
    return [p.stem for p in sorted(NBS.glob("*.ipynb")) if read_lesson(p.stem)[1]]


def main(argv: list[str]) -> int:
    "Write missing stubs, grade each lesson, print a score per lesson; with --solutions, exit 1 unless all pass."
    solutions = "--solutions" in argv
    stems = [a for a in argv if not a.startswith("--")] or lessons()
    OUT.mkdir(exist_ok=True)
    total = passed = 0
    for stem in stems:
        if not (NBS / f"{stem}.ipynb").is_file(): raise SystemExit(f"no lesson nbs/{stem}.ipynb: give stems such as 03_losses")
        answers = None
        if not solutions:
            path = OUT / f"{stem}.py"
            if not path.exists(): path.write_text(stub_file(stem, read_lesson(stem)[1]), encoding="utf-8")
            answers = sections(path.read_text(encoding="utf-8"))
        try: res = grade(stem, answers)
        except Exception: print(f"{stem}: could not grade\n{traceback.format_exc(limit=2)}"); total += 1; continue
        ok = sum(p for _, p, _ in res)
        total, passed = total + len(res), passed + ok
        print(f"{stem}: {ok}/{len(res)}" + ("" if solutions else f"  (your answers: exercises/{stem}.py)"))
        for key, p, msg in res: print(f"  {'ok ' if p else '-- '} {key}: {msg.splitlines()[0][:150] if msg else ''}")
    print(f"score: {passed}/{total} ({100 * passed / max(total, 1):.0f}%)")
    return 0 if passed == total or not solutions else 1  # a learner's partial score is no error


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
