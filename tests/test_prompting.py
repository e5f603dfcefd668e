"""ft_kit.prompting in a fresh interpreter: prefix cache, padding, multi-token words, calibration, bad input, MLM cloze."""
import warnings

import numpy as np
import pytest
import torch

from ft_kit.models import encoder_dir, load_causal_lm
from ft_kit.prompting import (PromptSetup, build_prefix, class_logprobs, contextual_calibration, fill,
                              mlm_class_logprobs, prior_correction, score_texts, verbalizer_ids)

TEXTS = ["A warm, funny and clever film.", "Dull.", "The plot makes no sense at all, and the actors look bored.",
         "An unexpected delight from start to finish, with a great cast"]
DEMOS_T = ["Loved every minute.", "A total waste of time.", "Gorgeous and moving.", "Tedious and long."]
DEMOS_Y = [1, 0, 1, 0]


@pytest.fixture(scope="module")
def lm():
    torch.set_num_threads(1)
    return load_causal_lm()


def _manual(model, tok, prefix, prompt, word):
    "Sum of log p over the word's tokens from one unpadded forward pass over prefix + prompt + word."
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"] if s else []
    p, w = enc(prefix) + enc(prompt), enc(word)
    with torch.no_grad(): lp = model(input_ids=torch.tensor([p + w])).logits[0].log_softmax(-1)
    return sum(lp[len(p) - 1 + j, t].item() for j, t in enumerate(w))


def test_prefix_cache_equals_naive(lm):
    model, tok = lm
    import pandas as pd
    demos = pd.DataFrame({"text": DEMOS_T, "label": DEMOS_Y})
    for words in [(" negative", " positive"), (" thumbs down", " thumbs up")]:
        s = PromptSetup(words=words)
        cached = score_texts(model, tok, s, TEXTS, demos, batch_size=3)
        naive = score_texts(model, tok, s, TEXTS, demos, use_cache=False, batch_size=3)
        assert (cached - naive).abs().max() < 1e-4
        right = score_texts(model, tok, s, TEXTS, demos, padding_side="right")
        assert (cached - right).abs().max() < 1e-4


def test_multi_token_words_sum_logprobs(lm):
    model, tok = lm
    words = (" thumbs down", " fantastically good")
    assert all(len(i) > 1 for i in verbalizer_ids(tok, words))
    prompts = [fill("Review: {text}\nSentiment:", t) for t in TEXTS[:2]]
    prefix = build_prefix("Review: {text}\nSentiment:", DEMOS_T[:2], DEMOS_Y[:2], words)
    got = class_logprobs(model, tok, prompts, words, prefix=prefix)
    ref = torch.tensor([[_manual(model, tok, prefix, p, w) for w in words] for p in prompts], dtype=torch.float64)
    assert (got - ref).abs().max() < 1e-4


def test_bf16_weights_score_like_fp32(lm):
    "The scorer runs a model loaded in bf16 (no autocast): its scores are float64 and near the fp32 model's."
    model, tok = lm
    half, _ = load_causal_lm(dtype=torch.bfloat16)  # the packaged model, through from_pretrained's own dtype argument
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    prompts = [fill("Review: {text}\nSentiment:", t) for t in TEXTS]
    prefix = build_prefix("Review: {text}\nSentiment:", DEMOS_T, DEMOS_Y, (" negative", " positive"))
    got = class_logprobs(half, tok, prompts, (" negative", " positive"), prefix=prefix)
    ref = class_logprobs(model, tok, prompts, (" negative", " positive"), prefix=prefix)
    assert got.dtype == torch.float64 and 0 < (got - ref).abs().max() < 0.5  # really bf16, and close


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_one_at_a_time(lm, side):
    model, tok = lm
    prompts = [fill("Review: {text}\nSentiment:", t) for t in TEXTS]
    batched = class_logprobs(model, tok, prompts, (" negative", " positive"), padding_side=side)
    one = torch.cat([class_logprobs(model, tok, [p], (" negative", " positive")) for p in prompts])
    assert (batched - one).abs().max() < 1e-4


def test_calibration_closed_form():
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.55, 0.45]])
    cf = np.array([[0.6, 0.4], [0.7, 0.3]])
    pcf = cf.mean(0)
    q = p / pcf; q /= q.sum(1, keepdims=True)
    got = contextual_calibration(torch.tensor(np.log(p)), torch.tensor(np.log(cf))).exp().numpy()
    np.testing.assert_allclose(got, q, atol=1e-9)
    prior = np.array([0.3, 0.7])
    r = p * prior / p.mean(0); r /= r.sum(1, keepdims=True)
    np.testing.assert_allclose(prior_correction(torch.tensor(np.log(p)), prior).exp().numpy(), r, atol=1e-9)


