"""Re-execute lessons at their JupyterLab size, in place, and record how long each took: `python -m bench.lessons 05_transfer 07_peft`
(`--annotate-only`: write the existing records' times into the notebooks and the index without running anything).

Each notebook runs top to bottom in a fresh kernel (the venv's `python3`), in nbs/, as a learner's JupyterLab would
(IN_TEST unset), with its outputs saved into the file; then `nbdev_clean` strips the run's metadata. The record
`lesson-<stem>` holds the total seconds and every cell that took 10 s or more (its id, seconds, first line): the
measured times a lesson or the index can quote instead of typed ones. With no
argument every lesson runs. Run it when the machine is otherwise idle: the times are the record.

The run starts from an empty lesson scratch (data/results/_lessons is moved aside and put back afterwards), so the
times are a first run's, as a learner meets them. From the record, the notebook is then annotated: a markdown cell
under the title (id `lesson-time`) states the lesson's run time, and every cell of 30 s or more starts with a line
that says how long it takes; the index's route table gets each lesson's time. `tests/test_outputs.py` checks that
all three agree with the records.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
SLOW_CELL_S = 10.0  # cells at least this slow are listed in the record
SAYS_S = 30.0  # cells at least this slow say so in their first line
TIME_CELL = "lesson-time"  # id of the markdown cell under a lesson's title that states its run time
NOTE = re.compile(r"^# takes about \d+ s at JupyterLab size.*$")  # the line a slow cell starts with


def cell_note(s: float) -> str: return f"# takes about {s:.0f} s at JupyterLab size on 2 CPU cores (measured by `make lessons`)"


def time_text(total: float) -> str:
    "The sentence under a lesson's title."
    return f"*Run time: about {total:.0f} s at JupyterLab size on 2 CPU cores, measured by `make lessons`.*"


def is_export(src: str) -> bool: return bool(re.search(r"^#\|\s*exports?\b", src, re.M))


def _with_note(src: str, note: str | None) -> str:
    "A cell's source with its time line removed, then `note` put after its `#|` directives (None: no line)."
    lines = [l for l in src.split("\n") if not NOTE.match(l)]
    if note:
        i = next((k for k, l in enumerate(lines) if not l.startswith("#|")), len(lines))
        lines.insert(i, note)
    return "\n".join(lines)


def annotate(nb, fields: dict) -> None:
    "Write the measured times into the notebook: the line under the title and the note on every slow cell."
    import nbformat
    slow = {c["id"]: c["s"] for c in fields["slow_cells"] if c["s"] >= SAYS_S}
    for c in nb.cells:
        if c.cell_type == "code" and not is_export(c.source):
            c.source = _with_note(c.source, cell_note(slow[c.get("id")]) if c.get("id") in slow else None)
    cell = next((c for c in nb.cells if c.get("id") == TIME_CELL), None)
    if cell is None:
        cell = nbformat.v4.new_markdown_cell(id=TIME_CELL)
        at = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1) + 1
        nb.cells.insert(at, cell)
    cell.source = time_text(fields["total_s"])


def index_table(text: str, times: dict[str, float]) -> str:
    "The index's route table with a `time` column filled from the lessons' records."
    out = []
    for line in text.split("\n"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells and cells[0] == "notebook": cells = [c for c in cells if c != "time"] + ["time"]
        elif cells and set(cells[0]) <= set("-: "): cells = cells[:4] + ["---"]
        elif cells and (stems := re.findall(r"`(\w+)`", cells[0])):
            cells = cells[:4] + [", ".join(f"{times[t]:.0f} s" if t in times else "not measured" for t in stems)]
        out.append("| " + " | ".join(cells) + " |" if cells else line)
    return "\n".join(out)


ROUTE_CELL = "route-diagram"  # id of the index cell that draws the route from the table's "builds on" column


def route_text(table: str) -> str:
    "The route as steps: each lesson one step after the last lesson it builds on; reference notebooks at the end."
    needs, ref = {}, []
    for line in table.split("\n"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) < 4 or not (stems := re.findall(r"`(\w+)`", cells[0])): continue
        pre = re.findall(r"`(\w+)`", cells[3])
        if not pre and "start here" not in cells[3]: ref += stems; continue
        for st in stems: needs[st] = pre
    depth = {}
    def step(st): return depth.setdefault(st, 1 + max((step(n) for n in needs[st] if n in needs), default=0))
    rows = [f"{step(st):>2}  {st:<17}" + (f"<- {', '.join(needs[st])}" if needs[st] else "start here")
            for st in sorted(needs, key=lambda st: (step(st), st))]
    rows += [f"    {st:<17}reference: the figures and widgets the lessons use" for st in ref]
    return ("The route, from the table's *builds on* column (step: a lesson comes after everything it uses):\n\n"
            "```text\n" + "\n".join(r.rstrip() for r in rows) + "\n```")


def update_index() -> None:
    "Fill the index's time column from every lesson-<stem> record; then regenerate README.md."
    import nbformat
    from ft_kit.results import find_result
    path = NBS / "index.ipynb"
    nb = nbformat.read(path, as_version=4)
    stems = [p.stem for p in NBS.glob("*.ipynb")]
    times = {s: r["total_s"] for s in stems if (r := find_result(f"lesson-{s}"))}
    at = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "| notebook |" in c.source)
    nb.cells[at].source = index_table(nb.cells[at].source, times)
    route = next((c for c in nb.cells if c.get("id") == ROUTE_CELL), None)
    if route is None: route = nbformat.v4.new_markdown_cell(id=ROUTE_CELL); nb.cells.insert(at + 1, route)
    route.source = route_text(nb.cells[at].source)
    nbformat.write(nb, path)
    subprocess.run([sys.executable, str(ROOT / "docs" / "make_readme.py")], check=True, cwd=ROOT)


def _seconds(cell) -> float:
    "How long a cell ran, from the timestamps nbclient leaves in its metadata."
    ex = cell.get("metadata", {}).get("execution", {})
    a, b = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
    if not (a and b): return 0.0
    return (datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds()


class empty_scratch:
    "Move the lesson scratch (data/results/_lessons) aside for a run and put it back afterwards."
    def __enter__(self):
        from ft_kit.results import lesson_results_dir
        self.dir = lesson_results_dir(); self.aside = self.dir.with_name(self.dir.name + ".aside")
        if self.aside.exists(): raise SystemExit(f"{self.aside} exists from an interrupted run: move it back to {self.dir} first")
        if self.dir.exists(): self.dir.rename(self.aside)
        return self

    def __exit__(self, *exc):
        if self.dir.exists(): shutil.rmtree(self.dir)
        if self.aside.exists(): self.aside.rename(self.dir)


def run_lesson(stem: str, timeout: int = 3600) -> dict:
    "Execute nbs/<stem>.ipynb in place, record its times, clean it; return the record's fields."
    import nbformat
    from nbclient import NotebookClient
    from ft_kit.results import save_result
    path = NBS / f"{stem}.ipynb"
    if not path.is_file(): raise SystemExit(f"no notebook {path}: give stems such as 05_transfer")
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    with empty_scratch():
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NBS)}}).execute()
    total = time.perf_counter() - t0
    cells = [{"id": c.get("id"), "s": round(_seconds(c), 1), "first_line": _with_note(c.source, None).split("\n", 1)[0][:80]}
             for c in nb.cells if c.cell_type == "code" and _seconds(c) >= SLOW_CELL_S]
    fields = {"lesson": stem, "total_s": round(total, 1), "slow_cells": cells}
    annotate(nb, fields)
    nbformat.write(nb, path)
    subprocess.run([str(Path(sys.executable).with_name("nbdev_clean")), "--fname", str(path)], check=True, cwd=ROOT)
    save_result(f"lesson-{stem}", {"size": "JupyterLab (IN_TEST unset)"}, {}, overwrite=True, **fields)
    return fields


def annotate_from_record(stem: str) -> None:
    "Re-apply the measured times of the lesson's existing record to its notebook, without running it."
    import nbformat
    from ft_kit.results import find_result
    if not (rec := find_result(f"lesson-{stem}")): return
    path = NBS / f"{stem}.ipynb"
    nb = nbformat.read(path, as_version=4)
    annotate(nb, rec)
    nbformat.write(nb, path)
    subprocess.run([str(Path(sys.executable).with_name("nbdev_clean")), "--fname", str(path)], check=True, cwd=ROOT)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    stems = args or sorted(p.stem for p in NBS.glob("*.ipynb") if not p.name.startswith((".", "_")) and p.stem != "index")
    if "--annotate-only" in sys.argv:
        for s in stems: annotate_from_record(s)
        update_index(); sys.exit(0)
    for s in stems:
        r = run_lesson(s)
        slow = ", ".join(f"{c['id']} {c['s']:.0f} s" for c in r["slow_cells"]) or "none"
        print(f"{s}: {r['total_s']:.0f} s (cells of 10 s or more: {slow})", flush=True)
    update_index()
