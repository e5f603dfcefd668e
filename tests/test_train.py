"""The training loop on tiny models: determinism, resume, NaN, weight-decay groups, schedule, clipping,
early stopping, peft LoRA, TensorBoard, the results record. Each check compares with an independent reference."""
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from _tiny import items, tiny_bert
from ft_kit.data import BucketBatchSampler, collate_batch
from ft_kit.train import (TrainConfig, TrainingDiverged, evaluate_model, make_optimizer, make_scheduler,
                          param_groups, predict, train, train_step, warmup_linear)

torch.set_num_threads(1)  # the same arithmetic order in every test and run


def loaders(kind: str = "shuffle", n: int = 40, bs: int = 8) -> dict:
    "Train loader (torch shuffle with a generator, shuffle from the global RNG, or length buckets) + validation."
    tr = items(n, 1)
    if kind == "bucket":
        train_dl = DataLoader(tr, batch_sampler=BucketBatchSampler([len(x["input_ids"]) for x in tr], bs, True, 0, 2),
                              collate_fn=collate_batch)
    else:
        gen = torch.Generator() if kind == "shuffle" else None
        train_dl = DataLoader(tr, batch_size=bs, shuffle=True, generator=gen, collate_fn=collate_batch)
    return {"train": train_dl, "validation": DataLoader(items(16, 2), batch_size=8, collate_fn=collate_batch)}


def weights(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


CFG = dict(lr=1e-3, epochs=3, batch_size=8, eval_every=2)


def test_same_seed_same_metrics_bit_for_bit():
    runs = []
    for _ in range(2):
        m = tiny_bert()
        runs.append((train(m, loaders(), TrainConfig(**CFG), progress=False), weights(m)))
    (r1, w1), (r2, w2) = runs
    assert [x["loss"] for x in r1.history["train"]] == [x["loss"] for x in r2.history["train"]]
    assert r1.history["eval"] == r2.history["eval"] and r1.best == r2.best
    assert same(w1, w2)
    r3 = train(tiny_bert(), loaders(), TrainConfig(**{**CFG, "seed": 1}), progress=False)
    assert [x["loss"] for x in r3.history["train"]] != [x["loss"] for x in r1.history["train"]]  # the seed matters


@pytest.mark.parametrize("kind", ["shuffle", "global_rng", "bucket"])
def test_resume_equals_uninterrupted(tmp_path, kind):
    full = tiny_bert()
    ref = train(full, loaders(kind), TrainConfig(**CFG, output_dir=str(tmp_path / "a")), progress=False)

    def crash(event, history):  # interrupt in the middle of epoch 2, right after the checkpoint of step 6
        if event == "eval" and history["eval"][-1]["step"] == 6: raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_bert(), loaders(kind), TrainConfig(**CFG, output_dir=str(tmp_path / "b")), callback=crash, progress=False)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=False)["state"]["step"] == 6
    resumed = tiny_bert(seed=7)  # a fresh process would rebuild the model: its weights come from the checkpoint
    res = train(resumed, loaders(kind), TrainConfig(**CFG, output_dir=str(tmp_path / "b")), resume=True, progress=False)
    assert res.steps == ref.steps == 15
    assert res.history == ref.history
    assert same(weights(full), weights(resumed))


class NaNAfter(nn.Module):
    "A kit-style module (forward(input_ids, attention_mask) -> logits) whose logits turn NaN at call `bad`."
    def __init__(self, bad: int):
        super().__init__(); self.emb, self.head, self.calls, self.bad = nn.Embedding(100, 8), nn.Linear(8, 2), 0, bad

    def forward(self, input_ids, attention_mask):
        self.calls += 1
        h = (self.emb(input_ids) * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True)
        out = self.head(h)
        return out * float("nan") if self.calls == self.bad else out


def test_nan_loss_stops_with_message():
    with pytest.raises(TrainingDiverged) as e:
        train(NaNAfter(3), loaders(), TrainConfig(lr=1e-3, epochs=1, batch_size=8, warmup_steps=0), progress=False)
    msg = str(e.value)  # step 3 uses lr 1e-3 * (5 - 2) / 5 (no warm-up, linear decay over 5 steps)
    assert "step 3" in msg and "learning rate 0.0006" in msg and "lower learning rate" in msg


def test_kit_module_and_tuple_outputs_train():
    class TupleOut(NaNAfter):
        def forward(self, input_ids, attention_mask): return (super().forward(input_ids, attention_mask), None)
    for m in (NaNAfter(-1), TupleOut(-1)):
        res = train(m, loaders(), TrainConfig(lr=1e-2, epochs=1, batch_size=8), progress=False)
        assert res.steps == 5 and math.isfinite(res.best["loss"])


