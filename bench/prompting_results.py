"""The full prompting evaluation of lesson 08 (`make results`): >= 500 balanced test snippets, results in the registry.

Run: `python -m bench.prompting_results` (add `--n 40 --quick --results-dir /tmp/x` for a quick check). As in
bench/runs.py, RUNS_N=40 shrinks the run (quick grid) and writes into data/results/_test unless --results-dir is given.
Resumable: a record is reused when its evaluation split, its prompt and its demonstrations are the ones this run
would use; anything else is scored again. PROMPT_THREADS sets torch's threads (default 1 on 2 cores, where a second
job may share them).
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

# Records written before the odd-n fix of `sample_balanced` (6f47948) lack their demonstrations' pool positions;
# for an even k the draw did not change, so they are reused; an odd k is scored again.
_DRAW_UNCHANGED = lambda k: k % 2 == 0


def _reusable(old: dict | None, split: dict, config: dict, demos: list | None) -> bool:
    "Whether a saved record was made on this split, with this prompt and these demonstrations."
    if not old or (old.get("split") or {}).get("hash") != split["hash"]: return False
    if any(old.get("config", {}).get(k) != (list(v) if isinstance(v, tuple) else v) for k, v in config.items()): return False
    if demos is None or old.get("demos") == demos: return True
    return "demos" not in old and _DRAW_UNCHANGED(len(demos))


def run_full(n: int = 500,  # balanced test snippets
             ks: tuple = (0, 1, 2, 4, 8, 16),  # numbers of demonstrations
             seeds: tuple = (0, 1, 2, 3, 4),  # demonstration draws (choice and order) per (k, strategy)
             similar_ks: tuple = (2, 8),  # k values also run with nearest-neighbour demonstrations (slow: no shared prefix)
             n_pool: int = 200,  # training snippets demonstrations are drawn from
             results_dir: str | None = None,  # default: the registry's folder (data/results)
            ) -> list:  # names of the records scored in this run (reused ones are not listed)
    "Zero-shot setups, few-shot grid (random/balanced/similar) with two calibrations, and the linear probe; saves `prompting_*`."
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    import torch
    torch.set_num_threads(int(os.environ.get("PROMPT_THREADS", 1 if (os.cpu_count() or 1) <= 2 else os.cpu_count())))
    from sklearn.linear_model import LogisticRegression
    from ft_kit.data import load_splits, sample_balanced
    from ft_kit.models import load_causal_lm, load_encoder
    from ft_kit.prompting import (CONTENT_FREE, PromptSetup, choose_demos, class_probs, contextual_calibration,
                                  embed_texts, evaluate_scores, nearest_demos, prior_correction, score_texts)
    from ft_kit.results import describe_split, find_result, save_result
    model, tok = load_causal_lm()
    splits = load_splits()
    ev, pool = sample_balanced(splits["test"], n, seed=0), sample_balanced(splits["train"], n_pool, seed=0)
    pool = pool.assign(pos=range(len(pool)))  # a demonstration's position in the pool, saved with the record
    y, texts, split = ev["label"].to_numpy(), list(ev["text"]), describe_split("test", ev)
    scored = []
    def todo(name, config, demos=None):
        if _reusable(find_result(name, results_dir), split, config, demos): return False
        print(f"  scoring {name}", flush=True); return True
    def save(name, config, s, t, cf=None, **extra):
        m = evaluate_scores(y, s)
        m["prior_corrected_accuracy"] = evaluate_scores(y, prior_correction(s))["accuracy"]
        if cf is not None:
            cal = evaluate_scores(y, contextual_calibration(s, cf))
            m.update(calibrated_accuracy=cal["accuracy"], calibrated_pred_share=cal["pred_share"],
                     cf_pos_share=float(class_probs(cf)[:, 1].mean()))  # the bias contextual calibration removes
        m["mean_pos_prob"] = float(class_probs(s)[:, 1].mean())  # the bias batch calibration removes (on these inputs)
        save_result(name, config, m, split, results_dir, True, latency_s=None if t is None else t / n, **extra)
        scored.append(name)
    zero = {"raw": PromptSetup(), "raw_bad_good": PromptSetup(words=(" bad", " good")),
            "raw_thumbs": PromptSetup(words=(" thumbs down", " thumbs up")),
            "chat": PromptSetup(template="Review: {text}\nSentiment (positive or negative):", words=("negative", "positive"),
                                instruction="Classify the sentiment of the movie review.", chat=True)}
    for name, setup in zero.items():
        if not todo(f"prompting_zero_{name}", {**vars(setup), "n_train": 0}): continue
        t = time.time(); s = score_texts(model, tok, setup, texts)
        save(f"prompting_zero_{name}", {**vars(setup), "n_train": 0}, s, time.time() - t, score_texts(model, tok, setup, list(CONTENT_FREE)))
    setup = PromptSetup()
    for seed in seeds:  # seed-major: an interrupted run still has every k for its first draws
        for k in [k for k in ks if k > 0]:
            for how in ("random", "balanced"):
                demos = choose_demos(pool, k, how, seed)
                name, config = f"prompting_icl_k{k}_{how}_s{seed}", {**vars(setup), "k": k, "strategy": how, "seed": seed, "n_train": k}
                if not todo(name, config, demos["pos"].tolist()): continue
                t = time.time(); s = score_texts(model, tok, setup, texts, demos)
                save(name, config, s, time.time() - t, score_texts(model, tok, setup, list(CONTENT_FREE), demos),
                     last_label=int(demos["label"].iloc[-1]), demos=demos["pos"].tolist(), demo_labels=demos["label"].tolist())
    encoder, etok = load_encoder()
    pool_emb, ev_emb = embed_texts(encoder, etok, list(pool["text"])), embed_texts(encoder, etok, texts)
    for k in similar_ks:
        config = {**vars(setup), "k": k, "strategy": "similar", "n_train": k}
        if not todo(f"prompting_icl_k{k}_similar", config): continue
        near = nearest_demos(ev_emb, pool_emb, k)
        t = time.time(); s = torch.cat([score_texts(model, tok, setup, [x], pool.iloc[i.tolist()]) for x, i in zip(texts, near)])
        save(f"prompting_icl_k{k}_similar", config, s, time.time() - t)
    for m in sorted({m for m in (4, 8, 16, 32, 64, 128, n_pool) if m <= n_pool}):
        config = {"model": "all-MiniLM-L6-v2 mean-pooled", "C": 10, "n_train": m}
        if not todo(f"prompting_probe_n{m}", config): continue
        idx = sample_balanced(pool, m, 0)["pos"].to_numpy().copy()
        t = time.time(); clf = LogisticRegression(max_iter=1000, C=10).fit(pool_emb[idx].numpy(), pool["label"].to_numpy()[idx])
        fit_s = time.time() - t
        s = torch.tensor(clf.predict_log_proba(ev_emb.numpy()))
        save(f"prompting_probe_n{m}", config, s, None, train_time_s=fit_s)
    return scored


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500); ap.add_argument("--results-dir", default=None)
    ap.add_argument("--quick", action="store_true", help="k in (0, 2), one seed, similar at k=2: a smoke test")
    a = ap.parse_args()
    if os.environ.get("RUNS_N"):
        from ft_kit.results import committed_results_dir
        a.n, a.quick, a.results_dir = int(os.environ["RUNS_N"]), True, a.results_dir or str(committed_results_dir() / "_test")
    kw = {"ks": (0, 2), "seeds": (0,), "similar_ks": (2,), "n_pool": 40} if a.quick else {}
    t = time.time(); done = run_full(a.n, results_dir=a.results_dir, **kw)
    print(f"scored {len(done)} records in {time.time() - t:.0f} s (the others were reused)")
