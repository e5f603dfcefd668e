"""ft_kit.continual on tiny models: the EWC penalty and its gradient hooks, the Fisher information, the replay mix,
exact adapter swapping, head expansion, the drift measures and the tweets. Each check compares with an
independent reference (hand-computed closed forms, autograd, scipy, counts)."""
import json
import re
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from scipy.stats import entropy
from torch import nn
import _tiny
from transformers import BertForSequenceClassification

from ft_kit.continual import (LAB_METHODS, LABELS3, TAGS, Lab, LabConfig, cosine_drift, ewc_hooks, ewc_penalty,
                              expand_head, fisher_diagonal, lab_sentence, lab_summary, lab_table, mix_replay,
                              prediction_kl, run_lab, sweep_table, tied_with_best)
from ft_kit.experiment import Budget, run_name
from ft_kit.data import load_tweets, repair_text
from ft_kit.lora import LoRAConfig, apply_lora, load_adapter, save_adapter
from ft_kit.train import TrainConfig, logits_of, train

torch.set_num_threads(1)


def tiny_bert(seed: int = 0, num_labels: int = 2) -> BertForSequenceClassification:
    "A 2-layer, 16-wide BERT classifier with random weights, no dropout, in eval mode."
    return _tiny.tiny_bert(seed, dropout=0.0, vocab=60, intermediate=24, num_labels=num_labels, max_positions=32).eval()


def batches(n: int = 24, bs: int = 8, classes: int = 2, seed: int = 1) -> list[dict]:
    "Random token batches with labels, as the kit's loaders give them."
    g = torch.Generator().manual_seed(seed)
    ids, y = torch.randint(1, 60, (n, 9), generator=g), torch.randint(0, classes, (n,), generator=g)
    return [{"input_ids": ids[i:i + bs], "attention_mask": torch.ones_like(ids[i:i + bs]), "labels": y[i:i + bs]} for i in range(0, n, bs)]


class Linear(nn.Module):
    "A linear softmax classifier reading its features from `input_ids`."
    def __init__(self, d: int = 3, c: int = 2):
        super().__init__(); torch.manual_seed(0); self.lin = nn.Linear(d, c)
    def forward(self, input_ids, attention_mask=None): return self.lin(input_ids.float())


# ---- EWC ----------------------------------------------------------------------------------------------------------

def test_ewc_penalty_zero_at_anchor_and_grows():
    m = tiny_bert()
    anchor = {k: v.detach().clone() for k, v in m.named_parameters()}
    fisher = {k: torch.rand_like(v) for k, v in m.named_parameters()}
    assert ewc_penalty(m, anchor, fisher, 100.0).item() == 0.0
    direction = {k: torch.randn_like(v) for k, v in anchor.items()}
    values = []
    for t in (0.01, 0.02, 0.04, 0.08):
        with torch.no_grad():
            for k, p in m.named_parameters(): p.copy_(anchor[k] + t * direction[k])
        values.append(ewc_penalty(m, anchor, fisher, 100.0).item())
    assert all(b > a > 0 for a, b in zip(values, values[1:]))  # grows as the weights move
    np.testing.assert_allclose(np.array(values[1:]) / values[:-1], 4.0, rtol=1e-4)  # quadratically
    # closed form, computed independently with numpy
    want = 100.0 / 2 * sum(float((fisher[k].numpy() * (0.08 * direction[k].numpy()) ** 2).sum()) for k in anchor)
    assert values[-1] == pytest.approx(want, rel=1e-4)


def test_ewc_penalty_closed_form_by_hand():
    m = Linear(d=2, c=2)
    anchor = {k: v.detach().clone() for k, v in m.named_parameters()}
    with torch.no_grad(): m.lin.weight += torch.tensor([[1.0, -2.0], [0.0, 0.5]]); m.lin.bias += torch.tensor([0.1, 0.0])
    fisher = {"lin.weight": torch.tensor([[0.5, 1.0], [2.0, 4.0]]), "lin.bias": torch.tensor([10.0, 3.0])}
    hand = 0.5 * 1 + 1.0 * 4 + 2.0 * 0 + 4.0 * 0.25 + 10.0 * 0.01 + 0  # sum F d^2 = 5.6
    assert ewc_penalty(m, anchor, fisher, lam=3.0).item() == pytest.approx(3.0 / 2 * hand, rel=1e-6)
    assert ewc_penalty(m, anchor, {"lin.bias": fisher["lin.bias"]}, lam=2.0).item() == pytest.approx(0.1, rel=1e-5)  # subset


