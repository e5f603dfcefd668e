"""Every committed record in data/results passes the validity gates or says it failed: no failed run can be shown as
a method's result. Experiment-layer records (they carry `valid`) also carry everything needed to reproduce them."""
import json
from pathlib import Path

import numpy as np
import pytest

from ft_kit.experiment import failures

RESULTS = Path(__file__).resolve().parent.parent / "data" / "results"
RECORDS = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
CLASSIFIED = {k: r for k, r in RECORDS.items()  # records of a classifier's validation predictions
              if isinstance(r.get("metrics"), dict) and "confusion_matrix" in r["metrics"] and "majority_accuracy" in r["metrics"]}
BASELINES = {k for k, r in CLASSIFIED.items() if r.get("method") == "majority" or k.endswith("-majority-s0")}


def test_there_are_records():
    assert len(CLASSIFIED) > 20, "data/results should hold the committed full-size runs"


@pytest.mark.parametrize("name", sorted(set(CLASSIFIED) - BASELINES))
def test_record_passes_the_gates_or_says_it_failed(name):
    "A run that collapses (> 95% one class) or scores at or below the majority class on validation is marked failed."
    r = CLASSIFIED[name]
    reasons = failures(r["metrics"], r.get("weight_change"))
    if reasons: assert r.get("valid") is False and r.get("failed"), f"{name} failed the gates but is not marked failed: {reasons}"
    if r.get("valid") is True: assert not reasons and not r.get("failed")


EXPERIMENT = {k: r for k, r in RECORDS.items() if "overrides" in r and r.get("status") != "unavailable"}  # the experiment layer writes `overrides`


@pytest.mark.parametrize("name", sorted(EXPERIMENT))
def test_experiment_record_schema(name):
    "config, protocol, seed, learning rate, time, memory and versions, with config and record agreeing."
    r = EXPERIMENT[name]
    for key in ("config", "protocol", "overrides", "seed", "metrics", "train_time_s", "peak_memory_mb", "versions", "hardware"):
        assert key in r, f"{name} lacks {key!r}"
    if r.get("method") == "majority": return
    assert "lr" in r and "test" in r and "weight_change" in r
    if r.get("method") != "probe": assert r["config"]["lr"] == r["lr"] and r["config"]["seed"] == r["seed"]


SEARCHES = {k: r for k, r in RECORDS.items() if k.endswith("-search")}


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_search_chose_its_best_valid_value(name):
    "The chosen value is the valid one with the best validation accuracy, and its runs exist for every seed."
    s = SEARCHES[name]
    valid = [(a, v) for v, a, ok, _ in s["tried"] if ok]
    if s["method"] == "majority": return
    if not valid: assert s["chosen"] is None and s["reason"]; return
    best = max(a for a, _ in valid)
    assert s["chosen"] in [v for a, v in valid if a == best]  # ties: any of the best
    if s["method"] != "probe" and len(s["grid"]) >= 4:  # a full search: at least four rates over 1.5 decades...
        steps = sorted(round(2 * np.log10(v)) for v, *_ in s["tried"])  # ...of the 1-3-10 grid (half-decade steps)
        assert len(steps) >= 4 and steps[-1] - steps[0] >= 3


LAB = {k: r for k, r in RECORDS.items() if "stage_b" in (r.get("metrics") or {})}  # the continual lab's method runs


@pytest.mark.parametrize("name", sorted(LAB))
def test_continual_record_passes_both_gates_or_says_it_failed(name):
    "A lab run failed when its task-A model did not learn A or its final model did not learn B (on validation)."
    r = LAB[name]
    m = r["metrics"]
    reasons = failures(m["stage_a"]) + failures(m["stage_b"], r.get("weight_change"))
    assert r["valid"] is (not reasons) and bool(r["failed"]) is bool(reasons), f"{name}: {reasons} vs {r['failed']}"
    assert r["test"]["matrix"][1][0] - r["test"]["matrix"][0][0] == pytest.approx(-r["test"]["forgetting"])
