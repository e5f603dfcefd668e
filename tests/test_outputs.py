"""The saved outputs of committed notebooks agree with the registry: no lesson says a result is missing while its
record is committed (a notebook executed before its records landed, and never re-executed, fails here)."""
import fnmatch
import re
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDS = sorted(p.stem for p in (ROOT / "data" / "results").glob("*.json"))
# what a lesson prints when a record is missing -> the records whose presence makes that text false
ABSENCE = {"no results saved yet": "*", "No benchmark result is saved yet": "bench_loops",
           "No full-size result is saved yet": "minilm_full_ft", "demo run (run `make results` for the full size)": "peft-*-search",
           "demo run (run `make results` for the full grid)": "transfer-*", "the GPU benchmark has not been run yet": "gpu_minilm_*",
           "No load test saved yet": "bench_serve"}


def saved_text(nb: Path) -> str:
    "Every text a notebook's saved outputs show (streams, plain text, markdown, html)."
    out = []
    for c in json.loads(nb.read_text())["cells"]:
        for o in c.get("outputs", []):
            out += o.get("text", []) if isinstance(o.get("text"), list) else [o.get("text", "")]
            for k in ("text/plain", "text/markdown", "text/html"):
                v = o.get("data", {}).get(k, "")
                out += v if isinstance(v, list) else [v]
    return "".join(out)


@pytest.mark.parametrize("nb", sorted((ROOT / "nbs").glob("*.ipynb")), ids=lambda p: p.stem)
def test_no_missing_result_claim_while_the_record_exists(nb):
    text = saved_text(nb)
    for phrase, pattern in ABSENCE.items():
        if phrase in text:
            have = [r for r in RECORDS if fnmatch.fnmatch(r, pattern)]
            assert not have, f"{nb.name} says {phrase!r} but data/results holds {have[:3]}: re-execute the notebook"


def test_the_check_can_fail(tmp_path):
    "A notebook whose output claims no results, checked against a registry that has some, is caught."
    nb = tmp_path / "x.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": [{"output_type": "execute_result",
                                        "data": {"text/plain": ["'no results saved yet: run `make results`'"]}}]}]}))
    assert "no results saved yet" in saved_text(nb) and RECORDS


WRITERS = ("save_result", "record_run", "run_protocol", "run_transfer", "run_method", "transfer_point")  # take results_dir


def registry_writes(source: str) -> list[str]:
    "Calls in a lesson cell that write records without saying where (no results_dir, no LESSON, no FT_KIT_RESULTS_DIR)."
    if "FT_KIT_RESULTS_DIR" in source: return []
    out = []
    for line_no, line in enumerate(source.splitlines()):
        code = line.split("#", 1)[0]
        for name in WRITERS:
            i = code.find(f"{name}(")
            if i < 0 or code[i - 1:i] in (".", "_") or code[i + len(name) + 1:].startswith("..."): continue
            call, depth = "", 0  # the call's text up to its closing parenthesis, over several lines if need be
            for ch in "\n".join(source.splitlines()[line_no:])[source.splitlines()[line_no].find(f"{name}(") + len(name):]:
                call += ch; depth += ch == "("; depth -= ch == ")"
                if depth == 0: break
            if "results_dir" not in call and "LESSON" not in call: out.append(f"{name}{call[:80]}")
    return out