def test_ewc_hooks_give_the_gradient_of_loss_plus_penalty():
    m = tiny_bert()
    anchor = {k: v.detach().clone() + 0.05 * torch.randn_like(v) for k, v in m.named_parameters()}
    fisher = {k: torch.rand_like(v) for k, v in m.named_parameters()}
    b = batches()[0]
    m.zero_grad(); (F.cross_entropy(logits_of(m, b), b["labels"]) + ewc_penalty(m, anchor, fisher, 7.0)).backward()
    want = {k: p.grad.clone() for k, p in m.named_parameters()}
    m.zero_grad()
    with ewc_hooks(m, anchor, fisher, 7.0): F.cross_entropy(logits_of(m, b), b["labels"]).backward()
    for k, p in m.named_parameters(): torch.testing.assert_close(p.grad, want[k], rtol=1e-5, atol=1e-7)
    m.zero_grad(); F.cross_entropy(logits_of(m, b), b["labels"]).backward()  # hooks removed after the block
    assert not torch.allclose(m.classifier.bias.grad, want["classifier.bias"])


def test_ewc_hooks_pull_training_towards_the_anchor():
    "With a huge lambda, training under the hooks stays much closer to the anchor than training without."
    data, cfg = {"train": batches(48)}, TrainConfig(lr=1e-2, epochs=2, batch_size=8, warmup_ratio=0.0)
    free, held = tiny_bert(), tiny_bert()
    anchor = {k: v.detach().clone() for k, v in held.named_parameters()}
    fisher = {k: torch.ones_like(v) for k, v in held.named_parameters()}
    train(free, data, cfg, progress=False)
    with ewc_hooks(held, anchor, fisher, 1e4): train(held, data, cfg, progress=False)
    dist = lambda m: sum(((p - anchor[k]) ** 2).sum().item() for k, p in m.named_parameters())
    assert dist(held) < 0.1 * dist(free)


def test_ewc_rejects_a_foreign_fisher():
    m = Linear()
    with pytest.raises(ValueError, match="no parameter"): ewc_penalty(m, {}, {"encoder.x": torch.zeros(1)}, 1.0)
    with pytest.raises(ValueError, match="no parameter"):
        with ewc_hooks(m, {}, {"encoder.x": torch.zeros(1)}, 1.0): pass


def test_fisher_closed_form_on_a_linear_classifier():
    "F_W[k, j] = E_x p_k (1 - p_k) x_j^2 and F_b[k] = E_x p_k (1 - p_k) for a softmax-linear model."
    m, X = Linear(d=4, c=3), torch.randn(11, 4)
    loader = [{"input_ids": X[:5], "attention_mask": torch.ones(5, 1)}, {"input_ids": X[5:], "attention_mask": torch.ones(6, 1)}]
    fi = fisher_diagonal(m, loader)
    P = F.softmax(m(X), -1).detach().double().numpy()
    Xn = X.double().numpy()
    np.testing.assert_allclose(fi["lin.weight"].numpy(), np.mean((P * (1 - P))[:, :, None] * (Xn ** 2)[:, None, :], 0), rtol=1e-5)
    np.testing.assert_allclose(fi["lin.bias"].numpy(), np.mean(P * (1 - P), 0), rtol=1e-5)


def test_fisher_matches_per_example_autograd_on_tiny_bert():
    "The batched loop equals a brute-force sum over examples and classes with plain backward()."
    m, b = tiny_bert(), batches(6, bs=3)
    fi = fisher_diagonal(m, b)
    want = {k: torch.zeros_like(p) for k, p in m.named_parameters()}
    for batch in b:
        for i in range(3):
            for c in range(2):
                m.zero_grad()
                logp = F.log_softmax(m(input_ids=batch["input_ids"][i:i + 1]).logits, -1)[0]
                logp[c].backward()
                for k, p in m.named_parameters():
                    if p.grad is not None: want[k] += logp[c].exp().item() * p.grad ** 2 / 6
    for k in want: torch.testing.assert_close(fi[k], want[k], rtol=1e-4, atol=1e-10)


