"""Build the docs site offline: nbdev's notebook processing, then Sphinx (myst-nb) into docs/_build/html.

Usage: python docs/build.py   (docs/build.sh runs `npm ci` first; `make docs` runs build.sh)

1. nbdev's processing (`nbdev.processors.FilterDefaults`, what `nbdev_proc_nbs` runs, without Quarto) turns
   nbs/*.ipynb into _proc/*.ipynb: front matter from the title cell, a `show_doc` cell after each exported
   name, `#| hide` and export cells dropped. One difference: only export, show_doc and import-only cells are
   run (nbdev also runs any cell that contains an import), so every other cell keeps its saved outputs.
2. _proc/*.ipynb -> docs/_src/*.ipynb in myst-nb's terms: front matter -> `# title`, `#| echo: false` ->
   `remove-input`, show_doc's markdown (`output: asis`) -> markdown cells, widgets without saved state ->
   a note to run `make lab`. Plus one API page per module (docs/_src/api/*.md) with show_doc of every name
   in its `__all__`, and the index with the sidebar's toctrees.
3. `sphinx-build -c docs docs/_src docs/_build/html` with MathJax, require.js and the widget manager copied
   from docs/node_modules into the site.
"""
from __future__ import annotations

import ast
import copy
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NBS = ROOT / "nbs"
PROC = ROOT / "_proc"
SRC = DOCS / "_src"
OUT = DOCS / "_build" / "html"
NODE = DOCS / "node_modules"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
LIVE_NOTE = "Interactive widget: run `make lab` and open this notebook to use it live."
_re_dir = re.compile(r"^\s*#\|\s*(.*?)\s*$")


# ---------------------------------------------------------------- 1. nbdev's processing
def notebooks() -> list[Path]:
    "The site's notebooks in sidebar order: index first, then by file name (01_.., 80_plots, 81_widgets)."
    nbs = [p for p in NBS.glob("*.ipynb") if not p.name.startswith((".", "_"))]
    return sorted(nbs, key=lambda p: (p.stem != "index", p.name))


def _strict_do_eval(cell):
    "Run export, show_doc and import-only cells (nbdev also runs any cell containing an import)."
    from nbdev import processors as P
    if P.cell_lang(cell) != "python" or cell.cell_type != "code" or not cell.source: return
    trees = cell.parsed_()
    if not trees or cell.directives_.get("eval:", [""])[0].lower() == "false": return
    if cell.directives_.keys() & {"export", "exports", "exporti", "exec_doc"}: return True
    if all(isinstance(t, (ast.Import, ast.ImportFrom)) for t in trees): return True
    if P._show_docs(trees): return True


