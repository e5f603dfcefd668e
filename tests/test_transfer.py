"""ft_kit.transfer: the random twin (same architecture and pooling, the config's initialisation), each point a search
with the start's own grid and warm-up, records tagged with start and size, curves from valid runs only."""
import numpy as np
import pytest
import torch
import _tiny
from transformers import BertForSequenceClassification

from ft_kit import peft_methods as pm
from ft_kit import transfer as tr
from ft_kit.data import load_splits
from ft_kit.models import MeanPooler, load_encoder, use_mean_pooling
from ft_kit.results import get_result, load_results

torch.set_num_threads(2)
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]


def tiny(seed: int = 0) -> BertForSequenceClassification:
    "A small mean-pooled BERT over MiniLM's vocabulary (so real snippets tokenize into valid ids)."
    return use_mean_pooling(_tiny.tiny_bert(seed, vocab=30522, hidden=32, layers=2, heads=4, intermediate=37).eval())


@pytest.fixture(scope="module")
def tok():
    return load_encoder(device="cpu")[1]


def test_random_twin_keeps_architecture_and_pooling():
    base = tiny(0)
    twin = tr.random_init(base, seed=1)
    assert [(n, p.shape) for n, p in twin.named_parameters()] == [(n, p.shape) for n, p in base.named_parameters()]
    assert isinstance(twin.base_model.pooler, MeanPooler) and twin.config.ft_kit_pooling == "mean"
    ids = torch.tensor([[2, 5, 7, 0]]); mask = torch.tensor([[1, 1, 1, 0]])
    with torch.no_grad():  # mean pooling over real tokens: the padded position does not change the logits
        a = twin(input_ids=ids, attention_mask=mask).logits
        b = twin(input_ids=ids[:, :3], attention_mask=mask[:, :3]).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    w = twin.get_parameter("bert.encoder.layer.0.attention.self.query.weight")
    assert abs(w.std().item() - base.config.initializer_range) < 0.003  # the config's initialisation, not a copy
    assert not torch.equal(w, base.get_parameter("bert.encoder.layer.0.attention.self.query.weight"))
    torch.testing.assert_close(tr.random_init(base, seed=1).get_parameter("classifier.weight"), twin.get_parameter("classifier.weight"))


def test_points_search_each_start_with_its_grid(tmp_path, tok, monkeypatch):
    "Each (start, size) runs its own grid, warm-up, length and validations; records carry the tags; curves use valid seeds."
    monkeypatch.setattr(pm, "failures", lambda metrics, change=None: [])  # every run valid: this test is about the mechanics
    tc = tr.TransferConfig(sizes=(16,), grids={"pretrained": (1e-3, 3e-3), "random": (1e-2,)}, warmup={"pretrained": 0.1, "random": 0.3},
                           steps={"random": 3}, checks={"random": 3}, widen=0, prefix="tt",
                           budget=tr.transfer_budget(n_eval=16, seeds=(0, 1), min_steps=2, max_epochs=4, max_length=16, precision="fp32"))
    makes = {"pretrained": lambda s: (tr.fresh_head(tiny(0), s), tok), "random": lambda s: (tr.random_init(tiny(0), s), tok)}
    splits = load_splits()
    points = [tr.transfer_point(k, 16, makes[k], splits, tc, tmp_path) for k in tc.kinds]
    assert [p["tags"] for p in points] == [{"kind": "pretrained", "n_labelled": 16}, {"kind": "random", "n_labelled": 16}]
    assert [v for v, *_ in points[0]["tried"]] == [1e-3, 3e-3] and [v for v, *_ in points[1]["tried"]] == [1e-2]
    r = get_result("tt-random-n16-lr1e-02-s1", tmp_path)
    assert r["config"]["warmup_ratio"] == 0.3 and r["overrides"] == {"warmup_ratio": 0.3, "eval_every": 1} and r["method"] == "full"
    assert r["protocol"]["n_train"] == 16 and r["protocol"]["balanced"] and r["protocol"]["min_steps"] == 3  # its own length
    assert r["steps"] == 3 and len(r["history"]["eval"]) == 3  # 16 rows are one step an epoch: 3 epochs, validated after each
    p = get_result("tt-pretrained-n16-lr1e-03-s0", tmp_path)  # the budget's length, validated once, at the end
    assert p["config"]["warmup_ratio"] == 0.1 and p["steps"] == 2 and len(p["history"]["eval"]) == 1
    assert p["protocol"]["min_steps"] == 2 and p["overrides"] == {"warmup_ratio": 0.1}
    assert tr.schedule_lines(points) == [  # what the lesson prints, read back from the search records
        "pretrained start: runs of at least 2 epochs and 2 steps (at most 4 epochs), validated once, at the end: 16 labels",
        "random start: runs of at least 2 epochs and 3 steps (at most 4 epochs), validated 3 times, the best weights kept: 16 labels"]
    sample = tr.budget_data(tr.replace(tc.budget, n_train=16), splits)["train"]
    assert np.bincount(sample["label"]).tolist() == [8, 8]  # a class-balanced sample of the labels
    c = tr.transfer_curves("tt", tmp_path)
    assert list(c.columns) == tr.CURVE_COLUMNS and sorted(c["kind"]) == ["pretrained", "random"] and set(c["n"]) == {16}
    for kind, p in zip(tc.kinds, points):
        row = c[c["kind"] == kind].iloc[0]
        runs = [x for x in load_results(f"tt-{kind}-n16-*", tmp_path) if x.get("value") == p["chosen"] and x.get("valid")]
        if p["chosen"] is None or not runs: assert np.isnan(row["accuracy"]) and row["status"] == "failed"
        else: assert row["accuracy"] == pytest.approx(np.mean([x["test"]["accuracy"] for x in runs])) and row["seeds"] == len(runs)