# ---- replay -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.1, 0.25, 1 / 3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("total", [None, 30, 77])
def test_mix_replay_exact_fraction(fraction, total):
    a = pd.DataFrame({"text": [f"a{i}" for i in range(100)], "label": np.arange(100) % 2, "movie": "x"})
    b = pd.DataFrame({"text": [f"b{i}" for i in range(80)], "label": np.arange(80) % 2, "confidence": 1.0})
    mix = mix_replay(a, b, fraction, seed=3, total=total)
    n = total or len(b)
    n_a = int((mix["task"] == "A").sum())
    assert len(mix) == n and n_a == round(fraction * n)  # hand count
    assert set(mix.loc[mix["task"] == "A", "text"]) <= set(a["text"]) and set(mix.loc[mix["task"] == "B", "text"]) <= set(b["text"])
    assert mix["text"].is_unique  # drawn without replacement
    assert mix["text"].str[0].map({"a": "A", "b": "B"}).tolist() == mix["task"].tolist()
    if (fraction * n).is_integer(): assert n_a / n == fraction  # exactly the asked fraction when it can be
    assert mix.equals(mix_replay(a, b, fraction, seed=3, total=total))  # seeded


def test_mix_replay_errors():
    a, b = pd.DataFrame({"text": ["a"] * 3, "label": [0] * 3}), pd.DataFrame({"text": ["b"] * 10, "label": [1] * 10})
    with pytest.raises(ValueError, match="needs 5 task-A rows but a_df has 3"): mix_replay(a, b, 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"): mix_replay(a, b, -0.1)


# ---- adapters and heads -------------------------------------------------------------------------------------------

def test_adapter_swap_restores_task_a_logits_exactly(tmp_path):
    m = apply_lora(tiny_bert(), LoRAConfig(r=4, target_modules=("query", "value")))
    init = save_adapter(m, tmp_path / "init.safetensors")
    cfg = TrainConfig(lr=1e-2, epochs=1, batch_size=8, warmup_ratio=0.0)
    train(m, {"train": batches(seed=1)}, cfg, progress=False)
    probe = batches(seed=9)[0]
    m.eval(); logits_a = logits_of(m, probe).detach().clone()
    save_adapter(m, tmp_path / "a.safetensors")
    load_adapter(m, init); train(m, {"train": batches(seed=2)}, cfg, progress=False)  # task B from a fresh adapter
    m.eval(); assert not torch.allclose(logits_of(m, probe), logits_a, atol=1e-4)
    load_adapter(m, tmp_path / "a.safetensors")
    assert torch.equal(logits_of(m, probe), logits_a)  # bit for bit


def test_expand_head_keeps_old_logits():
    m = tiny_bert()
    b = batches()[0]
    old = logits_of(m, b).detach()
    expand_head(m, 1, names=LABELS3)
    new = logits_of(m, b).detach()
    assert new.shape == (8, 3) and torch.equal(new[:, :2], old)
    assert m.config.num_labels == 3 and m.config.id2label[2] == "neutral"
    # the wider head trains on three classes with the kit's loop
    train(m, {"train": batches(classes=3)}, TrainConfig(epochs=1, batch_size=8), progress=False)
    expand_head(m, 2)
    assert logits_of(m.eval(), b).shape == (8, 5)
    with pytest.raises(TypeError, match="expected nn.Linear"): expand_head(m, 1, head="bert.pooler")
    with pytest.raises(ValueError, match="at least 1"): expand_head(m, 0)


# ---- measures, tables, data ---------------------------------------------------------------------------------------

def test_drift_measures_against_references():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet([1, 1], 20), rng.dirichlet([1, 1], 20)
    assert prediction_kl(p, q) == pytest.approx(np.mean([entropy(x, y) for x, y in zip(p, q)]), rel=1e-9)
    assert prediction_kl(p, p) == pytest.approx(0, abs=1e-12)
    q3 = np.hstack([q * 0.6, np.full((20, 1), 0.4)])
    assert prediction_kl(p, q3) == pytest.approx(np.mean([entropy(np.append(x, 0), y) for x, y in zip(p, q3)]), rel=1e-9)
    a, b = torch.randn(30, 8), torch.randn(30, 8)
    want = np.mean([1 - x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a.numpy(), b.numpy())])
    assert cosine_drift(a, b) == pytest.approx(want, rel=1e-5)
    assert cosine_drift(a, 3 * a) == pytest.approx(0, abs=1e-6)


def _rec(name, method, a, label, **options):
    "A record of the lab's schema with made-up test numbers."
    return {"name": name, "label": label, "method": method, "options": options, "train_time_s": 1.0, "valid": True,
            "test": {"matrix": [[0.8, 0.6], [a, 0.9]], "a_accuracy": a, "b_accuracy": 0.9, "forgetting": 0.8 - a,
                     "accuracy": (a + 0.9) / 2, "drift_cosine": 0.1, "drift_kl": 0.2}}