@pytest.mark.parametrize("nb", sorted((ROOT / "nbs").glob("*.ipynb")), ids=lambda p: p.stem)
def test_lessons_never_write_into_the_committed_registry(nb):
    "A lesson's own runs go to `lesson_results_dir()` (or a temporary folder): never data/results, which make results owns."
    cells = [("".join(c["source"])) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    bad = [w for s in cells if not s.startswith("#| export") for w in registry_writes(s)]
    assert not bad, f"{nb.name} writes records into the committed registry: {bad}; pass results_dir=lesson_results_dir()"


def test_the_write_check_can_fail():
    assert registry_writes('save_result("deploy_backends", {}, {"a": 1},\n    split="x", overwrite=True)')
    assert not registry_writes('save_result("x", {}, {},\n    results_dir=LESSON)')
    assert not registry_writes('# save_result(...) is how\nr = get_result("x")')


def _summaries() -> list[tuple[str, str]]:
    "(notebook, sentence) pairs: what lessons 05 and 07 must print, recomputed here from the committed records."
    from ft_kit.peft_methods import protocol_summary, protocol_table, rank_sweep, sweep_summary
    from ft_kit.transfer import transfer_curves, transfer_summary
    out, d = [], ROOT / "data" / "results"
    if list(d.glob("peft-*-search.json")):
        t = protocol_table("peft", d)
        out += [("07_peft", protocol_summary(t)), ("07_peft", sweep_summary(rank_sweep(t)))]
    if list(d.glob("transfer-*-search.json")): out.append(("05_transfer", transfer_summary(transfer_curves("transfer", d))))
    if list(d.glob("continual-*-search.json")):
        from ft_kit.continual import lab_sentence, lab_summary
        out.append(("09_continual", lab_sentence(lab_summary(d))))
    return out


@pytest.mark.parametrize("nb,sentence", _summaries(), ids=lambda x: x if len(x) < 20 else x[:20])
def test_result_sentences_equal_their_records(nb, sentence):
    "The sentence a lesson prints about its full-size results is the one the committed records give today."
    assert sentence in saved_text(ROOT / "nbs" / f"{nb}.ipynb"), (
        f"{nb}.ipynb does not print what its records say now:\n  {sentence}\nre-execute it (make lessons LESSONS={nb})")


# a number with a unit in a lesson's prose (not in code spans or math) looks like a typed result: results are printed by
# code from records. Numbers that are settings, definitions or textbook examples are allowed here, each reviewed.
TYPED = re.compile(r"(?<![\w.`$-])\d+(?:[.,]\d+)*\s*(?:%|s\b|min\b|x\b|points?\b|MB\b|GB\b|tokens?\b|minutes?\b|seconds?\b|hours?\b)")
ALLOWED = {"01_data": {"80%", "10%", "128 tokens"}, "02_models": {"30,522 tokens"}, "03_losses": {"95%", "80%"},
           "04_metrics": {"90%", "10%", "4 x", "95%"}, "04b_train": {"128 tokens", "10%"},
           "04c_distributed": {"2x", "1x"}, "04d_experiment": {"95%"}, "06_lora": {"384 x"}, "07_peft": {"95%"},
           "08_prompting": {"50%", "95%"}, "09_continual": {"95%"}, "10_deploy": {"4x"}, "index": {"30 s"}}  # split shares, gate thresholds, textbook examples


def typed_numbers(markdown: str) -> list[str]:
    "Numbers with units in prose, outside `code` and $math$."
    text = re.sub(r"\$[^$]*\$", "", re.sub(r"`[^`]*`", "", markdown))
    return [re.sub(r"\s+", " ", m.group(0)) for m in TYPED.finditer(text)]


@pytest.mark.parametrize("nb", sorted((ROOT / "nbs").glob("*.ipynb")), ids=lambda p: p.stem)
def test_no_typed_results_in_prose(nb):
    "A lesson's markdown states no measured figure by hand (e.g. 'about a quarter of an hour', '27 tokens', '82.1%')."
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "markdown" and c.get("id") != timing.TIME_CELL]
    # the run-time line and the index's time column are written from the lesson records (checked against them below)
    md = [timing.index_table(s, {}) if "| notebook |" in s else s for s in ("".join(c["source"]) for c in cells)]
    found = sorted({n for s in md for n in typed_numbers(s)} - ALLOWED.get(nb.stem, set()))
    assert not found, f"{nb.name} types {found} in its prose: print them from the records instead (or allow a setting here)"


def test_the_typed_number_check_can_fail():
    assert typed_numbers("A snippet is 27 tokens long; training took 7.2 min and reached 82.1%.") == ["27 tokens", "7.2 min", "82.1%"]
    assert typed_numbers("Use `max_length=64` tokens and $p = 0.9$.") == []


import sys  # noqa: E402
sys.path.insert(0, str(ROOT))
from bench import lessons as timing  # noqa: E402

LESSON_NBS = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if p.stem != "index")


def _record(stem: str) -> dict:
    "The lesson-<stem> record that `make lessons` wrote."
    path = ROOT / "data" / "results" / f"lesson-{stem}.json"
    assert path.is_file(), f"no record lesson-{stem}: run `make lessons LESSONS={stem}` (it times the lesson and annotates it)"
    return json.loads(path.read_text())


@pytest.mark.parametrize("nb", LESSON_NBS, ids=lambda p: p.stem)
def test_measured_times_are_stated_before_they_are_spent(nb):
    "The lesson states its measured run time under its title, and every cell of 30 s or more says so in its first line."
    rec, cells = _record(nb.stem), json.loads(nb.read_text())["cells"]
    top = [c for c in cells if c.get("id") == timing.TIME_CELL]
    assert top and "".join(top[0]["source"]) == timing.time_text(rec["total_s"]), f"{nb.name}: the run-time line under the title is not the record's"
    slow = {c["id"]: c["s"] for c in rec["slow_cells"] if c["s"] >= timing.SAYS_S}
    for c in cells:
        if c["cell_type"] != "code" or timing.is_export("".join(c["source"])): continue
        src = "".join(c["source"])
        want = timing._with_note(src, timing.cell_note(slow[c["id"]]) if c.get("id") in slow else None)
        assert src == want, f"{nb.name}, cell {c.get('id')}: its time line disagrees with lesson-{nb.stem} (run `make lessons`)"


def test_index_times_come_from_the_records():
    "The route table's time column is what the lesson records say."
    idx = json.loads((ROOT / "nbs" / "index.ipynb").read_text())["cells"]
    table = next("".join(c["source"]) for c in idx if "| notebook |" in "".join(c["source"]))
    times = {p.stem: _record(p.stem)["total_s"] for p in LESSON_NBS}
    assert timing.index_table(table, times) == table, "the index's time column is stale: run `python -m bench.lessons --annotate-only`"
    assert "not measured" not in table
    route = next("".join(c["source"]) for c in idx if c.get("id") == timing.ROUTE_CELL)
    assert route == timing.route_text(table), "the route diagram disagrees with the table's builds-on column"
