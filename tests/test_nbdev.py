"""The notebooks are the source of truth: exporting and cleaning change nothing, and every notebook runs."""
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


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_notebook_runs(nb):
    "Each notebook runs top to bottom under `nbdev_test` (test-mode sizes, `#| slow` cells skipped)."
    env = {**os.environ, "IN_TEST": "1", "MPLBACKEND": "Agg"}
    r = subprocess.run([str(BIN / "nbdev_test"), "--path", f"nbs/{nb}", "--do_print"],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, f"{nb} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