def test_tables_from_records():
    recs = [_rec("continual-replay-f5e-01-s0", "rehearsal", 0.78, "replay", replay_fraction=0.5),
            _rec("continual-seq_full-s0", "seq", 0.6, "seq_full", replay_fraction=0.0, ewc_lambda=0.0),
            _rec("continual-ewc-lam1e+05-s0", "EWC", 0.7, "ewc", ewc_lambda=1e5), _rec("continual-joint-s0", "joint", 0.81, "joint"),
            {"name": "continual-task_a-lr1e-04-s0", "label": "task_a", "method": "full FT on A", "test": {"accuracy": 0.8}}]
    sw = sweep_table(recs, "replay")
    assert sw["x"].tolist() == [0.0, 0.5] and sw["forgetting"].round(6).tolist() == [0.2, 0.02]
    assert sweep_table(recs, "ewc")["a_accuracy"].tolist() == [0.6, 0.7]
    t = lab_table(recs)
    assert len(t) == 4  # the task-A record has no matrix: not a method's row
    assert t.loc["continual-ewc-lam1e+05-s0", "method"] == "EWC (100000)" and t.loc["continual-joint-s0", "A after B"] == 0.81
    assert t.loc["continual-joint-s0", "average"] == pytest.approx((0.81 + 0.9) / 2)


class StubLab(Lab):
    "A Lab whose steps return made-up records at once: the search order, the widening and the read-back are tested."
    def __init__(self, seeds=(0, 1, 2)):
        self.cfg, self.calls = LabConfig(Budget(n_train=8, seeds=seeds)), []
        self.splits = {"A": {"name": "A test", "hash": "h"}}

    def use(self, seed, lr=None): self.seed, self.lr = seed, lr; return self

    def step(self, label, value=None):
        self.calls.append((label, value, self.seed, self.lr))
        best = {"task_a": 1e-4, "ewc": 1e7, "replay": 0.25}.get(label)  # EWC's best is at its grid's top edge
        acc = 0.8 - (0.05 * abs(np.log10(value / best)) if best else 0) + 0.01 * self.seed
        ok = not (label == "task_a" and value == 1e-5)  # one rate fails the gates
        return {"name": run_name("continual", label, self.seed, value, TAGS.get(label, "lr")), "label": label,
                "method": LAB_METHODS.get(label, "A"), "seed": self.seed, "value": value, "a_lr": self.lr,
                "options": {}, "config": {}, "protocol": asdict(self.cfg), "split": self.splits["A"],
                "metrics": {"accuracy": acc}, "valid": ok, "failed": [] if ok else ["made up"], "train_time_s": 1.0,
                "test": {"matrix": [[0.8, 0.6], [acc - 0.1, 0.9]], "accuracy": acc, "forgetting": 0.9 - acc}}


def test_run_lab_searches_then_repeats_and_reads_back(tmp_path):
    lab = StubLab()
    out = run_lab(lab, tmp_path, labels=("seq_full", "replay", "ewc"))
    assert out["task_a"]["chosen"] == 1e-4 and out["replay"]["chosen"] == 0.25
    assert out["ewc"]["chosen"] == 1e7 and 3e7 in [v for v, *_ in out["ewc"]["tried"]]  # best at the edge: one more value
    assert [v for v, *_ in out["replay"]["tried"]] == [0.1, 0.25, 0.5]  # three shares: not widened
    # every method's stage B uses the task-A rate chosen first; each seed runs at the chosen value
    assert {lr for label, _, _, lr in lab.calls if label != "task_a"} == {1e-4}
    assert sorted(s for label, v, s, _ in lab.calls if label == "replay" and v == 0.25) == [0, 1, 2]
    assert sorted(s for label, v, s, _ in lab.calls if label == "seq_full") == [0, 1, 2]
    search = json.loads((tmp_path / "continual-ewc-search.json").read_text())
    assert search["chosen"] == 1e7 and search["method"] == "EWC"
    n = len(lab.calls)
    run_lab(lab, tmp_path, labels=("seq_full", "replay", "ewc"))
    assert len(lab.calls) == n  # a second run reads every record back
    other = StubLab(seeds=(0, 1, 2, 3))  # another protocol: nothing is read back as its own
    run_lab(other, tmp_path, labels=("seq_full",))
    assert len(other.calls) > 4
    s = lab_summary(tmp_path)
    runs = [json.loads((tmp_path / f"continual-replay-f2e-01-s{k}.json").read_text()) for k in (0, 1, 2)]
    accs = [r["test"]["accuracy"] for r in runs]
    assert s.loc["replay", "average_mean"] == pytest.approx(np.mean(accs))
    lo, hi = scipy.stats.t.interval(0.95, 2, loc=np.mean(accs), scale=scipy.stats.sem(accs))
    assert s.loc["replay", "average_ci95"] == pytest.approx((hi - lo) / 2)
    assert "task_a" not in s.index and s.loc["seq_full", "seeds"] == 4  # the last protocol's seeds
    with pytest.raises(ValueError, match=r"unknown lab method\(s\) \['rehearsal'\]: choose from"):
        run_lab(lab, tmp_path, labels=("replay", "rehearsal"))  # a typo in CONTINUAL_LABELS: said before anything runs


