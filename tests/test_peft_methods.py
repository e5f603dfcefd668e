"""ft_kit.peft_methods: each method trains exactly what it claims, AdaLoRA's rank update runs every step, the probe
matches scikit-learn, protocol records land in the registry with the required fields, the collapse flag."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

peft = pytest.importorskip("peft")
from sklearn.linear_model import LogisticRegression  # noqa: E402
import _tiny  # noqa: E402
from transformers import BertForSequenceClassification  # noqa: E402

from ft_kit import peft_methods as pm  # noqa: E402
from ft_kit.data import load_splits  # noqa: E402
from ft_kit.models import load_encoder  # noqa: E402
from ft_kit.results import get_result, load_results  # noqa: E402
from ft_kit.train import TrainConfig, train  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing"), pytest.mark.filterwarnings("ignore::UserWarning")]
torch.set_num_threads(2)
VOCAB = 30522  # MiniLM's tokenizer, so that real snippets tokenize into valid ids


def tiny_bert(seed: int = 0, layers: int = 2) -> BertForSequenceClassification:
    "A small BERT classifier over MiniLM's vocabulary with random weights, in eval mode."
    return _tiny.tiny_bert(seed, vocab=VOCAB, hidden=32, layers=layers, heads=4, intermediate=37).eval()


@pytest.fixture(scope="module")
def tok():
    return load_encoder(device="cpu")[1]


def trainable(model) -> set:
    return {n for n, p in model.named_parameters() if p.requires_grad}


NAMES = [n for n, _ in tiny_bert(layers=3).named_parameters()]
HEAD = {"classifier.weight", "classifier.bias"}


def test_head_only():
    assert trainable(pm.head_only(tiny_bert(layers=3))[0]) == HEAD


@pytest.mark.parametrize("k", [1, 2])
def test_last_k(k):
    want = {n for n in NAMES if any(f".layer.{i}." in n for i in range(3 - k, 3))} | HEAD
    assert trainable(pm.last_layers(tiny_bert(layers=3), k=k)[0]) == want
    assert not any(".layer.0." in n for n in want)


def test_bitfit_only_biases_and_head():
    got = trainable(pm.bitfit(tiny_bert(layers=3))[0])
    assert got == {n for n in NAMES if n.endswith(".bias")} | HEAD
    assert all(n.endswith("bias") or n in HEAD for n in got)


def test_full():
    assert trainable(pm.full_finetune(pm.head_only(tiny_bert())[0])[0]) == {n for n, _ in tiny_bert().named_parameters()}


@pytest.mark.parametrize("fn", [pm.lora_scratch, pm.peft_lora])
def test_lora_only_adapters_and_head(fn):
    model, info = fn(tiny_bert(), r=4, alpha=8)
    got = trainable(model)
    adapters = {n for n in got if ".lora_A." in n or ".lora_B." in n}
    assert got - adapters and all("classifier" in n for n in got - adapters)  # the rest is the head
    assert len(adapters) == 2 * 2 * 2  # 2 layers x (query, value) x (A, B)
    assert all(".query." in n or ".value." in n for n in adapters)
    assert sum(p.numel() for n, p in model.named_parameters() if n in adapters) == 2 * 2 * 4 * (32 + 32)


def test_ours_and_peft_train_the_same_count():
    a, b = pm.lora_scratch(tiny_bert())[0], pm.peft_lora(tiny_bert())[0]
    assert sum(p.numel() for p in a.parameters() if p.requires_grad) == b.get_nb_trainable_parameters()[0]


def test_probe_matches_sklearn():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(200, 4, generator=g)
    y = (X @ torch.randn(4, 3, generator=g) + 0.3 * torch.randn(200, 3, generator=g)).argmax(1)
    lin = pm.fit_logistic(X, y, 3, l2=1e-2)
    sk = LogisticRegression(C=1 / (1e-2 * len(X)), tol=1e-10, max_iter=5000).fit(X.numpy(), y.numpy())
    with torch.no_grad(): p = lin(X).softmax(-1).numpy()
    np.testing.assert_allclose(p, sk.predict_proba(X.numpy()), atol=5e-4)  # fp32 L-BFGS: ~1e-4 from sklearn 1.9


def test_probe_trains_only_its_linear_layer():
    probe, _ = pm.probe(tiny_bert())
    assert trainable(probe) == HEAD


def test_exported_module_does_not_import_sklearn():
    import ft_kit.peft_methods as mod
    src = open(mod.__file__).read()
    assert "sklearn" not in src


def test_adalora_update_every_step_with_gradients(tok):
    model, info = pm.peft_adalora(tiny_bert(), total_steps=6, init_r=4, target_r=2)
    calls, real = [], model.base_model.update_and_allocate
    def spy(step):
        calls.append((step, all(p.grad is not None for n, p in model.named_parameters() if ".lora_E." in n)))
        return real(step)
    model.base_model.update_and_allocate = spy
    df = pd.DataFrame({"text": ["good", "bad", "great film", "awful film"] * 6, "label": [1, 0, 1, 0] * 6})
    with info.hook(model) as state:
        res = train(model, {"train": df}, TrainConfig(epochs=1, batch_size=4, device="cpu"), tok, progress=False)
    assert res.steps == 6 and calls == [(i, True) for i in range(6)] and state["calls"] == 6
    # outside the block the hooks are gone
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1); opt.step()
    assert len(calls) == 6


def test_adalora_without_hook_never_updates(tok):
    model, _ = pm.peft_adalora(tiny_bert(), total_steps=2, init_r=4, target_r=2)
    called = []
    model.base_model.update_and_allocate = lambda s: called.append(s)
    df = pd.DataFrame({"text": ["good", "bad"] * 4, "label": [1, 0] * 4})
    train(model, {"train": df}, TrainConfig(epochs=1, batch_size=4, device="cpu"), tok, progress=False)
    assert called == []  # the plain loop forgets it: that is why the hook exists


def test_orth_penalty_zero_when_orthonormal():
    model, _ = pm.peft_adalora(tiny_bert(), total_steps=4, init_r=4, target_r=2)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_A." in n or ".lora_B." in n: p.copy_(torch.eye(*p.shape))
    assert pm.adalora_orth_penalty(model).item() == pytest.approx(0.0, abs=1e-6)


def test_prefix_tuning_runs():
    "transformers is pinned where peft's prefix tuning works on BERT: the prefix gets a gradient."
    m, _ = pm.peft_prefix(tiny_bert(), n_tokens=4)
    ids = torch.tensor([[101, 2204, 3185, 102]])
    m(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum().backward()
    g = [p.grad for n, p in m.named_parameters() if "prompt_encoder" in n]
    assert len(g) == 1 and g[0].abs().max() > 0


def test_collapse_flag():
    assert pm.predicted_share({"confusion_matrix": [[0, 10], [0, 30]]}) == 1.0
    assert pm.predicted_share({"confusion_matrix": [[9, 1], [2, 8]]}) == pytest.approx(0.55)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method"): pm.prepare("lora2", tiny_bert())
    with pytest.raises(ValueError, match="unknown method"): pm.run_protocol(["nope"], pm.protocol_budget(n_train=8, n_eval=8))


def test_protocol_records(tmp_path, tok, monkeypatch):
    "Search on the first seed, the other seeds at the chosen rate, one schema per record, the table from valid runs."
    monkeypatch.setenv("FT_KIT_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(pm, "failures", lambda metrics, change=None: [])  # every run valid: this test is about the mechanics
    b = pm.protocol_budget(n_train=16, n_eval=16, epochs=1, max_length=16, seeds=(0, 1), precision="fp32")
    make = lambda seed: (tiny_bert(seed), tok)
    rows = [("majority", "majority", {}), ("probe", "probe", {"grid": (1e-3, 1e-2), "widen": 0}),
            ("bitfit", "bitfit", {"grid": (1e-3, 3e-3), "widen": 0}), ("lora", "lora", {"grid": (1e-3,), "widen": 0}),
            ("peft_prompt", "peft_prompt", {"grid": (1e-2,), "widen": 0}), ("peft_prefix", "peft_prefix", {"grid": (1e-2,), "widen": 0})]
    searches = pm.run_protocol(rows, b, make, prefix="t")
    assert [s["label"] for s in searches] == [r[0] for r in rows]
    names = sorted(r["name"] for r in load_results("t-*") if not r["name"].endswith("-search"))
    bit = searches[2]["chosen"]
    assert bit in (1e-3, 3e-3) and searches[2]["grid"] == [1e-3, 3e-3] and len(searches[2]["tried"]) == 2
    # majority and the probe once (two probe penalties on seed 0), the others: every rate on seed 0, seed 1 at the chosen one
    assert names == sorted(["t-majority-s0", "t-probe-lr1e-03-s0", "t-probe-lr1e-02-s0", "t-bitfit-lr1e-03-s0", "t-bitfit-lr3e-03-s0",
                            f"t-bitfit-lr{bit:.0e}-s1", "t-lora-lr1e-03-s0", "t-lora-lr1e-03-s1", "t-peft_prompt-lr1e-02-s0",
                            "t-peft_prompt-lr1e-02-s1", "t-peft_prefix-lr1e-02-s0", "t-peft_prefix-lr1e-02-s1"])
    r = get_result(f"t-bitfit-lr{bit:.0e}-s1")
    for key in ("config", "protocol", "overrides", "seed", "lr", "value", "params", "metrics", "test", "train_time_s",
                "peak_memory_mb", "checkpoint_mb", "valid", "failed", "weight_change", "predicted_share", "blocks", "method", "versions"):
        assert key in r, key
    assert r["config"]["lr"] == r["lr"] == bit and r["config"]["seed"] == 1 and r["protocol"]["n_train"] == 16
    assert r["config"]["head_lr"] == pm.HEAD_LR and r["precision"] == "fp32"
    p = r["params"]
    assert p["trainable"] == p["trainable_backbone"] + p["trainable_head"] + p["trainable_adapter"] and p["trainable_adapter"] == 0
    assert get_result("t-lora-lr1e-03-s0")["params"]["trainable_adapter"] > 0
    assert get_result("t-lora-lr1e-03-s0")["weight_change"]["adapter"] > 0
    for k in ("accuracy", "macro_f1", "confusion_matrix"): assert k in r["test"]
    t = pm.protocol_table("t")
    assert list(t.index) == [r[0] for r in rows]
    assert (t["status"] == "ok").all()  # the majority baseline too: it has no rate to choose, and it is still a result
    assert t.loc["bitfit", "seeds"] == 2 and not np.isnan(t.loc["bitfit", "test_acc_std"])
    runs = [get_result(f"t-bitfit-lr{bit:.0e}-s{s}")["test"]["accuracy"] for s in (0, 1)]
    assert t.loc["bitfit", "test_acc"] == pytest.approx(np.mean(runs))  # the chosen rate's seeds only
    assert "±" in pm.show_table(t).loc["bitfit", "test acc %"]
    m = pm.trainable_map("t")
    assert m.loc["bitfit", "head"] == 1.0 and 0 < m.loc["bitfit", "layer 0"] < 1
    # a rerun reads the records back instead of training again...
    real_train = pm.train
    monkeypatch.setattr(pm, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    pm.run_protocol(rows[2:3], b, make, prefix="t")
    # ...but a record of another budget or other options is never taken for this run's result
    calls = []
    monkeypatch.setattr(pm, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    b24 = pm.protocol_budget(**{**b.__dict__, "n_train": 24})
    pm.run_protocol(rows[2:3], b24, make, prefix="t")
    assert calls and get_result(f"t-bitfit-lr1e-03-s0")["protocol"]["n_train"] == 24
    calls.clear()
    pm.run_protocol([("lora", "lora", {"grid": (1e-3,), "widen": 0, "r": 4})], b, make, prefix="t")
    assert calls and get_result("t-lora-lr1e-03-s0")["options"]["r"] == 4
    calls.clear()  # ...nor a record of other data under the same prefix
    other = load_splits(); other["validation"] = other["validation"].iloc[::-1].reset_index(drop=True)
    pm.run_protocol(rows[2:3], b24, make, prefix="t")
    assert not calls  # the same budget and data again: read back
    pm.run_protocol(rows[2:3], b24, make, prefix="t", splits=other)
    assert calls


def test_failed_runs_never_reach_the_table(tmp_path, tok):
    "A run the gates fail is recorded as failed with its reasons, and its row shows no accuracy, only why."
    b = pm.protocol_budget(n_train=16, n_eval=16, epochs=1, max_length=16, seeds=(0,), precision="fp32")
    rows = [("head", "head", {"grid": (1e-9,), "widen": 0})]  # a rate this small cannot move the head
    s = pm.run_protocol(rows, b, lambda seed: (tiny_bert(seed), tok), prefix="f", results_dir=tmp_path)[0]
    r = get_result("f-head-lr1e-09-s0", tmp_path)
    assert not r["valid"] and any("did not train" in f for f in r["failed"]) and r["weight_change"]["head"] < 1e-6
    assert s["chosen"] is None and s["reason"].startswith("every value tried failed")
    t = pm.protocol_table("f", tmp_path)
    assert t.loc["head", "status"] == "failed" and np.isnan(t.loc["head", "test_acc"])
    assert "did not train" in pm.show_table(t).loc["head", "note"]


def test_overrides_change_training_and_are_recorded(tmp_path, tok):
    "A row's `overrides` change the TrainConfig (here: twice the epochs), and the record says so in its own field."
    b = pm.protocol_budget(n_train=16, n_eval=16, epochs=1, max_length=16, seeds=(0,), precision="fp32")
    rows = [("lora_long", "lora", {"grid": (3e-3,), "widen": 0, "overrides": {"epochs": 2}})]
    pm.run_protocol(rows, b, lambda s: (tiny_bert(s), tok), prefix="sw", results_dir=tmp_path)
    r = get_result("sw-lora_long-lr3e-03-s0", results_dir=tmp_path)
    assert r["overrides"] == {"epochs": 2} and r["config"]["epochs"] == 2 and r["config"]["lr"] == 3e-3
    assert r["steps"] == 2 * pm.total_steps(16, b)  # twice the one-epoch protocol's steps
    assert r["history"]["eval"][0]["step"] == r["steps"]  # validated once, at the end of the longer run


def _scramble_ab(model, seed=0):
    "Non-orthonormal A and B (as after some training), so that the penalty is far from zero."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if pm._is_ab(n): p.copy_(torch.randn(p.shape, generator=g))


def test_orth_penalty_closed_form_and_peft():
    "The penalty equals a numpy closed form, mean over A and B of ||P P^T - I||_F, and what peft adds to its own loss."
    model, _ = pm.peft_adalora(tiny_bert(), total_steps=4, init_r=4, target_r=2)
    _scramble_ab(model)
    terms = []
    for n, p in model.named_parameters():
        if pm._is_ab(n):
            a = p.detach().double().numpy(); cov = a @ a.T if ".lora_A." in n else a.T @ a
            terms.append(np.linalg.norm(cov - np.eye(len(cov)), "fro"))
    ours = pm.adalora_orth_penalty(model)
    assert len(terms) > 2 and ours.item() == pytest.approx(np.mean(terms), rel=1e-5) and ours.item() > 1
    ids, y = torch.tensor([[101, 2204, 3185, 102], [101, 2919, 3185, 102]]), torch.tensor([1, 0])
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=y)  # peft adds w * penalty when labels are given
    w = model.peft_config[model.active_adapter].orth_reg_weight
    ce = torch.nn.functional.cross_entropy(out.logits, y)
    assert (out.loss - ce).item() == pytest.approx(w * ours.item(), rel=1e-4)


def test_orth_penalty_gradient_added_once_by_the_hook():
    "Inside adalora_hooks, the step sees d(CE)/dP + w * d(penalty)/dP: peft's own loss gradient, not twice the penalty's."
    model, _ = pm.peft_adalora(tiny_bert(), total_steps=50, init_r=4, target_r=2)
    _scramble_ab(model)
    ids, y = torch.tensor([[101, 2204, 3185, 102], [101, 2919, 3185, 102]]), torch.tensor([1, 0])
    params = [p for p in model.parameters() if p.requires_grad]
    ab = [(n, p) for n, p in model.named_parameters() if p.requires_grad and pm._is_ab(n)]
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=y).loss.backward()  # peft: CE + w * penalty
    want = {n: p.grad.clone() for n, p in ab}
    model.zero_grad()
    opt = torch.optim.SGD(params, lr=0.0)
    with pm.adalora_hooks(model):
        torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits, y).backward()
        opt.step()
    for n, p in ab: torch.testing.assert_close(p.grad, want[n], rtol=1e-4, atol=1e-6)


def test_ia3_prompt_prefix_train_exactly_their_vectors():
    "Exact trainable sets and closed-form counts from the config: an empty or a wrong set fails (not an all() over nothing)."
    cfg = tiny_bert().config; H, I, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    head = {"weight": (2, H), "bias": (2,)}
    def shapes(m): return {n: tuple(p.shape) for n, p in m.named_parameters() if p.requires_grad}
    ia3 = {f"base_model.model.bert.encoder.layer.{i}.{mod}.ia3_l.default": s for i in range(L) for mod, s in
           (("attention.self.key", (H, 1)), ("attention.self.value", (H, 1)),  # keys and values rescaled per output unit
            ("attention.output.dense", (1, H)), ("output.dense", (1, I)))}  # peft's feed-forward rule: per input unit
    ia3.update({f"base_model.model.classifier.modules_to_save.default.{k}": s for k, s in head.items()})
    assert shapes(pm.peft_ia3(tiny_bert())[0]) == ia3
    assert sum(np.prod(s) for s in ia3.values()) == L * (3 * H + I) + 2 * H + 2
    cls = {f"base_model.classifier.modules_to_save.default.{k}": s for k, s in head.items()}
    assert shapes(pm.peft_prompt(tiny_bert(), n_tokens=5)[0]) == {**cls, "prompt_encoder.default.embedding.weight": (5, H)}
    # prefix tuning: a key and a value vector per virtual token, per layer
    assert shapes(pm.peft_prefix(tiny_bert(), n_tokens=4)[0]) == {**cls, "prompt_encoder.default.embedding.weight": (4, 2 * L * H)}