def test_starts_share_length_and_stopping_by_default():
    "Lesson 05's starts differ only in rates and warm-up: the same least steps and validations, so neither gets a longer run."
    tc = tr.TransferConfig()
    assert set(tc.steps) == set(tc.checks) == set(tc.kinds) == set(tc.grids) == set(tc.warmup)
    assert len(set(tc.steps.values())) == 1 and len(set(tc.checks.values())) == 1 and tc.checks["pretrained"] > 1
    assert tc.grids["pretrained"] != tc.grids["random"]  # each start keeps its own search


def test_failed_point_has_no_accuracy_only_its_reason(tmp_path, tok):
    "A start whose every rate fails the gates is a point without accuracy that says why (never a number)."
    tc = tr.TransferConfig(sizes=(16,), kinds=("random",), grids={"random": (1e-12,)}, widen=0, prefix="tf",
                           budget=tr.transfer_budget(n_eval=16, seeds=(0,), min_steps=2, max_epochs=1, max_length=16, precision="fp32"))
    p = tr.transfer_point("random", 16, lambda s: (tr.random_init(tiny(0), s), tok), load_splits(), tc, tmp_path)
    assert p["chosen"] is None and "did not train" in p["reason"]
    c = tr.transfer_curves("tf", tmp_path)
    assert c.loc[0, "status"] == "failed" and np.isnan(c.loc[0, "accuracy"]) and "did not train" in c.loc[0, "reason"]


def test_unknown_start():
    with pytest.raises(ValueError, match="'pretrained' or 'random'"): tr.start_factory("imagenet", tiny(), None)
    with pytest.raises(ValueError, match="kind must be one of"): tr.transfer_point("imagenet", 8, None, {}, tr.TransferConfig())


def test_summary_reads_every_figure_from_the_curves():
    "The lesson's sentence: gaps, first size above majority, the labels that match random's best, the all-labels point."
    import pandas as pd
    rows = [("pretrained", 32, 0.60, 0.02), ("pretrained", 128, 0.70, 0.01), ("pretrained", 512, 0.78, 0.01),
            ("pretrained", 9000, 0.84, 0.003), ("random", 32, 0.55, 0.01), ("random", 128, 0.58, 0.01), ("random", 512, 0.66, 0.02)]
    c = pd.DataFrame([{"kind": k, "n": n, "accuracy": a, "std": s, "min": a - s, "majority": 0.56, "reason": ""} for k, n, a, s in rows])
    text = tr.transfer_summary(c)
    assert "Pretraining is worth 5.0 to 12.0 points" in text
    assert "first beats the majority class at 128 labels" in text
    assert "The random start's best, 66.0% ± 2.0% with 512 labels, is matched by the pretrained start with 128." in text
    assert "With all 9,000 labels the pretrained start reaches 84.0% ± 0.3%." in text
    assert "fragile" not in text  # every seed above the majority class
    c.loc[(c["kind"] == "random") & (c["n"] == 128), "min"] = 0.55
    assert tr.transfer_summary(c).endswith("so their means are fragile: the random start at 128 labels (55.0%).")