def _proc_one(name: str) -> str | None:
    "Process nbs/`name` into _proc/`name` (worker process); a warning line if show_doc could not run."
    os.chdir(ROOT)
    os.environ.update(IN_TEST="1", MPLBACKEND="Agg", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    from execnb.nbio import read_nb, write_nb
    from nbdev import processors as P
    P._do_eval = _strict_do_eval

    class NoExec(P.FilterDefaults):
        def base_procs(self): return [p for p in super().base_procs() if p is not P.exec_show_docs]

    src, dst = NBS / name, PROC / name
    try:
        nb = read_nb(src); P.FilterDefaults()(nb); write_nb(nb, dst)
        return None
    except Exception as e:  # noqa: BLE001 -- one broken notebook must not take the site down
        nb = read_nb(src); NoExec()(nb); write_nb(nb, dst)
        return f"{name}: show_doc cells not run ({str(e).splitlines()[0][:200]}); its API page still lists every name"


def _module_of(nb: Path) -> Path | None:
    "The ft_kit module `nb` exports (its `#| default_exp`), if any."
    for c in json.loads(nb.read_text(encoding="utf-8"))["cells"][:3]:
        if m := re.search(r"#\|\s*default_exp\s+(\S+)", _src(c)): return ROOT / "ft_kit" / f"{m.group(1)}.py"


def process_notebooks(nbs: list[Path]) -> list[str]:
    "Run nbdev's processing on the notebooks whose _proc copy is older than them, their module or settings.ini."
    PROC.mkdir(exist_ok=True)

    def stale(p: Path) -> bool:
        d = PROC / p.name
        deps = [p, ROOT / "settings.ini", _module_of(p)]
        return not d.exists() or d.stat().st_mtime < max(q.stat().st_mtime for q in deps if q and q.exists())
    todo = [p.name for p in nbs if stale(p)]
    if not todo: return []
    print(f"nbdev processing: {len(todo)} notebook(s)", flush=True)

    def run(names):  # one interpreter per worker for its share of notebooks, as nbdev_proc_nbs does
        r = subprocess.run([sys.executable, __file__, "--proc", *names], capture_output=True, text=True)
        if r.returncode: return [f"{names}: nbdev processing failed:\n{r.stderr[-2000:]}"]
        return [l for l in r.stdout.splitlines() if l.strip()]
    with ThreadPoolExecutor(max_workers=2) as ex:
        return [w for ws in ex.map(run, [todo[0::2], todo[1::2]]) for w in ws]


# ---------------------------------------------------------------- 2. _proc -> Sphinx sources
def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _write(path: Path, text: str) -> None:
    "Write `text` unless `path` already holds it (Sphinx then re-reads only what changed)."
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text: path.write_text(text, encoding="utf-8")


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def _split_directives(source: str) -> tuple[dict, str]:
    "`#| key: value` lines at the top of a cell -> ({key: value}, the rest of the source)."
    lines, dirs = source.splitlines(), {}
    while lines and (m := _re_dir.match(lines[0])):
        k, _, v = m.group(1).partition(":")
        dirs[k.strip()] = v.strip() or True
        lines.pop(0)
    return dirs, "\n".join(lines).strip("\n")


def _asis_markdown(text: str) -> str:
    "show_doc's markdown for myst: no leading rule, no Quarto link attributes."
    text = re.sub(r"^\s*---\s*\n", "", text)
    text = re.sub(r"\]\(([^)]*)\)\{[^}]*\}", r"](\1)", text)
    # nbdev floats the source link right of the heading; in Sphinx put it under the heading instead
    text = re.sub(r"^\s*(\[source\]\([^)]*\))\s*\n+(#+ [^\n]*)\n", r"\2\n\n\1\n", text)
    return text.strip() + "\n"


def _widget_ids(state: dict, root_id: str) -> set:
    "The model ids reachable from `root_id` in a saved widget state."
    seen, todo = set(), [root_id]
    while todo:
        mid = todo.pop()
        if mid in seen or mid not in state: continue
        seen.add(mid)
        todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[mid].get("state", {})))
    return seen


def _convert_outputs(cell: dict, state: dict, asis: bool) -> list[dict]:
    "Fix the outputs of `cell` in place (`asis`: markdown outputs become cells); return cells to insert after it."
    after, keep = [], []
    for o in cell.get("outputs", []):
        data = o.get("data", {})
        if asis and "text/markdown" in data:
            after.append(_md(_asis_markdown("".join(data["text/markdown"]))))
            continue
        if WIDGET_VIEW in data:
            mid = data[WIDGET_VIEW].get("model_id", "")
            if mid in state:
                data.pop("text/plain", None)
                keep.append(o)
                after.append(_md(f"```{{container}} live-note\n{LIVE_NOTE} Here it shows its saved state.\n```\n"))
            else:  # no saved state: never show the text repr; the lesson's static figure stands in
                after.append(_md(f"```{{container}} live-note\n{LIVE_NOTE}\n```\n"))
            continue
        keep.append(o)
    cell["outputs"] = keep
    return after


