"""The notebooks are the source of truth: exporting and cleaning change nothing, and every notebook runs."""
import ast
import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOTEBOOKS = sorted(p.name for p in (ROOT / "nbs").glob("*.ipynb"))


def _copy_project(dest: Path) -> Path:
    "Copy what nbdev reads (settings.ini, nbs/, ft_kit/) into `dest`."
    shutil.copy(ROOT / "settings.ini", dest)
    shutil.copytree(ROOT / "nbs", dest / "nbs", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(ROOT / "ft_kit", dest / "ft_kit", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _diff(a: Path, b: Path) -> list:
    "Files that differ or exist on one side only, recursively."
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__", ".ipynb_checkpoints"])
    out = [str(Path(a.name) / n) for n in cmp.left_only + cmp.right_only + cmp.diff_files]
    for sub in cmp.common_dirs: out += _diff(a / sub, b / sub)
    return out


def test_export_and_clean_leave_no_diff(tmp_path):
    "`nbdev_export` and `nbdev_clean` on a copy of the project change no file."
    proj = _copy_project(tmp_path)
    for cmd in ("nbdev_export", "nbdev_clean"):
        r = subprocess.run([str(BIN / cmd)], cwd=proj, capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd} failed:\n{r.stderr}"
    changed = _diff(ROOT / "nbs", proj / "nbs") + _diff(ROOT / "ft_kit", proj / "ft_kit")
    assert not changed, f"run `make export` and commit; these files change: {changed}"


def test_readme_is_generated_from_index():
    "README.md is what docs/make_readme.py makes of nbs/index.ipynb."
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "make_readme.py"), "--check"])
    assert r.returncode == 0, "README.md is stale: run `python docs/make_readme.py`"


def _widget_views(nb: dict) -> list[str]:
    "Model ids of the widgets shown in a notebook's saved outputs."
    return [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for c in nb["cells"] for o in c.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_saved_widgets_keep_their_state(name):
    "One rule for the site: every widget a notebook shows in its saved outputs has its state saved with it."
    nb = json.loads((ROOT / "nbs" / name).read_text(encoding="utf-8"))
    state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    missing = [m for m in _widget_views(nb) if m not in state]
    assert not missing, (f"{name}: {len(missing)} widget(s) without saved state; re-run the notebook with "
                         "`jupyter nbconvert --execute --inplace` (it saves widget state), then `make export`")


def test_import_without_jupyter():
    "`import ft_kit` and its logic modules pull in neither IPython nor ipywidgets."
    mods = [p.stem for p in (ROOT / "ft_kit").glob("*.py") if p.stem not in ("widgets", "_modidx", "__init__")]
    code = ("import sys, importlib\n" + "".join(f"importlib.import_module('ft_kit.{m}')\n" for m in mods) +
            "bad = [m for m in ('IPython', 'ipywidgets', 'ipykernel') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.fixture(scope="session")
def notebook_runs(tmp_path_factory) -> dict:
    "Every notebook run in test mode by nbdev's runner, one after another in one fresh process (tests/_nbrun.py)."
    out = tmp_path_factory.mktemp("notebooks") / "runs.json"
    env = {**os.environ, "IN_TEST": "1", "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "_nbrun.py"), str(out), *NOTEBOOKS], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1800)
    return {**(json.loads(out.read_text()) if out.exists() else {}), "runner's stderr": r.stderr[-3000:]}


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_notebook_runs(nb, notebook_runs):
    "Each notebook runs top to bottom under nbdev's test runner (test-mode sizes, `#| slow` cells skipped)."
    run = notebook_runs.get(nb)
    assert run is not None, f"{nb} never ran: the runner stopped before it:\n" + notebook_runs["runner's stderr"]
    assert run["ok"], f"{nb} failed (rerun alone: `IN_TEST=1 nbdev_test --path nbs/{nb}`):\n{run['log']}"


def _kit_imports() -> dict:
    "Module -> {(imported kit module, name)} for every `from .x import name` / `from ft_kit.x import name` in ft_kit/."
    out = {}
    for p in (ROOT / "ft_kit").glob("*.py"):
        if p.stem in ("_modidx", "__init__"): continue
        out[p.stem] = {(n.module.split(".")[-1], a.name) for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
                       if isinstance(n, ast.ImportFrom) and n.module and (n.level == 1 or n.module.startswith("ft_kit."))
                       for a in n.names}
    return out


def test_no_import_circle_and_no_private_names_across_modules():
    "The library's modules import each other without a circle (lazy imports count) and never a `_private` name."
    imports = _kit_imports()
    private = sorted(f"{m} imports {t}.{n}" for m, pairs in imports.items() for t, n in pairs if n.startswith("_"))
    assert not private, f"make these public or move them: {private}"
    graph = {m: {t for t, _ in pairs if t in imports} for m, pairs in imports.items()}
    def path(a, b, seen=()):  # a chain of imports from a to b, or None
        for x in sorted(graph[a]):
            if x == b: return [a, b]
            if x not in seen and (rest := path(x, b, seen + (x,))): return [a, *rest]
    circles = {" -> ".join(c) for m in graph for t in graph[m] if (c := path(t, m)) and m in c}
    assert not circles, f"import circles: {sorted(circles)}"