def test_bad_inputs(lm):
    model, tok = lm
    with pytest.raises(ValueError, match="has no \\{text\\} slot"): PromptSetup(template="Review:\nSentiment:")
    with pytest.raises(ValueError, match="verbalizer is empty"): verbalizer_ids(tok, ())
    with pytest.raises(ValueError, match="identical after tokenisation"): verbalizer_ids(tok, [" good", " good"])
    with pytest.raises(ValueError, match="reads at most 10"):
        class_logprobs(model, tok, [TEXTS[2]], (" no", " yes"), max_length=10)
    import pandas as pd
    demos = pd.DataFrame({"text": DEMOS_T, "label": DEMOS_Y})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = score_texts(model, tok, PromptSetup(), TEXTS[:1], demos, max_length=50)
    msgs = [str(w.message) for w in caught if "demonstrations" in str(w.message)]
    assert msgs and "dropped" in msgs[0] and "of 4 demonstrations" in msgs[0], msgs
    assert s.shape == (1, 2)


def test_mlm_cloze_tiny_bert():
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM
    tok = AutoTokenizer.from_pretrained(str(encoder_dir()))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=128)).eval()
    words = ("bad", "wonderfully")
    got = mlm_class_logprobs(model, tok, TEXTS[:3], "{text} It was {mask}.", words, batch_size=2)
    ref = torch.zeros_like(got)
    for i, t in enumerate(TEXTS[:3]):
        for c, w in enumerate(words):
            ids = tok.encode(w, add_special_tokens=False)
            x = tok(f"{t} It was {' '.join([tok.mask_token] * len(ids))}.", return_tensors="pt")
            with torch.no_grad(): lp = model(**x).logits[0].log_softmax(-1)
            pos = (x["input_ids"][0] == tok.mask_token_id).nonzero().flatten()
            ref[i, c] = sum(lp[p, k].item() for p, k in zip(pos, ids))
    assert len(tok.tokenize("wonderfully")) > 1
    assert (got - ref).abs().max() < 1e-4
    with pytest.raises(ValueError, match="has no \\{mask\\} slot"): mlm_class_logprobs(model, tok, TEXTS[:1], "{text} Good.")
    with pytest.raises(ValueError, match="identical after tokenisation"): mlm_class_logprobs(model, tok, TEXTS[:1], words=("Good", "good"))


def _tiny_llama(vocab: int, pad_id: int, seed: int = 0):
    "A random 2-layer Llama of hidden size 16 over the SmolLM2 vocabulary."
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                                        pad_token_id=pad_id)).eval()


ANSWER_PROMPTS = ["Review: a fine film\nSentiment:", "Review: dull and far too long\nSentiment:", "Review: ok\nSentiment:"]


