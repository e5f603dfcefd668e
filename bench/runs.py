"""`make results`: the full-size fine-tuning runs behind the numbers of lesson 04b, done once, saved as
data/results/minilm_full_ft.json (fp32) and minilm_full_ft_bf16.json (bf16 autocast, the same run otherwise), committed.
A precision whose record exists is skipped (delete the record to run it again); RUNS_PRECISIONS="fp32,bf16" chooses.

RUNS_N=64 (any number) shrinks every split to that many snippets and writes into data/results/_test/
(git-ignored) unless FT_KIT_RESULTS_DIR says otherwise, so a smoke test never overwrites the committed result.
An interrupted full run continues from runs/minilm_full_ft/last.pt when started again.
"""
from __future__ import annotations

import os

from ft_kit.data import load_splits, make_loader, sample_balanced
from ft_kit.models import load_encoder, saved_pooling
from ft_kit.results import committed_results_dir, find_result
from ft_kit.train import TrainConfig, evaluate_model, record_run, seed_everything, train

NAME = "minilm_full_ft"  # the registry name the lesson reads (fp32); bf16 adds "_bf16"


def minilm_full_ft(n: int | None = None, precision: str = "fp32") -> str:
    "Full fine-tuning of the packaged MiniLM on the whole training split (2 epochs), test metrics of the best checkpoint."
    name = NAME + ("" if precision == "fp32" else f"_{precision}")
    splits = load_splits()
    if n: splits = {k: sample_balanced(v, min(n, len(v)), seed=0) for k, v in splits.items()}
    cfg = TrainConfig(lr=5e-5, epochs=2, batch_size=16, eval_every=160 if not n else 2, precision=precision,
                      output_dir=f"runs/{name}" + (f"_n{n}" if n else ""))
    seed_everything(cfg.seed)
    model, tok = load_encoder()  # pooling "auto": the head reads the mean-pooled vector MiniLM was trained to produce
    data = {"train": splits["train"], "validation": splits["validation"]}
    res = train(model, data, cfg, tok, resume=True)
    test = evaluate_model(model, make_loader(splits["test"], tok, batch_size=32), precision)
    folder = None if os.environ.get("FT_KIT_RESULTS_DIR") else committed_results_dir() / ("_test" if n else "")
    path = record_run(name, model, cfg, res, data, test=test, test_split={"n": len(splits["test"])},
                      pooling=saved_pooling(model.config), results_dir=folder, overwrite=True)
    return (f"{name}: {res.steps} steps in {res.train_time_s / 60:.1f} min, validation accuracy {res.best['accuracy']:.1%} "
            f"(best step {res.best_step}), test accuracy {test['accuracy']:.1%} (majority {test['majority_accuracy']:.1%}) "
            f"-> {path.relative_to(os.getcwd()) if path.is_relative_to(os.getcwd()) else path.name}")


if __name__ == "__main__":
    n = int(os.environ["RUNS_N"]) if os.environ.get("RUNS_N") else None
    for p in os.environ.get("RUNS_PRECISIONS", "fp32,bf16").split(","):
        done = not n and not os.environ.get("FT_KIT_RESULTS_DIR") and find_result(NAME + ("" if p == "fp32" else f"_{p}"))
        print(f"{NAME} {p}: record exists, skipped" if done else minilm_full_ft(n, p), flush=True)
