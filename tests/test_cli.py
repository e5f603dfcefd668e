"""The `ft-kit` console script: bad CSVs give load_csv's message and exit 2, outputs are protected, finetune/predict work."""
import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def ft_kit(*args, timeout=600):
    "Run the installed `ft-kit` command in a fresh process (or the same entry point through python when the script is missing)."
    exe = Path(sys.executable).with_name("ft-kit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from ft_kit.cli import main; raise SystemExit(main())"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def ft_kit_here(*args) -> subprocess.CompletedProcess:
    "Run `ft_kit.cli.main` in this process (what the console script calls, minus the start-up of a new Python)."
    from ft_kit.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main([str(a) for a in args])
        except SystemExit as e: rc = e.code  # argparse errors
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    "A small user-style CSV (columns review, sentiment with labels bad/good) and a CSV of new texts."
    from ft_kit.data import load_splits, sample_balanced
    d = tmp_path_factory.mktemp("cli")
    s = load_splits()
    df = sample_balanced(s["train"], 24, seed=2)
    pd.DataFrame({"review": df["text"], "sentiment": df["label"].map({0: "bad", 1: "good"})}).to_csv(d / "reviews.csv", index=False)
    sample_balanced(s["validation"], 6, seed=2)[["text"]].rename(columns={"text": "review"}).to_csv(d / "new.csv", index=False)
    return d


def test_console_script_installed():
    assert Path(sys.executable).with_name("ft-kit").exists(), "run `pip install -e .` to install the ft-kit command"
    r = ft_kit("--help")
    assert r.returncode == 0 and "finetune" in r.stdout


def test_bad_csvs_exit_2_with_load_csv_messages(data):
    from ft_kit.data import load_csv
    (data / "empty.csv").write_text("")
    pd.DataFrame({"review": ["a", "b", "c"], "sentiment": ["bad", "meh", "good"]}).to_csv(data / "three.csv", index=False)
    cases = [(data / "nope.csv", "review", "sentiment", None), (data / "empty.csv", "review", "sentiment", None),
             (data / "reviews.csv", "text", "sentiment", ("bad", "good")), (data / "three.csv", "review", "sentiment", None)]
    for path, tc, lc, labels in cases:
        r = ft_kit_here("finetune", path, "--text-col", tc, "--label-col", lc, "--out", data / "never")
        with pytest.raises((ValueError, FileNotFoundError)) as e: load_csv(path, tc, lc, labels)
        assert r.returncode == 2, (path, r.stderr)
        assert "Traceback" not in r.stderr and str(e.value) in r.stderr, (r.stderr, str(e.value))
    assert not (data / "never").exists()


def test_finetune_predict_and_force(data):
    out = data / "model"
    r = ft_kit_here("finetune", data / "reviews.csv", "--text-col", "review", "--label-col", "sentiment", "--method", "head",
               "--epochs", 1, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "train" in r.stderr  # the progress bar
    rep = out / "report"
    assert {"metrics.json", "confusion_matrix.png", "curves.png", "index.html"} <= {p.name for p in rep.iterdir()}
    m = json.loads((rep / "metrics.json").read_text())
    assert m["validation"]["n"] == m["settings"]["validation"] and sum(map(sum, m["validation"]["confusion_matrix"])) == m["validation"]["n"]
    assert "confusion_matrix.png" in (rep / "index.html").read_text()
    r = ft_kit_here("finetune", data / "reviews.csv", "--text-col", "review", "--label-col", "sentiment", "--out", out)
    assert r.returncode == 2 and "--force" in r.stderr and "Traceback" not in r.stderr
    # predict to stdout and to a protected file
    r = ft_kit_here("predict", out, data / "new.csv", "--text-col", "review")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "review,predicted,prob_bad,prob_good" and len(lines) == 7
    assert ft_kit_here("predict", out, data / "new.csv", "--text-col", "review", "--out", data / "p.csv").returncode == 0
    r = ft_kit_here("predict", out, data / "new.csv", "--text-col", "review", "--out", data / "p.csv")
    assert r.returncode == 2 and "--force" in r.stderr
    r = ft_kit_here("predict", out, data / "new.csv", "--out", data / "p2.csv")  # wrong text column
    assert r.returncode == 2 and "has no column 'text'" in r.stderr and not (data / "p2.csv").exists()


def test_lora_finetune_writes_a_peft_folder(data):
    from ft_kit.deploy import load_classifier, read_info
    out = data / "lora"
    r = ft_kit_here("finetune", data / "reviews.csv", "--text-col", "review", "--label-col", "sentiment", "--method", "lora",
                    "--epochs", 1, "--out", out)
    assert r.returncode == 0, r.stderr
    assert read_info(out).format == "peft" and (out / "adapter_model.safetensors").exists()
    assert load_classifier(out).predict(["fine"])[0]["label"] in ("bad", "good")


def test_same_seed_same_predictions_file(data):
    "Two `ft-kit finetune` runs with one seed give identical prediction files; another seed gives another model."
    outs = {}
    for name, seed, run in (("a", 0, ft_kit), ("b", 0, ft_kit_here), ("c", 1, ft_kit_here)):  # a: a fresh process;
        r = run("finetune", data / "reviews.csv", "--text-col", "review", "--label-col", "sentiment", "--method", "head",
                "--epochs", 1, "--seed", seed, "--out", data / f"seed_{name}")  # b, c: after everything this process ran
        assert r.returncode == 0, r.stderr
        assert ft_kit_here("predict", data / f"seed_{name}", data / "new.csv", "--text-col", "review",
                           "--out", data / f"p_{name}.csv").returncode == 0
        outs[name] = (data / f"p_{name}.csv").read_text()
    assert outs["a"] == outs["b"]
    assert outs["a"] != outs["c"]
    assert json.loads((data / "seed_c" / "report" / "metrics.json").read_text())["settings"]["seed"] == 1


def test_serve_limits_from_the_command_line(capsys):
    "`ft-kit serve --max-body-bytes/--max-texts/--max-chars` set ServeConfig; unset keep its defaults; 0 exits 2."
    from ft_kit.cli import build_parser, main, serve_config
    from ft_kit.serve import ServeConfig
    parse = lambda *args: build_parser().parse_args(["serve", "some_model", *args])
    assert serve_config(parse()) == ServeConfig()
    assert serve_config(parse("--max-body-bytes", "4096", "--max-texts", "8", "--no-batching")) == \
        ServeConfig(max_body_bytes=4096, max_texts=8, batching=False)
    helps = {a.dest: a.help for a in build_parser()._subparsers._group_actions[0].choices["serve"]._actions}
    d = ServeConfig()
    assert f"default {d.max_texts})" in helps["max_texts"] and f"default {d.max_chars})" in helps["max_chars"]
    assert d.max_body_bytes == 2**20 and "1 MiB" in helps["max_body_bytes"]
    assert main(["serve", "some_model", "--max-body-bytes", "0"]) == 2
    assert "--max-body-bytes must be at least 1, got 0" in capsys.readouterr().err
