"""SmolLM2 scoring speed, in one run: `python -m bench.prompting` (part of `make bench`).

Three ways to run the scorer: fp32; bf16 autocast (`precision="bf16"`: fp32 weights, matrix multiplies in bf16); and
bf16 weights (the model loaded with `dtype=torch.bfloat16`, scored without autocast: nothing is cast per pass).
Few-shot, k = 8: the prefix-cache scorer against the naive one (the demonstrations in every row), in each way,
alternated over BENCH_ROUNDS rounds (medians), with the largest score difference cached vs naive and each bf16 way vs
fp32. Zero-shot on 500 balanced test snippets, also alternated: seconds, accuracy, and how many predictions differ
from fp32's; then the whole test split, each way once (accuracy and agreement only: on 500 snippets one changed
prediction is a fifth of a point). Writes the `bench_prompting` record that lesson 08 quotes.
"""
from __future__ import annotations

import copy
import os
import time
import warnings

import torch

from bench import _env

WAYS = ("fp32", "bf16", "bf16_weights")  # fp32; bf16 autocast; a bf16 copy of the weights, no autocast


def _scorers(model) -> dict:
    "Each way's (model, precision argument): the bf16-weights way scores a bf16 copy with autocast off."
    return {"fp32": (model, "fp32"), "bf16": (model, "bf16"), "bf16_weights": (copy.deepcopy(model).to(torch.bfloat16), "fp32")}


def main(n: int = 32,  # snippets scored by each few-shot scorer
         k: int = 8,  # demonstrations in the shared prefix
         batch_size: int = 16,  # prompts per forward pass
         n_zero: int = int(_env("BENCH_ZERO_N", "500")),  # balanced test snippets of the zero-shot check
         n_all: int | None = int(_env("BENCH_ALL_N", "0")) or None,  # the whole-split check's first snippets; None: all
        ) -> dict:  # timings, speed-ups, largest score differences, zero-shot accuracies and agreement
    "Time `score_texts` cached and naive in each way; zero-shot accuracy and agreement with fp32; print; save a record."
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    from bench.__main__ import ROUNDS, alternated, median_seconds
    from ft_kit.data import load_splits, sample_balanced
    from ft_kit.models import load_causal_lm
    from ft_kit.prompting import PromptSetup, choose_demos, evaluate_scores, score_texts
    from ft_kit.results import save_result
    model, tok = load_causal_lm()
    ways, splits = _scorers(model), load_splits()
    texts = list(sample_balanced(splits["test"], n, seed=0)["text"])
    demos, setup = choose_demos(sample_balanced(splits["train"], 200, seed=0), k, "balanced", seed=0), PromptSetup()
    def one(m, p, rows, d, cache=True):
        t = time.perf_counter(); s = score_texts(m, tok, setup, rows, d, use_cache=cache, batch_size=batch_size, precision=p)
        return {"seconds": time.perf_counter() - t, "scores": s}
    for m, p in ways.values(): one(m, p, texts[:2], demos)  # warm-up
    fns = {f"{name}_{w}": (lambda c=c, w=w: one(*ways[w], texts, demos, c)) for name, c in (("naive", False), ("cached", True))
           for w in WAYS}
    runs = alternated(fns, ROUNDS)
    sec = median_seconds(runs)
    score = lambda key: runs[key][0]["scores"]
    diff = {f"cached_vs_naive_{w}": (score(f"cached_{w}") - score(f"naive_{w}")).abs().max().item() for w in WAYS}
    diff |= {f"{w}_vs_fp32": (score(f"cached_{w}") - score("cached_fp32")).abs().max().item() for w in WAYS[1:]}
    zero = sample_balanced(splits["test"], n_zero, seed=0)
    zruns = alternated({w: (lambda w=w: one(*ways[w], list(zero["text"]), None)) for w in WAYS}, ROUNDS)
    zsec, pred = median_seconds(zruns), {w: zruns[w][0]["scores"].argmax(1) for w in WAYS}
    acc = {w: evaluate_scores(zero["label"].tolist(), zruns[w][0]["scores"])["accuracy"] for w in WAYS}
    whole = splits["test"].iloc[:n_all]
    wpred = {w: one(*ways[w], list(whole["text"]), None)["scores"].argmax(1) for w in WAYS}
    truth = torch.tensor(whole["label"].to_numpy())  # a copy: the frame's array is read-only
    out = {"seconds": sec, "ms_per_snippet": {k_: 1000 * v / n for k_, v in sec.items()},
           "cache_speedup": {w: sec[f"naive_{w}"] / sec[f"cached_{w}"] for w in WAYS},
           "bf16_speedup": {f"{c}_{w}": sec[f"{c}_fp32"] / sec[f"{c}_{w}"] for c in ("naive", "cached") for w in WAYS[1:]},
           "max_score_diff": diff, "zero_shot_accuracy": acc, "zero_shot_seconds": zsec,
           "zero_shot_seconds_all": {w: [r["seconds"] for r in v] for w, v in zruns.items()},
           "zero_shot_speedup": {w: zsec["fp32"] / zsec[w] for w in WAYS[1:]},
           "zero_shot_changed": {w: int((pred[w] != pred["fp32"]).sum()) for w in WAYS[1:]},
           "whole_test_accuracy": {w: (wpred[w] == truth).double().mean().item() for w in WAYS},
           "whole_test_changed": {w: int((wpred[w] != wpred["fp32"]).sum()) for w in WAYS[1:]}}
    report(out, n, k, batch_size, n_zero, len(whole))
    save_result("bench_prompting", {"n": n, "k": k, "batch_size": batch_size, "rounds": ROUNDS, "n_zero": n_zero,
                                    "n_whole_test": len(whole),
                                    "ways": list(WAYS), "threads": torch.get_num_threads()}, out, overwrite=True)
    return out


def report(out: dict, n: int, k: int, batch_size: int, n_zero: int, n_whole: int) -> None:
    "Print the record's figures."
    print(f"prompt scoring, k={k} demonstrations, {n} snippets, batch {batch_size}, alternated rounds (medians)")
    print(f"{'scorer':<22}{'seconds':>10}{'ms/snippet':>12}")
    for k_, s in out["seconds"].items(): print(f"{k_:<22}{s:>10.2f}{1000 * s / n:>12.1f}")
    print("prefix cache speed-up: " + ", ".join(f"{w} {v:.2f}x" for w, v in out["cache_speedup"].items()))
    print("largest score differences: " + ", ".join(f"{w} {v:.1e}" for w, v in out["max_score_diff"].items()))
    print("bf16 speed-up over fp32: " + ", ".join(f"{w} {v:.2f}x" for w, v in out["bf16_speedup"].items()))
    for w, a in out["zero_shot_accuracy"].items():
        extra = f", {out['zero_shot_speedup'][w]:.2f}x, {out['zero_shot_changed'][w]} predictions differ" if w != "fp32" else ""
        print(f"zero-shot on {n_zero}, {w}: accuracy {a:.1%}, {out['zero_shot_seconds'][w]:.1f} s{extra}")
    for w, a in out["whole_test_accuracy"].items():
        extra = f", {out['whole_test_changed'][w]} predictions differ from fp32" if w != "fp32" else ""
        print(f"zero-shot on the whole test split ({n_whole}), {w}: accuracy {a:.2%}{extra}")


if __name__ == "__main__":
    main()
