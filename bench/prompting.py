"""SmolLM2 scoring speed, in one run: `python -m bench.prompting` (part of `make bench`).

The prefix-cache scorer against the naive one (the demonstrations in every row) at k = 8, each in fp32 and in bf16
autocast, alternated over BENCH_ROUNDS rounds (medians); the largest score difference cached vs naive in each
precision; and zero-shot accuracy on 500 balanced test snippets in fp32 and bf16 (does bf16 change the answer?).
Writes the `bench_prompting` record that lesson 08 quotes.
"""
from __future__ import annotations

import os
import statistics
import time
import warnings

import torch


def main(n: int = 32,  # snippets scored by each few-shot scorer
         k: int = 8,  # demonstrations in the shared prefix
         batch_size: int = 16,  # prompts per forward pass
         n_zero: int = int(os.environ.get("BENCH_ZERO_N", 500)),  # balanced test snippets of the zero-shot check
        ) -> dict:  # timings, speed-ups, largest score differences, zero-shot accuracies
    "Time `score_texts` cached and naive in fp32 and bf16; check bf16 on zero-shot accuracy; print; save a record."
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    from bench.__main__ import ROUNDS, alternated
    from ft_kit.data import load_splits, sample_balanced
    from ft_kit.models import load_causal_lm
    from ft_kit.prompting import PromptSetup, choose_demos, evaluate_scores, score_texts
    from ft_kit.results import save_result
    model, tok = load_causal_lm()
    splits = load_splits()
    texts = list(sample_balanced(splits["test"], n, seed=0)["text"])
    demos, setup = choose_demos(sample_balanced(splits["train"], 200, seed=0), k, "balanced", seed=0), PromptSetup()
    for p in ("fp32", "bf16"): score_texts(model, tok, setup, texts[:2], demos, precision=p)  # warm-up
    def one(cache, p):
        t = time.perf_counter(); s = score_texts(model, tok, setup, texts, demos, use_cache=cache, batch_size=batch_size, precision=p)
        return {"seconds": time.perf_counter() - t, "scores": s}
    fns = {f"{name}_{p}": (lambda c=c, p=p: one(c, p)) for name, c in (("naive", False), ("cached", True)) for p in ("fp32", "bf16")}
    runs = alternated(fns, ROUNDS)
    sec = {k_: statistics.median(r["seconds"] for r in v) for k_, v in runs.items()}
    diff = {p: (runs[f"cached_{p}"][0]["scores"] - runs[f"naive_{p}"][0]["scores"]).abs().max().item() for p in ("fp32", "bf16")}
    zero = sample_balanced(splits["test"], n_zero, seed=0)
    acc, zsec = {}, {}
    for p in ("fp32", "bf16"):
        t = time.perf_counter(); s = score_texts(model, tok, setup, list(zero["text"]), None, batch_size=batch_size, precision=p)
        zsec[p] = time.perf_counter() - t; acc[p] = evaluate_scores(zero["label"].tolist(), s)["accuracy"]
    out = {"seconds": sec, "ms_per_snippet": {k_: 1000 * v / n for k_, v in sec.items()},
           "cache_speedup": {p: sec[f"naive_{p}"] / sec[f"cached_{p}"] for p in ("fp32", "bf16")},
           "bf16_speedup": {c: sec[f"{c}_fp32"] / sec[f"{c}_bf16"] for c in ("naive", "cached")},
           "max_score_diff": diff, "zero_shot_accuracy": acc, "zero_shot_seconds": zsec,
           "zero_shot_bf16_speedup": zsec["fp32"] / zsec["bf16"]}
    print(f"prompt scoring, k={k} demonstrations, {n} snippets, batch {batch_size}, {ROUNDS} rounds alternated (medians)")
    print(f"{'scorer':<16}{'seconds':>10}{'ms/snippet':>12}")
    for k_, s in sec.items(): print(f"{k_:<16}{s:>10.2f}{1000 * s / n:>12.1f}")
    print(f"prefix cache: {out['cache_speedup']['fp32']:.2f}x in fp32, {out['cache_speedup']['bf16']:.2f}x in bf16; "
          f"largest score difference cached vs naive {diff['fp32']:.1e} (fp32), {diff['bf16']:.1e} (bf16)")
    print(f"bf16 vs fp32: {out['bf16_speedup']['cached']:.2f}x (cached), zero-shot on {n_zero}: {out['zero_shot_bf16_speedup']:.2f}x; "
          f"accuracy fp32 {acc['fp32']:.1%}, bf16 {acc['bf16']:.1%}")
    save_result("bench_prompting", {"n": n, "k": k, "batch_size": batch_size, "rounds": ROUNDS, "n_zero": n_zero,
                                    "threads": torch.get_num_threads()}, out, overwrite=True)
    return out


if __name__ == "__main__":
    main()