def convert_notebook(src: Path, dst: Path) -> dict:
    "One _proc notebook -> a myst-nb notebook; returns its front matter."
    nb = json.loads(src.read_text(encoding="utf-8"))
    state = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    cells, fm = [], {}
    for i, cell in enumerate(nb["cells"]):
        text = _src(cell)
        if i == 0 and cell["cell_type"] in ("raw", "markdown") and text.lstrip().startswith("---"):
            import yaml
            fm = yaml.safe_load(text.strip().strip("-")) or {}
            head = f"# {fm.get('title', src.stem)}\n"
            if fm.get("description"): head += f"\n> {fm['description']}\n"
            cells.append(_md(head))
            continue
        if cell["cell_type"] == "raw" or not text.strip() and not cell.get("outputs"): continue
        if cell["cell_type"] == "markdown":
            cells.append(_md(text)); continue
        dirs, body = _split_directives(text)
        if dirs.get("hide") or str(dirs.get("include", "")).lower() == "false": continue
        tags = set(cell.get("metadata", {}).get("tags", []))
        if str(dirs.get("echo", "")).lower() == "false": tags.add("remove-input")
        if str(dirs.get("output", "")).lower() == "false": tags.add("remove-output")
        cell = {**cell, "source": body, "metadata": {**cell.get("metadata", {}), "tags": sorted(tags)}}
        after = _convert_outputs(cell, state, str(dirs.get("output", "")).lower() == "asis")
        if cell["outputs"] or "remove-input" not in tags: cells.append(cell)
        cells += after
    nb["cells"] = cells
    nb.setdefault("metadata", {}).setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    if state:  # drop state of models no output shows, keep what the widget manager needs
        shown = set()
        for c in cells:
            for o in c.get("outputs", []):
                if WIDGET_VIEW in o.get("data", {}): shown |= _widget_ids(state, o["data"][WIDGET_VIEW]["model_id"])
        nb["metadata"]["widgets"][WIDGET_STATE]["state"] = {k: v for k, v in state.items() if k in shown}
        if not shown: del nb["metadata"]["widgets"]
    _write(dst, json.dumps(nb, indent=1, ensure_ascii=False))
    return fm


def _modules(nbs: list[Path]) -> dict[str, str]:
    "{module name: notebook stem} from the `#| default_exp` cells of `nbs`."
    mods = {}
    for p in nbs:
        cells = json.loads(p.read_text(encoding="utf-8"))["cells"]
        for c in cells[:3]:
            if m := re.search(r"#\|\s*default_exp\s+(\S+)", _src(c)): mods[m.group(1)] = p.stem; break
    return mods


def _doc_entry(mod, name: str) -> str:
    "show_doc's markdown for `mod.name`, or a short entry for a constant."
    from nbdev.showdoc import BasicMarkdownRenderer
    obj = getattr(mod, name)
    if callable(obj):
        return _asis_markdown(BasicMarkdownRenderer(obj, name=name)._repr_markdown_())
    r = repr(obj)
    return f"### {name}\n\n```python\n{name} = {r if len(r) < 300 else r[:300] + ' ...'}\n```\n"


def api_pages(mods: dict[str, str], fms: dict[str, dict]) -> list[str]:
    "docs/_src/api/<module>.md for each module: show_doc of every name in its `__all__`."
    (SRC / "api").mkdir(exist_ok=True)
    pages, lib = [], "ft_kit"
    stamps_path = SRC / "api" / ".stamps.json"
    stamps = json.loads(stamps_path.read_text()) if stamps_path.exists() else {}
    for mod_name, stem in sorted(mods.items(), key=lambda kv: kv[1]):
        py, page = ROOT / lib / f"{mod_name}.py", SRC / "api" / f"{mod_name}.md"
        key = f"{py.stat().st_mtime if py.exists() else 0}:{fms.get(stem, {}).get('description', '')}"
        if page.exists() and stamps.get(mod_name) == key:  # module unchanged: skip importing it
            pages.append(f"api/{mod_name}"); continue
        try:
            mod = importlib.import_module(f"{lib}.{mod_name}")
        except Exception as e:  # noqa: BLE001
            print(f"WARNING: cannot import {lib}.{mod_name} for its API page: {e}", flush=True); continue
        names = list(getattr(mod, "__all__", []))
        desc = fms.get(stem, {}).get("description", "")
        parts = [f"# {lib}.{mod_name}\n", f"{desc}\n" if desc else "",
                 f"Exported by the lesson {{doc}}`../{stem}`; {len(names)} public names.\n"]
        for n in names:
            try: parts.append(_doc_entry(mod, n))
            except Exception as e:  # noqa: BLE001
                parts.append(f"### {n}\n\n(no documentation: {type(e).__name__})\n")
        _write(page, "\n".join(parts))
        pages.append(f"api/{mod_name}")
        stamps[mod_name] = key
    stamps_path.write_text(json.dumps(stamps))
    return pages


