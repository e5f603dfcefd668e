"""bench scripts: wall records named by their settings (bench.timed); SetFit runs that train (bench.setfit_budget)."""
import json

import pytest


def test_wall_records_name_their_settings(tmp_path, monkeypatch):
    "bench.timed names a wall record by the settings its script reads, so two settings of one script keep two records."
    from bench.timed import env_settings, main, wall_name
    env = {"LB_MODEL": "smollm2-head", "FT_KIT_RESULTS_DIR": "elsewhere", "PT_SIZES": "32", "LB_SEEDS": ""}
    assert env_settings("bench.label_budget", env) == {"LB_MODEL": "smollm2-head"}  # unread, unset and the folder: out
    assert {"PROTOCOL_N_TRAIN", "TRANSFER_SIZES"} <= set(env_settings("bench.protocol", {k: "1" for k in
                                                                        ("PROTOCOL_N_TRAIN", "TRANSFER_SIZES")}))
    assert env_settings("bench.runs", {"FT_KIT_RESULTS_DIR": "elsewhere", "RUNS_N": "64"}) == {"RUNS_N": "64"}
    assert wall_name("bench.x", {}) == "wall-bench.x"
    (tmp_path / "tiny_script.py").write_text('import os\nprint(os.environ.get("TINY_N", "0"))\n')
    monkeypatch.syspath_prepend(str(tmp_path)); monkeypatch.setenv("FT_KIT_RESULTS_DIR", str(tmp_path / "reg"))
    for n in ("", "7"):
        monkeypatch.setenv("TINY_N", n); main(["tiny_script"])
    stems = sorted(p.stem for p in (tmp_path / "reg").glob("*.json"))
    assert stems == ["wall-tiny_script", "wall-tiny_script-TINY_N_7"]
    rec = json.loads((tmp_path / "reg" / "wall-tiny_script-TINY_N_7.json").read_text())
    assert rec["config"]["env"] == {"TINY_N": "7"} and rec["status"] == "finished" and rec["wall_s"] >= 0


def test_setfit_run_trains_and_is_gated():
    "A SetFit run changes the encoder and counts its fitted head from the library; at rate 0 the gate fails it."
    pytest.importorskip("setfit")
    from sentence_transformers import SentenceTransformer
    from bench.setfit_budget import SetFitRun, train_once
    from ft_kit.data import load_splits, sample_balanced
    from ft_kit.experiment import failures
    from ft_kit.models import encoder_dir
    s = load_splits()
    train, evals = sample_balanced(s["train"], 8, seed=0), {"validation": sample_balanced(s["validation"], 16, seed=0)}
    st = SentenceTransformer(str(encoder_dir()), device="cpu")  # the library's own reading of the folder
    dim, body = st.get_sentence_embedding_dimension(), sum(p.numel() for p in st.parameters())
    out = train_once(SetFitRun(8, 2e-5, 0, batch_size=8, num_iterations=1), train, evals)
    assert max(out["weight_change"].values()) > 1e-6 and out["params"]["trainable"] == body + dim + 1
    assert not any("weight" in f for f in failures(out["metrics"], out["weight_change"]))
    frozen = train_once(SetFitRun(8, 0.0, 0, batch_size=8, num_iterations=1), train, evals)
    assert max(frozen["weight_change"].values()) < 1e-6
    assert any("weight" in f for f in failures(frozen["metrics"], frozen["weight_change"]))


def test_transfer_sizes_parse_or_say_what_is_expected():
    "TRANSFER_SIZES (bench.protocol and bench.bow): numbers and 'all'; anything else names the setting and an example."
    from bench.protocol import transfer_sizes
    assert transfer_sizes("32,128,all") == (32, 128, None) and transfer_sizes("all") == (None,)
    for bad in ("32,abc", "0", "32,-5", ""):
        with pytest.raises(SystemExit, match=r"TRANSFER_SIZES=.*comma-separated numbers .* e\.g\. TRANSFER_SIZES=32,128,all"):
            transfer_sizes(bad)