def test_lab_model_reads_the_budgets_pooling():
    "The lab's encoder puts its head on the pooling its budget (and so its records) names."
    from dataclasses import replace
    from transformers.models.bert.modeling_bert import BertPooler
    from ft_kit.models import MeanPooler
    for pooling, kind in (("auto", MeanPooler), ("cls", BertPooler)):
        lab = Lab(LabConfig(replace(LabConfig().budget, n_train=8, n_eval=8, pooling=pooling), n_probe=4), device="cpu")
        assert isinstance(lab.model.base_model.pooler, kind), pooling


def test_lab_sentence_ranks_only_what_the_intervals_separate():
    rows = {"seq_full": (0.70, 0.02, 0.10), "seq_lora": (0.77, 0.01, 0.03), "replay": (0.78, 0.02, 0.01), "ewc": (0.72, 0.01, 0.06),
            "adapters": (0.80, 0.01, 0.0), "adapters_routed": (0.79, 0.01, 0.005), "joint": (0.82, 0.01, -0.01)}
    s = pd.DataFrame({k: {"method": LAB_METHODS[k], "status": "ok", "seeds": 3, "average_mean": a, "average_ci95": h,
                          "forgetting_mean": f, "forgetting_ci95": 0.01, "A after A_mean": 0.8, "A after A_ci95": 0.01,
                          "A after B_mean": 0.8 - f, "A after B_ci95": 0.01, "B after B_mean": 0.85, "B after B_ci95": 0.01}
                      for k, (a, h, f) in rows.items()}).T
    text = lab_sentence(s)
    assert "best average of the two final accuracies is rehearsal (78.0% ± 2.0); the seeds cannot tell it from sequential LoRA" in text
    assert "EWC (72" not in text  # 0.71..0.73 is apart from 0.76..0.80
    assert "The lowest forgetting is rehearsal's (+1.0 ± 1.0 points), within the intervals of sequential LoRA." in text
    assert "Over 3 seeds" in text and "forgetting +10.0 ± 1.0 points" in text and "edge" not in text
    s["chosen"], s["edge"] = np.nan, ""
    s.loc["ewc", ["chosen", "edge"]] = 3000.0, "lowest"
    assert "At the edge of a search: EWC's strength (3000) is the lowest value its search tried" in lab_sentence(s)


def test_tied_with_best_uses_the_intervals():
    s = pd.DataFrame({"status": ["ok", "ok", "ok", "failed"], "average_mean": [0.80, 0.78, 0.70, 0.99],
                      "average_ci95": [0.01, 0.015, 0.01, np.nan]}, index=["a", "b", "c", "d"])
    assert tied_with_best(s, "average") == ("a", ["b"])  # 0.79..0.81 meets 0.765..0.795; c is apart; d failed
    assert tied_with_best(s, "average", lowest=True) == ("c", [])
    s.loc["b", "average_ci95"] = 0.005  # 0.775..0.785 no longer meets 0.79..0.81
    assert tied_with_best(s, "average") == ("a", [])


def test_tweets_repaired_and_aligned():
    df = load_tweets()
    assert set(df["label"]) == {0, 1, 2}
    assert (df["sentiment"].map({"negative": 0, "positive": 1, "neutral": 2}) == df["label"]).all()
    assert df["text"].is_unique and (df["text"].str.len() > 0).all()
    assert not df["text"].str.contains(r"[\x80-\x9f]").any()  # no C1 control characters: the mojibake is gone
    assert df["text"].str.contains("&amp;").sum() <= 2  # unescaped once (a tweet that was escaped twice keeps one level)
    assert repair_text("caf\xc3\xa9") == "café" and repair_text("cars_\xd1_.no") == "cars .no"
    assert repair_text("R&amp;D &lt;3") == "R&D <3"
    assert (df["confidence"].isna() | (df["confidence"] >= 0.6)).all()
    assert len(load_tweets(None)) > len(df)