def add_toctrees(index: Path, stems: list[str], api: list[str]) -> None:
    "Append the sidebar (hidden toctrees in lesson order) to the converted index notebook."
    lessons = [s for s in stems if s != "index" and not s.startswith(("8", "9"))]
    shared = [s for s in stems if s.startswith(("8", "9"))]
    nb = json.loads(index.read_text(encoding="utf-8"))
    for caption, docs in (("Lessons", lessons), ("Figures and widgets", shared), ("API reference", api)):
        if docs: nb["cells"].append(_md(f"```{{toctree}}\n:hidden:\n:caption: {caption}\n\n" + "\n".join(docs) + "\n```\n"))
    _write(index, json.dumps(nb, indent=1, ensure_ascii=False))


def copy_vendor() -> None:
    "MathJax 3, require.js and the widget manager from docs/node_modules into docs/_src/_vendor."
    v = SRC / "_vendor"
    need = [NODE / "mathjax/es5/tex-chtml.js", NODE / "requirejs/require.js", NODE / "@jupyter-widgets/html-manager/dist/embed-amd.js"]
    if missing := [str(p.relative_to(DOCS)) for p in need if not p.exists()]:
        sys.exit(f"missing {missing}: run `npm ci` in docs/ (docs/build.sh does)")
    done = v / "require.min.js"
    if done.exists() and done.stat().st_mtime >= (NODE / ".package-lock.json").stat().st_mtime: return
    shutil.copytree(NODE / "mathjax/es5", v / "mathjax", dirs_exist_ok=True)
    shutil.copytree(NODE / "@jupyter-widgets/html-manager/dist", v / "html-manager", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.map", "embed.js", "libembed-amd.js"))
    shutil.copy(NODE / "requirejs/require.js", v / "require.min.js")  # last: marks the copy complete


def make_sources() -> list[str]:
    "Everything under docs/_src; returns warnings."
    nbs = notebooks()
    warnings = process_notebooks(nbs)
    nbs = [p for p in nbs if (PROC / p.name).exists()]
    SRC.mkdir(parents=True, exist_ok=True)
    fms = {p.stem: convert_notebook(PROC / p.name, SRC / p.name) for p in nbs}
    api = api_pages(_modules(nbs), fms)
    add_toctrees(SRC / "index.ipynb", [p.stem for p in nbs], api)
    keep = {SRC / p.name for p in nbs} | {SRC / f"{a}.md" for a in api}
    for p in [*SRC.glob("*.ipynb"), *SRC.glob("api/*.md")]:  # pages whose notebook is gone
        if p not in keep: p.unlink()
    copy_vendor()
    return warnings


# ---------------------------------------------------------------- 3. Sphinx
def main() -> int:
    t0 = time.perf_counter()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    warnings = make_sources()
    t1 = time.perf_counter()
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", "1", "-c", str(DOCS), str(SRC), str(OUT)]
    r = subprocess.run(cmd, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    for w in warnings: print(f"WARNING: {w}", flush=True)
    if r.returncode: return r.returncode
    print(f"docs: {OUT.relative_to(ROOT)}/index.html (sources {t1 - t0:.0f} s, sphinx {time.perf_counter() - t1:.0f} s)")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--proc"]:
        import warnings as _w; _w.simplefilter("ignore")
        for name in sys.argv[2:]: print(_proc_one(name) or "", flush=True)
        sys.exit(0)
    sys.exit(main())