def test_bad_labels_fail_early():
    bad = [{"input_ids": [5, 6, 7], "labels": 2}] * 8
    data = {"train": DataLoader(bad, batch_size=8, collate_fn=collate_batch)}
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        train(tiny_bert(), data, TrainConfig(epochs=1), progress=False)


def test_weight_decay_groups_exclude_bias_and_layernorm():
    m = tiny_bert()
    groups = {g["weight_decay"]: set(g["param_names"]) for g in param_groups(m, 0.01)}
    names = [n for n, _ in m.named_parameters()]
    no_decay = {n for n in names if n.endswith(".bias") or re.search(r"LayerNorm\.weight$", n)}
    assert groups[0.0] == no_decay and groups[0.01] == set(names) - no_decay
    assert all(n.endswith("weight") and "LayerNorm" not in n for n in groups[0.01])
    assert "bert.embeddings.LayerNorm.weight" in groups[0.0] and "classifier.weight" in groups[0.01]
    opt = make_optimizer(m, 1e-3, 0.01)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.01]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)
    assert opt.defaults.get("fused") or opt.defaults.get("foreach")  # the fast implementations


def test_schedule_matches_closed_form_and_transformers():
    total, warmup, lr = 20, 5, 1e-3
    closed = [lr * (s / warmup if s < warmup else (total - s) / (total - warmup)) for s in range(total)]
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    ref = get_linear_schedule_with_warmup(ref_opt, warmup, total)
    hf = []
    for _ in range(total): hf.append(ref.get_last_lr()[0]); ref_opt.step(); ref.step()
    np.testing.assert_allclose([lr * warmup_linear(s, warmup, total) for s in range(total)], closed)
    np.testing.assert_allclose(hf, closed)
    # the run itself: the lr logged after step s is the one step s+1 uses (5 batches x 4 epochs = 20 steps)
    res = train(tiny_bert(), loaders(), TrainConfig(lr=lr, epochs=4, batch_size=8, warmup_steps=warmup), progress=False)
    np.testing.assert_allclose([r["lr"] for r in res.history["train"]], closed[1:] + [0.0])


class SpySGD(torch.optim.SGD):
    "SGD that records the global gradient norm it sees at each step."
    def step(self, closure=None):
        self.seen = torch.linalg.vector_norm(torch.stack([p.grad.norm() for g in self.param_groups for p in g["params"]])).item()
        return super().step(closure)


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])
def test_gradient_clipping(max_norm):
    m = tiny_bert(dropout=0.0)
    batch = next(iter(loaders()["validation"]))
    ref = tiny_bert(dropout=0.0)  # an independent backward pass for the raw norm
    F.cross_entropy(ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]).backward()
    raw = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in ref.parameters() if p.grad is not None))
    opt = SpySGD(m.parameters(), lr=0.1)
    loss, norm = train_step(m, batch, opt, make_scheduler(opt, 0, 10), max_norm, 1)
    assert norm == pytest.approx(raw, rel=1e-5)
    assert opt.seen == pytest.approx(min(raw, max_norm), rel=1e-4)


def test_early_stopping_triggers():
    # lr = 0: the validation loss never improves after the first evaluation
    res = train(tiny_bert(), loaders(), TrainConfig(lr=0.0, epochs=10, batch_size=8, eval_every=1, patience=2), progress=False)
    assert res.stopped_early and res.steps == 3 and len(res.history["eval"]) == 3 and res.best_step == 1
    res = train(tiny_bert(), loaders(), TrainConfig(lr=0.0, epochs=2, batch_size=8, patience=None), progress=False)
    assert not res.stopped_early and res.steps == 10


def test_best_checkpoint_is_restored(tmp_path):
    m = tiny_bert()
    res = train(m, loaders(), TrainConfig(lr=3e-2, epochs=4, batch_size=8, eval_every=1, output_dir=str(tmp_path)), progress=False)
    losses = [r["loss"] for r in res.history["eval"]]
    assert res.best_step == res.history["eval"][int(np.argmin(losses))]["step"]
    assert evaluate_model(m, loaders()["validation"])["loss"] == pytest.approx(min(losses), abs=1e-6)
    saved = torch.load(res.checkpoint)
    assert set(saved["weights"]) == {n for n, p in m.named_parameters() if p.requires_grad} and saved["step"] == res.best_step


