"""Re-execute lessons at their JupyterLab size, in place, and record how long each took: `python -m bench.lessons 05_transfer 07_peft`.

Each notebook runs top to bottom in a fresh kernel (the venv's `python3`), in nbs/, as a learner's JupyterLab would
(IN_TEST unset), with its outputs saved into the file; then `nbdev_clean` strips the run's metadata. The record
`lesson-<stem>` holds the total seconds and every cell that took 10 s or more (its id, seconds, first line): the
measured times a lesson or the index can quote instead of typed ones. With no
argument every lesson runs. Run it when the machine is otherwise idle: the times are the record.
"""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
SLOW_CELL_S = 10.0  # cells at least this slow are listed in the record


def _seconds(cell) -> float:
    "How long a cell ran, from the timestamps nbclient leaves in its metadata."
    ex = cell.get("metadata", {}).get("execution", {})
    a, b = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
    if not (a and b): return 0.0
    return (datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds()


def run_lesson(stem: str, timeout: int = 3600) -> dict:
    "Execute nbs/<stem>.ipynb in place, record its times, clean it; return the record's fields."
    import nbformat
    from nbclient import NotebookClient
    from ft_kit.results import save_result
    path = NBS / f"{stem}.ipynb"
    if not path.is_file(): raise SystemExit(f"no notebook {path}: give stems such as 05_transfer")
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NBS)}}).execute()
    total = time.perf_counter() - t0
    cells = [{"id": c.get("id"), "s": round(_seconds(c), 1), "first_line": c.source.split("\n", 1)[0][:80]}
             for c in nb.cells if c.cell_type == "code" and _seconds(c) >= SLOW_CELL_S]
    nbformat.write(nb, path)
    subprocess.run([str(Path(sys.executable).with_name("nbdev_clean")), "--fname", str(path)], check=True, cwd=ROOT)
    fields = {"lesson": stem, "total_s": round(total, 1), "slow_cells": cells}
    save_result(f"lesson-{stem}", {"size": "JupyterLab (IN_TEST unset)"}, {}, overwrite=True, **fields)
    return fields


if __name__ == "__main__":
    stems = sys.argv[1:] or sorted(p.stem for p in NBS.glob("*.ipynb") if not p.name.startswith((".", "_")))
    for s in stems:
        r = run_lesson(s)
        slow = ", ".join(f"{c['id']} {c['s']:.0f} s" for c in r["slow_cells"]) or "none"
        print(f"{s}: {r['total_s']:.0f} s (cells of 10 s or more: {slow})", flush=True)
