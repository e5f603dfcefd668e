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
    sample = tr.budget_data(tr.replace(tc.budget, n_train=16), splits)["train"]
    assert np.bincount(sample["label"]).tolist() == [8, 8]  # a class-balanced sample of the labels
    c = tr.transfer_curves("tt", tmp_path)
    assert list(c.columns) == tr.CURVE_COLUMNS and sorted(c["kind"]) == ["pretrained", "random"] and set(c["n"]) == {16}
    for kind, p in zip(tc.kinds, points):
        row = c[c["kind"] == kind].iloc[0]
        runs = [x for x in load_results(f"tt-{kind}-n16-*", tmp_path) if x.get("value") == p["chosen"] and x.get("valid")]
        if p["chosen"] is None or not runs: assert np.isnan(row["accuracy"]) and row["status"] == "failed"
        else: assert row["accuracy"] == pytest.approx(np.mean([x["test"]["accuracy"] for x in runs])) and row["seeds"] == len(runs)


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