def test_peft_lora_wrapped_model(tmp_path):
    from peft import LoraConfig, get_peft_model
    m = get_peft_model(tiny_bert(), LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"]))
    before = weights(m)
    res = train(m, loaders(), TrainConfig(lr=1e-2, epochs=2, batch_size=8, output_dir=str(tmp_path)), progress=False)
    after = weights(m)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k or "classifier" in k for k in changed)  # the frozen base never moves
    assert set(torch.load(res.checkpoint)["weights"]) == trainable
    assert math.isfinite(res.best["loss"])


def test_predict_and_evaluate_match_references():
    from sklearn.metrics import accuracy_score
    m = tiny_bert(); dl = loaders()["validation"]
    probs = predict(m, dl)
    m.eval()
    with torch.no_grad():
        ref = torch.cat([F.softmax(m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, -1) for b in dl])
        y = torch.cat([b["labels"] for b in dl])
    np.testing.assert_allclose(probs, ref.numpy(), rtol=1e-5, atol=1e-6)
    m_ = evaluate_model(m, dl)
    assert m_["accuracy"] == pytest.approx(accuracy_score(y.numpy(), probs.argmax(1)))
    assert m_["loss"] == pytest.approx(F.nll_loss(ref.log(), y).item(), rel=1e-5)


def test_tensorboard_logs_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    train(tiny_bert(), loaders(), TrainConfig(**CFG, output_dir=str(tmp_path), tensorboard=True), progress=False)
    acc = EventAccumulator(str(tmp_path / "tensorboard")); acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/lr", "validation/loss", "validation/accuracy"} <= set(tags)
    assert len(acc.Scalars("train/loss")) == 15


def test_dataframes_with_tokenizer_and_record(tmp_path, monkeypatch):
    "DataFrames in, the kit's bucketed loaders, and one registry JSON out."
    from ft_kit.models import load_encoder
    from ft_kit.results import split_hash
    _, tok = load_encoder()
    words = ["great", "awful", "fine", "dull", "a triumph", "a mess"]
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"text": [" ".join(rng.choice(words, 4)) for _ in range(48)], "label": rng.integers(0, 2, 48)})
    splits = {"train": df[:32].reset_index(drop=True), "validation": df[32:].reset_index(drop=True)}
    monkeypatch.setenv("FT_KIT_RESULTS_DIR", str(tmp_path))
    m = tiny_bert(vocab=tok.vocab_size)
    res = train(m, splits, TrainConfig(lr=1e-3, epochs=1, batch_size=8), tokenizer=tok, progress=False, record="tiny run")
    rec = json.loads((tmp_path / "tiny_run.json").read_text())
    assert rec["split"]["hash"] == split_hash(splits["validation"]) and rec["train_split"]["n"] == 32
    assert rec["config"]["lr"] == 1e-3 and rec["metrics"]["accuracy"] == res.best["accuracy"]
    assert rec["params"]["trainable"] == sum(p.numel() for p in m.parameters())
    assert rec["train_time_s"] > 0 and rec["checkpoint_mb"] > 0 and rec["steps"] == 4
    assert res.tokens == sum(len(tok(t)["input_ids"]) for t in splits["train"]["text"])


def test_bf16_follows_fp32_with_fp32_master_weights():
    "bf16 autocast: the same batches give losses within a few thousandths of fp32 (not identical: autocast ran),"
    " the weights and Adam's moments stay float32, and the run records the precision it used."
    runs = {}
    for p in ("fp32", "bf16"):
        m = tiny_bert(dropout=0.0)
        runs[p] = (train(m, loaders(), TrainConfig(**{**CFG, "precision": p}), progress=False), m)
    la, lb = ([x["loss"] for x in runs[p][0].history["train"]] for p in ("fp32", "bf16"))
    assert la != lb and max(abs(a - b) for a, b in zip(la, lb)) < 0.02
    m = runs["bf16"][1]
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert runs["bf16"][0].precision == "bf16" and runs["fp32"][0].precision == "fp32"
    ev = evaluate_model(m, loaders()["validation"], "bf16")
    assert abs(ev["loss"] - evaluate_model(m, loaders()["validation"], "fp32")["loss"]) < 0.02


def test_precision_auto_and_bad_value(monkeypatch):
    import ft_kit.train as T
    monkeypatch.setattr(T, "bf16_fast", lambda device=None: False)
    assert T.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(T, "bf16_fast", lambda device=None: True)
    assert T.resolve_precision("auto", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        train(tiny_bert(), loaders(), TrainConfig(**{**CFG, "precision": "fp16"}), progress=False)


def test_head_lr_is_the_heads_own_rate():
    "With lr=0 for the body and a positive head_lr, only the head moves: the head's group really has its own rate."
    m = tiny_bert(dropout=0.0); before = weights(m)
    train(m, loaders(), TrainConfig(**{**CFG, "lr": 0.0, "head_lr": 1e-2, "weight_decay": 0.0}), progress=False)
    after = weights(m)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"classifier.weight", "classifier.bias"}


