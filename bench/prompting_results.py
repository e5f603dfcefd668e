"""The full prompting evaluation of lesson 08 (`make results`): >= 500 balanced test snippets, results in the registry.

Run: `python -m bench.prompting_results` (add `--n 40 --quick --results-dir /tmp/x` for a quick check). As in
bench/runs.py, RUNS_N=40 shrinks the run (quick grid) and writes into data/results/_test unless --results-dir is given.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings


def run_full(n: int = 500,  # balanced test snippets
             ks: tuple = (0, 1, 2, 4, 8),  # numbers of demonstrations
             seeds: tuple = (0, 1, 2),  # demonstration draws per (k, strategy)
             similar_ks: tuple = (2, 8),  # k values also run with nearest-neighbour demonstrations (slow: no shared prefix)
             n_pool: int = 200,  # training snippets demonstrations are drawn from
             results_dir: str | None = None,  # default: the registry's folder (data/results)
             overwrite: bool = True,  # replace earlier prompting_* records
            ) -> list:  # paths of the records written
    "Zero-shot setups, few-shot grid (random/balanced/similar) with calibration, and the linear probe; saves `prompting_*`."
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    if (os.cpu_count() or 1) <= 2:
        import torch; torch.set_num_threads(1)  # on 2 shared cores one thread avoids OpenMP spinning
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from ft_kit.data import load_splits, sample_balanced
    from ft_kit.models import load_causal_lm, load_encoder
    from ft_kit.prompting import (CONTENT_FREE, PromptSetup, choose_demos, contextual_calibration, embed_texts,
                                  evaluate_scores, nearest_demos, prior_correction, score_texts)
    from ft_kit.results import describe_split, save_result
    model, tok = load_causal_lm()
    splits = load_splits()
    ev, pool = sample_balanced(splits["test"], n, seed=0), sample_balanced(splits["train"], n_pool, seed=0)
    y, texts, split = ev["label"].to_numpy(), list(ev["text"]), describe_split("test", ev)
    paths = []
    def save(name, config, s, t, cf=None, **extra):
        m = evaluate_scores(y, s)
        m["prior_corrected_accuracy"] = evaluate_scores(y, prior_correction(s))["accuracy"]
        if cf is not None: m["calibrated_accuracy"] = evaluate_scores(y, contextual_calibration(s, cf))["accuracy"]
        paths.append(save_result(name, config, m, split, results_dir, overwrite, latency_s=None if t is None else t / n, **extra))
    zero = {"raw": PromptSetup(), "raw_bad_good": PromptSetup(words=(" bad", " good")),
            "raw_thumbs": PromptSetup(words=(" thumbs down", " thumbs up")),
            "chat": PromptSetup(template="Review: {text}\nSentiment (positive or negative):", words=("negative", "positive"),
                                instruction="Classify the sentiment of the movie review.", chat=True)}
    for name, setup in zero.items():
        t = time.time(); s = score_texts(model, tok, setup, texts)
        save(f"prompting_zero_{name}", {**vars(setup), "n_train": 0}, s, time.time() - t, score_texts(model, tok, setup, list(CONTENT_FREE)))
    setup = PromptSetup()
    for k in [k for k in ks if k > 0]:
        for how in ("random", "balanced"):
            for seed in seeds:
                demos = choose_demos(pool, k, how, seed)
                t = time.time(); s = score_texts(model, tok, setup, texts, demos)
                save(f"prompting_icl_k{k}_{how}_s{seed}", {**vars(setup), "k": k, "strategy": how, "seed": seed, "n_train": k},
                     s, time.time() - t, score_texts(model, tok, setup, list(CONTENT_FREE), demos), last_label=int(demos["label"].iloc[-1]))
    encoder, etok = load_encoder()
    pool_emb, ev_emb = embed_texts(encoder, etok, list(pool["text"])), embed_texts(encoder, etok, texts)
    for k in similar_ks:
        near = nearest_demos(ev_emb, pool_emb, k)
        t = time.time(); s = torch.cat([score_texts(model, tok, setup, [x], pool.iloc[i.tolist()]) for x, i in zip(texts, near)])
        save(f"prompting_icl_k{k}_similar", {**vars(setup), "k": k, "strategy": "similar", "n_train": k}, s, time.time() - t)
    for m in sorted({m for m in (4, 8, 16, 32, 64, 128, n_pool) if m <= n_pool}):
        idx = sample_balanced(pool.assign(i=range(len(pool))), m, 0)["i"].to_numpy().copy()
        t = time.time(); clf = LogisticRegression(max_iter=1000, C=10).fit(pool_emb[idx].numpy(), pool["label"].to_numpy()[idx])
        fit_s = time.time() - t
        s = torch.tensor(clf.predict_log_proba(ev_emb.numpy()))
        save(f"prompting_probe_n{m}", {"model": "all-MiniLM-L6-v2 mean-pooled", "C": 10, "n_train": m}, s, None, train_time_s=fit_s)
    return paths


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500); ap.add_argument("--results-dir", default=None)
    ap.add_argument("--quick", action="store_true", help="k in (0, 2), one seed, similar at k=2: a smoke test")
    a = ap.parse_args()
    if os.environ.get("RUNS_N"):
        from ft_kit.results import committed_results_dir
        a.n, a.quick, a.results_dir = int(os.environ["RUNS_N"]), True, a.results_dir or str(committed_results_dir() / "_test")
    kw = {"ks": (0, 2), "seeds": (0,), "similar_ks": (2,), "n_pool": 40} if a.quick else {}
    print(f"wrote {len(run_full(a.n, results_dir=a.results_dir, **kw))} records")
