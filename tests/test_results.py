"""ft_kit.results: round trip, no silent overwrite, split hashes, and the IN_TEST / FT_KIT_RESULTS_DIR rules."""
import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from ft_kit import results as R


@dataclass
class Cfg:
    lr: float = 1e-3  # learning rate
    epochs: int = 1   # passes


@pytest.fixture
def split():
    return pd.DataFrame({"text": ["good", "bad", "fine\tok\n"], "label": [1, 0, 1]})


def test_round_trip(tmp_path, split):
    metrics = {"accuracy": np.float32(0.75), "confusion_matrix": np.array([[1, 0], [1, 2]]), "ece": float("nan")}
    path = R.save_result("MiniLM / full FT", Cfg(), metrics, split=("validation", split), results_dir=tmp_path,
                         train_time_s=12.5, params={"trainable": 100, "backbone": 90, "head": 10, "adapter": 0},
                         checkpoint_mb=1.5)
    assert path == tmp_path / "MiniLM_full_FT.json"
    r = R.get_result("MiniLM / full FT", results_dir=tmp_path)
    assert r == json.loads(path.read_text())
    assert r["name"] == "MiniLM / full FT" and r["config"] == {"lr": 1e-3, "epochs": 1}
    assert r["metrics"] == {"accuracy": 0.75, "confusion_matrix": [[1, 0], [1, 2]], "ece": None}
    assert r["split"] == {"name": "validation", "hash": R.split_hash(split), "n": 3}
    assert r["params"]["head"] == 10 and r["train_time_s"] == 12.5 and r["checkpoint_mb"] == 1.5
    assert r["peak_memory_mb"] > 0
    assert r["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert {"cpu", "threads", "gpu", "cpu_count"} <= set(r["hardware"])
    assert [x["name"] for x in R.load_results(results_dir=tmp_path)] == ["MiniLM / full FT"]
    t = R.results_table(results_dir=tmp_path)
    assert t.loc["MiniLM / full FT", "accuracy"] == 0.75 and t.loc["MiniLM / full FT", "trainable_params"] == 100
    assert "confusion_matrix" not in t.columns


def test_state_mb_against_a_hand_count():
    "A float32 1024x256 tensor is 1024 * 256 * 4 bytes = exactly 1 MiB; the same shape in bf16 is half that."
    import torch
    f32, bf16 = torch.zeros(1024, 256), torch.zeros(1024, 256, dtype=torch.bfloat16)
    assert R.state_mb({"w": f32}) == 1.0 and R.state_mb({"w": bf16}) == 0.5
    assert R.state_mb({"a": f32, "b": bf16, "bias": torch.zeros(256)}) == 1.5 + 256 * 4 / 2**20
    assert R.state_mb({}) == 0.0


def test_refuses_overwrite(tmp_path, split, monkeypatch):
    monkeypatch.delenv("IN_TEST", raising=False)
    R.save_result("run", {"lr": 1}, {"accuracy": 0.5}, results_dir=tmp_path)
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        R.save_result("run", {"lr": 2}, {"accuracy": 0.9}, results_dir=tmp_path)
    with pytest.raises(FileExistsError):  # same file stem, different spelling
        R.save_result("run?", {"lr": 2}, {"accuracy": 0.9}, results_dir=tmp_path)
    assert R.get_result("run", tmp_path)["config"] == {"lr": 1}
    R.save_result("run", {"lr": 2}, {"accuracy": 0.9}, results_dir=tmp_path, overwrite=True)
    assert R.get_result("run", tmp_path)["config"] == {"lr": 2}
    assert not list(tmp_path.glob("*.tmp"))


def test_hash_changes_with_data(split):
    h = R.split_hash(split)
    assert R.split_hash(split.copy()) == h
    assert R.split_hash(split.assign(label=[1, 0, 0])) != h
    assert R.split_hash(split.iloc[[1, 0, 2]]) != h
    assert R.split_hash(split.assign(text=["good", "bad", "fine\tok"])) != h
    assert R.split_hash(split.iloc[:2]) != h
    # a row boundary cannot be faked inside a text
    a = pd.DataFrame({"text": ['x", 1]\n["y'], "label": [0]})
    b = pd.DataFrame({"text": ["x", "y"], "label": [1, 0]})
    assert R.split_hash(a) != R.split_hash(b)


def test_in_test_rule(tmp_path, monkeypatch):
    "Under IN_TEST the default folder is data/results/_test, reads fall back to data/results, repeats replace."
    committed = tmp_path / "data" / "results"
    monkeypatch.setattr(R, "committed_results_dir", lambda: committed)
    monkeypatch.delenv(R.RESULTS_ENV, raising=False)
    monkeypatch.delenv("IN_TEST", raising=False)
    R.save_result("full", {}, {"accuracy": 0.8})             # the committed full-size run
    monkeypatch.setenv("IN_TEST", "1")
    assert R.resolve_results_dir() == committed / "_test"
    p = R.save_result("full", {}, {"accuracy": 0.6})         # a lesson under test, same name
    assert p.parent == committed / "_test"
    R.save_result("full", {}, {"accuracy": 0.55})            # reruns of the test suite replace the scratch file
    assert json.loads((committed / "full.json").read_text())["metrics"]["accuracy"] == 0.8  # untouched
    assert R.get_result("full")["metrics"]["accuracy"] == 0.55      # the scratch run shadows it under test
    R.save_result("only_committed", {}, {}, results_dir=committed)
    assert R.get_result("only_committed")["name"] == "only_committed"  # committed numbers still readable
    assert [r["name"] for r in R.load_results()] == ["full", "only_committed"]
    with pytest.raises(FileExistsError):                     # an explicit folder is never silently replaced
        R.save_result("full", {}, {}, results_dir=committed)
    monkeypatch.delenv("IN_TEST")
    assert R.resolve_results_dir() == committed and R.get_result("full")["metrics"]["accuracy"] == 0.8


def test_env_var_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(R.RESULTS_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv("IN_TEST", "1")
    assert R.resolve_results_dir() == tmp_path / "mine" and R.search_dirs() == [tmp_path / "mine"]
    assert R.save_result("x", {}, {}).parent == tmp_path / "mine"
    with pytest.raises(FileExistsError):
        R.save_result("x", {}, {})


def test_default_dir_from_another_cwd(root, tmp_path):
    "The default folder is the repository's data/results whatever the current directory."
    code = "from ft_kit.results import resolve_results_dir; print(resolve_results_dir())"
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("IN_TEST", R.RESULTS_ENV)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(root / "data" / "results")


def test_missing_and_bad_inputs(tmp_path):
    with pytest.raises(KeyError, match="no result named 'nope'.*make results"):
        R.get_result("nope", tmp_path)
    with pytest.raises(ValueError, match="columns 'text' and 'label'"):
        R.split_hash(pd.DataFrame({"review": ["a"], "label": [0]}))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        R.load_results(results_dir=tmp_path)


def test_sentence_and_fmt(tmp_path):
    R.save_result("lora r8", {}, {"accuracy": 0.7591, "ece": 0.042}, results_dir=tmp_path,
                  train_time_s=660.0, params={"trainable": 74498})
    s = R.sentence("LoRA: {lora r8:metrics.accuracy} in {lora r8:train_time_s} with {lora r8:params.trainable} "
                   "trainable parameters (ECE {lora r8:metrics.ece}).", results_dir=tmp_path)
    assert s == "LoRA: 75.9% in 11.0 min with 74,498 trainable parameters (ECE 4.2%)."
    with pytest.raises(KeyError, match="has no 'metrics.f1'"):
        R.sentence("{lora r8:metrics.f1}", results_dir=tmp_path)