def test_bow_comparison_reads_every_figure_from_both_tables():
    "The yardstick's sentence: its test scores at valid sizes, each start's side of it and by how much, failed sizes."
    import pandas as pd
    rows = [("pretrained", 128, 0.70), ("pretrained", 512, 0.78), ("random", 128, 0.55), ("random", 512, 0.62)]
    c = pd.DataFrame([{"kind": k, "n": n, "accuracy": a} for k, n, a in rows])
    bow = pd.DataFrame([{"n": 32, "accuracy": np.nan, "reason": "validation accuracy 50.0% is at or below the majority class's 56.0%"},
                        {"n": 128, "accuracy": 0.56, "reason": ""}, {"n": 512, "accuracy": 0.65, "reason": ""}]).assign(majority=0.6)
    text = tr.bow_comparison(c, bow)
    assert "scores 56.0% with 128 labels, 65.0% with 512 labels on the test split (majority class 60.0%)." in text
    assert "The random start stays below it at every size where both are results, by 1.0 to 3.0 points: from these" in text
    assert "the pretrained start is above it at every size where both are results, by 13.0 to 14.0 points." in text
    assert text.endswith("With 32 labels no `C` passes the gates (no better than the majority class).")
    c.loc[3, "accuracy"] = 0.66  # random above the yardstick at 512: the sentence says where each
    assert "The random start is below it with 128 labels and not below it with 512; the pretrained" in tr.bow_comparison(c, bow)
    r = c[c["kind"] == "random"].assign(accuracy=[0.5, 0.6])  # one shared size (no yardstick at 512): one figure, no range
    assert "The random start stays below it at every size where both are results, by 6.0 points: from these" in \
        tr.bow_comparison(r, bow.assign(n=[32, 128, 4096]))


def test_bow_table_reads_the_yardstick_records(tmp_path):
    "bench.bow's records back as a table: the chosen C's test accuracy where a C passed the gates, NaN and why if none."
    import pandas as pd
    pytest.importorskip("sklearn")
    from bench.bow import bow_point
    from ft_kit.results import save_result
    words = ["great", "awful"]  # one word per class: a lightly regularised fit separates them
    frame = lambda n: pd.DataFrame({"text": [f"a {words[i % 2]} film {i}" for i in range(n)], "label": [i % 2 for i in range(n)]})
    train = pd.DataFrame({"text": [f"a {w} film {i}" for i, w in enumerate(["great"] * 4 + ["awful"] * 12)], "label": [0] * 4 + [1] * 12})
    test = frame(10).assign(label=lambda d: [1 - y if i < 2 else y for i, y in enumerate(d["label"])])  # 2 of 10 mislabelled
    good = bow_point({"train": train, "validation": frame(10), "test": test}, cs=(1e-4, 1.0))
    assert good["tried"][0][2] is False and good["tried"][0][1] == 0.5  # C=1e-4: only the intercept, class 1 for all
    assert good["valid"] and good["C"] == 1.0 and good["failed"] == []
    assert good["metrics"]["accuracy"] == 1.0 and good["test"]["accuracy"] == 0.8  # chosen on validation, scored on test
    same = lambda n: pd.DataFrame({"text": ["a film"] * n, "label": [1] * (n - 3) + [0] * 3})  # nothing to learn: one class
    bad = bow_point({"train": train, "validation": same(10), "test": same(10)}, cs=(1.0,))
    assert not bad["valid"] and "predicts class" in bad["failed"][0]
    for n, p in ((16, good), (8, bad)):
        save_result(f"tb-n{n}", {"C": p["C"]}, p["metrics"], None, tmp_path, n_labelled=n, test=p["test"], valid=p["valid"],
                    failed=p["failed"])
    t = tr.bow_table("tb", tmp_path)
    assert list(t["n"]) == [8, 16] and np.isnan(t.loc[0, "accuracy"]) and "predicts class" in t.loc[0, "reason"]
    assert t.loc[1, "accuracy"] == 0.8 and t.loc[1, "val_accuracy"] == 1.0 and t.loc[1, "C"] == 1.0
