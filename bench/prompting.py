"""Prefix-cache scorer against the naive scorer at k = 8, in one run: `python -m bench.prompting`."""
from __future__ import annotations

import os
import time
import warnings

import torch


def main(n: int = 32,  # snippets scored by each scorer
         k: int = 8,  # demonstrations in the shared prefix
         batch_size: int = 16,  # prompts per forward pass
        ) -> dict:  # timings, speed-up and largest score difference
    "Time `score_texts` with and without the cached few-shot prefix on the same prompts; print a table."
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    if (os.cpu_count() or 1) <= 2:
        import torch; torch.set_num_threads(1)  # on 2 shared cores one thread avoids OpenMP spinning
    from ft_kit.data import load_splits, sample_balanced
    from ft_kit.models import load_causal_lm
    from ft_kit.prompting import PromptSetup, choose_demos, score_texts
    model, tok = load_causal_lm()
    splits = load_splits()
    texts = list(sample_balanced(splits["test"], n, seed=0)["text"])
    demos, setup = choose_demos(sample_balanced(splits["train"], 200, seed=0), k, "balanced", seed=0), PromptSetup()
    score_texts(model, tok, setup, texts[:2], demos)  # warm-up
    out = {}
    for name, cache in (("naive (prefix in every row)", False), ("prefix cache", True)):
        t = time.perf_counter()
        out[name] = score_texts(model, tok, setup, texts, demos, use_cache=cache, batch_size=batch_size)
        out[name + " s"] = time.perf_counter() - t
    naive_s, cached_s = out["naive (prefix in every row) s"], out["prefix cache s"]
    diff = (out["prefix cache"] - out["naive (prefix in every row)"]).abs().max().item()
    print(f"prompt scoring, k={k} demonstrations, {n} snippets, batch {batch_size}")
    print(f"{'scorer':<30}{'seconds':>10}{'ms/snippet':>12}")
    for name, s in (("naive (prefix in every row)", naive_s), ("prefix cache", cached_s)):
        print(f"{name:<30}{s:>10.2f}{1000 * s / n:>12.1f}")
    print(f"speed-up {naive_s / cached_s:.2f}x (goal >= 2x); largest score difference {diff:.1e} (goal <= 1e-4)")
    return {"naive_s": naive_s, "cached_s": cached_s, "speedup": naive_s / cached_s, "max_diff": diff}


if __name__ == "__main__":
    main()