def test_answer_loss_equals_trl_completion_only_loss(lm, tmp_path):
    "answer_batch + answer_loss give trl SFTTrainer's completion-only loss on a prompt-completion dataset, number for number."
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from ft_kit.prompting import answer_batch, answer_loss
    _, tok = lm
    tiny = _tiny_llama(len(tok), tok.pad_token_id)
    answers = [" positive" + tok.eos_token, " negative" + tok.eos_token, " positive" + tok.eos_token]  # trl ends each completion with EOS
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=3, completion_only_loss=True, report_to=[],
                     use_cpu=True, bf16=False, fp16=False)
    trainer = SFTTrainer(model=tiny, args=args, processing_class=tok,
                         train_dataset=Dataset.from_dict({"prompt": ANSWER_PROMPTS, "completion": answers}))
    want = trainer.compute_loss(tiny, next(iter(trainer.get_train_dataloader())))
    ours = answer_batch(tok, ANSWER_PROMPTS, answers)
    with torch.no_grad():
        got = answer_loss(tiny(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"]).logits, ours["labels"])
    assert abs(got.item() - want.item()) < 1e-5, (got.item(), want.item())


def test_answer_loss_ignores_the_prompt(lm):
    "Prompt tokens are no targets: the loss has no gradient at prompt positions and equals the answer tokens' CE by hand."
    from ft_kit.prompting import answer_batch, answer_loss
    _, tok = lm
    tiny = _tiny_llama(len(tok), tok.pad_token_id)
    b = answer_batch(tok, ANSWER_PROMPTS, [" positive", " negative", " positive"])
    logits = tiny(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.detach().requires_grad_(True)
    loss = answer_loss(logits, b["labels"])
    loss.backward()
    lp, terms = logits.detach().log_softmax(-1), []
    for i, p in enumerate(ANSWER_PROMPTS):
        n, ids = len(tok(p)["input_ids"]), b["input_ids"][i].tolist()
        w = tok(p + [" positive", " negative", " positive"][i])["input_ids"][n:]
        terms += [-lp[i, n - 1 + j, t].item() for j, t in enumerate(w)]
        assert ids[n:n + len(w)] == w
        assert logits.grad[i, :n - 1].abs().max() == 0  # logits that predict prompt tokens get no gradient
        assert logits.grad[i, n + len(w) - 1:].abs().max() == 0  # nor those after the answer (padding)
    assert abs(loss.item() - sum(terms) / len(terms)) < 1e-5


def test_answer_tune_point_searches_gates_and_resumes(lm, tmp_path, monkeypatch):
    "The LM fine-tuning row goes through the experiment layer: a record per run, a search record, gates, resumable."
    import pandas as pd
    from ft_kit import prompting as pr
    from ft_kit.experiment import aggregate
    from ft_kit.results import load_results
    _, tok = lm
    rows = pd.DataFrame({"text": TEXTS + DEMOS_T, "label": [1, 0, 0, 1] + DEMOS_Y})
    data = {"train": rows, "validation": rows.iloc[:6].reset_index(drop=True), "test": rows.iloc[2:].reset_index(drop=True)}
    make = lambda: (pr.lora_lm(_tiny_llama(len(tok), tok.pad_token_id)), tok)
    cfg = pr.AnswerTuneConfig(steps=2, batch_size=4)
    rec = pr.answer_tune_point("tiny", make, pr.PromptSetup(), data, grid=(1e-4, 1e-3), seeds=(0, 1), cfg=cfg, prefix="pt",
                               results_dir=tmp_path)
    runs = [r for r in load_results("pt-tiny-*", tmp_path) if not r["name"].endswith("-search")]
    assert len(runs) >= 2 and all(r["value"] in [t[0] for t in rec["tried"]] for r in runs)
    assert all(r["valid"] == (not r["failed"]) and r["params"]["trainable"] > 0 for r in runs)
    assert all(len(r["losses"]) == 2 and "test" in r and 0 < r["latency_s"] < 60 for r in runs)
    row = aggregate("pt", tmp_path).loc["tiny"]
    if rec["chosen"] is None: assert row["status"] == "failed" and rec["reason"].startswith("every value tried failed")
    monkeypatch.setattr(pr, "train_answers", lambda *a, **k: pytest.fail("a finished run was trained again"))
    again = pr.answer_tune_point("tiny", make, pr.PromptSetup(), data, grid=(1e-4, 1e-3), seeds=(0, 1), cfg=cfg, prefix="pt",
                                 results_dir=tmp_path)
    assert again["chosen"] == rec["chosen"] and again["tried"] == rec["tried"]
    with pytest.raises(ValueError, match=r"another setting \(schedule: 'constant' there, 'linear' here"):
        pr.answer_tune_point("tiny", make, pr.PromptSetup(), data, grid=(1e-4, 1e-3), seeds=(0, 1), prefix="pt",
                             cfg=pr.AnswerTuneConfig(steps=2, batch_size=4, schedule="linear"), results_dir=tmp_path)


def test_train_answers_linear_schedule_warms_up_then_decays(lm, monkeypatch):
    "The 'linear' schedule: step i runs at lr * i / w during the warm-up, then lr * (T - i) / (T - w); 'constant' at lr."
    import pandas as pd
    from ft_kit import prompting as pr
    _, tok = lm
    rows = pd.DataFrame({"text": TEXTS + DEMOS_T, "label": [1, 0, 0, 1] + DEMOS_Y})
    seen = []
    class Recording(torch.optim.AdamW):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"]); return super().step(closure)
    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    lr, T = 1e-3, 10
    for schedule in ("linear", "constant"):
        seen.clear()
        pr.train_answers(pr.lora_lm(_tiny_llama(len(tok), tok.pad_token_id)), tok, pr.PromptSetup(), rows,
                         pr.AnswerTuneConfig(steps=T, batch_size=2, lr=lr, schedule=schedule, warmup_ratio=0.2))
        want = [lr * (i / 2 if i < 2 else (T - i) / (T - 2)) for i in range(T)] if schedule == "linear" else [lr] * T
        np.testing.assert_allclose(seen, want, rtol=1e-12)
    with pytest.raises(ValueError, match="'constant' or 'linear'"):
        pr.train_answers(None, tok, pr.PromptSetup(), rows, pr.AnswerTuneConfig(schedule="cosine"))


def _icl_record(k, how, seed, acc, cal, prior, pos, labels):
    "A made-up `prompting_icl_*` record with the fields the full evaluation writes."
    return {"config": {"k": k, "strategy": how, "seed": seed}, "last_label": labels[-1], "demo_labels": labels,
            "metrics": {"accuracy": acc, "calibrated_accuracy": cal, "prior_corrected_accuracy": prior,
                        "pred_share": [1 - pos, pos]}}


def test_icl_table_and_draw_spread_by_hand():
    "One row per random/balanced draw ('similar' has none); mean, sample std, min, max and range per calibration."
    from ft_kit.prompting import draw_spread, icl_table
    accs = [0.6, 0.7, 0.95]
    recs = [_icl_record(8, "random", s, a, 0.5 + s / 10, 0.8, 0.4, [0, 1]) for s, a in enumerate(accs)]
    recs += [_icl_record(1, "balanced", 0, 0.9, 0.9, 0.9, 0.7, [1]),
             {"config": {"k": 2, "strategy": "similar"}, "metrics": {}}]
    t = icl_table(recs)
    assert len(t) == 4 and t.loc[t.k == 1, "first_label"].item() == 1 and t.loc[t.k == 8, "last_label"].eq(1).all()
    s = draw_spread(t)
    raw = s.loc[("raw", "random", 8)]
    assert raw["draws"] == 3 and np.isclose(raw["mean"], np.mean(accs)) and np.isclose(raw["std"], np.std(accs, ddof=1))
    assert np.isclose(raw["range"], 0.35) and np.isclose(s.loc[("contextual", "random", 8), "range"], 0.2)
    assert s.loc[("batch (prior)", "random", 8), "range"] == 0 and s.loc[("raw", "balanced", 1), "draws"] == 1


def test_train_answers_in_bf16_keeps_fp32_weights_and_loss(lm):
    "bf16 autocast changes the forward pass only: the same first loss to bf16 precision, fp32 adapter, fp32 losses."
    import pandas as pd
    from ft_kit import prompting as pr
    _, tok = lm
    rows = pd.DataFrame({"text": TEXTS + DEMOS_T, "label": [1, 0, 0, 1] + DEMOS_Y})
    losses = {}
    for precision in ("fp32", "bf16"):
        model = pr.lora_lm(_tiny_llama(len(tok), tok.pad_token_id))
        losses[precision] = pr.train_answers(model, tok, pr.PromptSetup(), rows,
                                             pr.AnswerTuneConfig(steps=2, batch_size=4, lr=1e-3, precision=precision))
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert losses["fp32"] != losses["bf16"]  # autocast really ran
    np.testing.assert_allclose(losses["bf16"], losses["fp32"], rtol=2e-2)


@pytest.mark.parametrize("side", ["left", "right"])
def test_lm_classifier_reads_the_last_real_token(lm, side):
    "SmolLM2's classifier: its body is the LM's, and its logits are the head applied to each row's last real token."
    import copy
    from ft_kit.data import make_collate
    from ft_kit.experiment import fresh_head
    from ft_kit.prompting import lm_classifier
    _, tok = lm
    tok = copy.copy(tok); tok.padding_side = side
    tiny = _tiny_llama(len(tok), None)  # no pad id in the LM's config: the classifier must take the tokenizer's
    clf = fresh_head(lm_classifier(tiny, tok), seed=3)
    assert all(torch.equal(v, tiny.base_model.state_dict()[k]) for k, v in clf.base_model.state_dict().items())
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS[:3]]
    batch = make_collate(tok)([{"input_ids": r, "labels": 0} for r in rows])
    assert len({len(r) for r in rows}) > 1 and batch["attention_mask"].min() == 0  # the batch really is padded
    with torch.no_grad():
        logits = clf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        by_hand = torch.stack([tiny.model(input_ids=torch.tensor([r])).last_hidden_state[0, -1] for r in rows])
    torch.testing.assert_close(logits, by_hand @ clf.score.weight.T, atol=1e-5, rtol=1e-4)
    again = fresh_head(lm_classifier(tiny, tok), seed=3).score.weight
    assert torch.equal(again, clf.score.weight) and not torch.equal(again, fresh_head(clf, seed=4).score.weight)


def test_lm_classifier_trains_through_the_protocol(lm, tmp_path):
    "The SmolLM2 + head row goes through `run_protocol`: LoRA on q/v and the head train, the rest stays, records are written."
    import pandas as pd
    from ft_kit.experiment import Budget, fresh_head
    from ft_kit.peft_methods import run_protocol
    from ft_kit.prompting import lm_classifier
    from ft_kit.results import load_results
    _, tok = lm
    tiny = _tiny_llama(len(tok), tok.pad_token_id)
    rows = pd.DataFrame({"text": TEXTS + DEMOS_T, "label": [1, 0, 0, 1] + DEMOS_Y})
    splits = {"train": rows, "validation": rows, "test": rows}
    budget = Budget(n_train=None, epochs=2, batch_size=4, seeds=(0,), precision="fp32")
    make = lambda seed: (fresh_head(lm_classifier(tiny, tok), seed), tok)
    rec = run_protocol([("tiny_head", "lora", {"target_modules": ("q_proj", "v_proj"), "grid": (1e-3,), "widen": 0})],
                       budget, make, prefix="lb", results_dir=tmp_path, splits=splits)[0]
    (run,) = [r for r in load_results("lb-tiny_head-*", tmp_path) if not r["name"].endswith("-search")]
    assert rec["tried"][0][0] == 1e-3 and run["steps"] == 4 and "test" in run
    assert set(run["weight_change"]) == {"adapter", "head"} and min(run["weight_change"].values()) > 1e-6  # nothing else trains
    assert run["params"]["trainable"] == sum(2 * 16 * 8 * 2 for _ in range(2)) + 2 * 16  # r=8 A and B on q, v; the head


def test_label_size_and_schedule():
    "Bench labels name their labelled-set size and schedule; a label the bench scripts never write raises."
    from ft_kit.prompting import answer_schedule, label_size, trained_family
    assert label_size("lora_n512", 2400) == 512 and label_size("smollm2-lora-t100-decay-n32", 2400) == 32
    assert label_size("smollm2-lora-nall", 2400) == 2400
    with pytest.raises(ValueError, match="n<size>"): label_size("lora_512", 2400)
    assert answer_schedule("smollm2-lora-t100-decay-n32") == "warm-up + linear decay"
    assert answer_schedule("smollm2-lora-nall") == answer_schedule("smollm2-lora-t100-n128") == "constant rate"
    with pytest.raises(ValueError, match="schedule tag"): answer_schedule("smollm2-lora-cosine-n32")
    assert trained_family("lora_n128") == "MiniLM + LoRA" and trained_family("smollm2_head_n512").startswith("SmolLM2")
    assert trained_family("minilm_n8") == "SetFit (MiniLM)"
    with pytest.raises(ValueError, match="starts with none"): trained_family("bitfit_n32")


def test_labels_seen_counts_draws(tmp_path, monkeypatch):
    "An answer-tuned row saw steps x batch labels, capped by its labelled set; read from its records."
    from ft_kit.prompting import labels_seen
    from ft_kit.results import save_result
    monkeypatch.setenv("FT_KIT_RESULTS_DIR", str(tmp_path))
    for label in ("smollm2-lora-t100-n32", "smollm2-lora-t100-nall"):
        save_result(f"prompttune-{label}-lr3e-04-s0", {"steps": 100, "batch_size": 8}, {"accuracy": 0.8})
    assert labels_seen("smollm2-lora-t100-n32", 2400) == 32  # 800 draws from 32 labels: 32 distinct
    assert labels_seen("smollm2-lora-t100-nall", 2400) == 800  # 800 draws from 2400 labels: at most 800
    with pytest.raises(ValueError, match="no records"): labels_seen("smollm2-lora-t7-n64", 2400)


def test_cost_row():
    "Cost rows: medians over the records, no training time for a prompt, fp32 adapter size, NaN when unmeasured."
    from ft_kit.prompting import cost_row
    recs = [{"train_time_s": t, "peak_memory_mb": 900.0, "latency_s": 0.002} for t in (10.0, 30.0, 20.0)]
    row = cost_row("LoRA", 128, 0.8, recs, trained=2**20)
    assert row["training s"] == 20.0 and row["adapter MB"] == 4.0 and row["latency ms/snippet"] == pytest.approx(2.0)
    prompt = cost_row("prompt", 0, 0.79, [{"train_time_s": 5.0, "peak_memory_mb": 700.0}])
    assert prompt["training s"] == 0.0 and prompt["adapter MB"] == 0.0 and np.isnan(prompt["latency ms/snippet"])