def test_two_steps_equal_a_hand_written_adamw_loop():
    "Two steps of `train` equal AdamW written out by hand: moments, bias correction, decoupled decay only on weight matrices, the schedule."
    batches = DataLoader(items(16, 3), batch_size=8, collate_fn=collate_batch)  # not shuffled: both loops see the same order
    cfg = TrainConfig(lr=1e-2, epochs=1, batch_size=8, weight_decay=0.1, warmup_steps=0, max_grad_norm=None)
    model = tiny_bert(dropout=0.0)
    ref = tiny_bert(dropout=0.0).train()
    train(model, {"train": batches}, cfg, progress=False)
    b1, b2, eps, total = 0.9, 0.999, 1e-8, 2
    state = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in ref.named_parameters()}
    mods = dict(ref.named_modules())
    for t, batch in enumerate(batches, start=1):
        ref.zero_grad()
        F.cross_entropy(ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]).backward()
        lr = cfg.lr * (total - (t - 1)) / total  # no warm-up: linear decay from the peak, 1 then 1/2
        with torch.no_grad():
            for n, p in ref.named_parameters():
                m, v = state[n]; g = p.grad
                m.mul_(b1).add_((1 - b1) * g); v.mul_(b2).add_((1 - b2) * g * g)
                owner = mods[n.rsplit(".", 1)[0]]
                if not n.endswith("bias") and not isinstance(owner, nn.LayerNorm): p.mul_(1 - lr * cfg.weight_decay)
                p.sub_(lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps))
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-4, atol=1e-6, msg=n)


def test_train_seeds_itself_whatever_the_global_rng():
    "Runs are identical whatever the global RNG state before `train`; another cfg.seed changes dropout (fixed batch order)."
    batches = DataLoader(items(24, 4), batch_size=8, collate_fn=collate_batch)  # no shuffle: only dropout draws random numbers
    def run(global_seed: int, seed: int) -> list:
        model = tiny_bert(dropout=0.3)
        torch.manual_seed(global_seed); np.random.seed(global_seed)
        r = train(model, {"train": batches}, TrainConfig(lr=1e-3, epochs=1, batch_size=8, seed=seed), progress=False)
        return [x["loss"] for x in r.history["train"]]
    a = run(1, 0)
    assert run(12345, 0) == a
    assert run(1, 1) != a  # the run's own seed decides dropout


def test_train_refuses_the_accelerate_flag_with_directions():
    "`TrainConfig(accelerate=True)` belongs to ft_kit.distributed: train() says so before touching the model."
    with pytest.raises(ValueError, match="distributed_train"): train(None, {}, TrainConfig(accelerate=True))


def test_run_hooks_decide_metrics_and_who_writes(tmp_path, monkeypatch):
    "Run's hooks (AccelerateRun overrides them): `val_metrics` picks best step and early stop; `is_main` who writes."
    from ft_kit.train import Run
    class Scripted(Run):
        def val_metrics(self):  # a fixed sequence of validation losses: best at the 2nd evaluation, then worse
            return {"loss": [0.5, 0.4, 0.6, 0.7][len(self.s.history["eval"])], "accuracy": 0.5}
    class Silent(Scripted):
        is_main = False  # as on a process other than the main one
    cfg = dict(lr=1e-3, epochs=1, batch_size=8, eval_every=1, patience=2)
    out = {}
    for cls in (Scripted, Silent):
        d, reg = tmp_path / cls.__name__ / "ckpt", tmp_path / cls.__name__ / "results"
        d.mkdir(parents=True); monkeypatch.setenv("FT_KIT_RESULTS_DIR", str(reg))
        data = loaders()
        run = cls(tiny_bert(), data["train"], data["validation"], TrainConfig(**cfg, output_dir=str(d)))
        run.fit(progress=False)
        res = run.finish(data, "hooked")
        assert (res.steps, res.best_step, res.stopped_early, res.best) == (4, 2, True, {"loss": 0.4, "accuracy": 0.5})
        names = lambda folder: sorted(p.name for p in folder.iterdir()) if folder.exists() else []
        out[cls] = res, names(d), names(reg)
    (res, ckpt, recs), (silent, s_ckpt, s_recs) = out[Scripted], out[Silent]
    assert ckpt == ["best.pt", "last.pt"] and recs == ["hooked.json"] and res.result_file and res.checkpoint
    assert s_ckpt == [] and s_recs == [] and silent.result_file is None and silent.checkpoint is None
