"""`make results` for lesson 09: the continual-learning lab at full size, every method on one protocol, saved as
data/results/continual_*.json (committed). Run: `python -m bench.continual`.

CONTINUAL_N=32 (any number) shrinks every sample to that many examples (a smoke test) and writes into
data/results/_test/ (git-ignored) unless FT_KIT_RESULTS_DIR says otherwise, so it never overwrites the committed
results. Size of the full run (defaults of `LabConfig`): 1,500 training examples per task, 500 test examples per
task, one epoch, batch 16; 14 trainings of 94 steps (188 for joint training) (full fine-tuning and LoRA), a Fisher information on 200
examples, and an evaluation of both test sets after each method.
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Callable


def run_lab(cfg=None,  # a `ft_kit.continual.LabConfig`; default LabConfig()
            fractions: tuple = (0.1, 0.25, 0.5),  # replay fractions
            lambdas: tuple = (1e4, 1e5, 1e6, 1e7),  # EWC strengths
            device=None,  # see `ft_kit.models.get_device`
            callback: Callable | None = None,  # called with each record as it is done
           ) -> list[dict]:  # one record per method and sweep point
    "Every method of lesson 09 on one protocol: sequential full FT and LoRA, adapters, replay, EWC, joint, incremental."
    from ft_kit.continual import Lab
    lab, done = Lab(cfg, device), []
    steps = [lambda: lab.sequel("seq_full", "sequential full FT", lab.data["B"]["train"], replay_fraction=0.0, ewc_lambda=0.0),
             lab.lora_methods, *[lambda f=f: lab.replay(f) for f in fractions], *[lambda l=l: lab.ewc(l) for l in lambdas],
             lab.joint, lab.incremental]
    for step in steps:
        out = step()
        for r in out if isinstance(out, list) else [out]:
            done.append(r)
            if callback: callback(r)
    return done


def main(n: int | None = None,  # examples per sample (train, test, probe <= n); None: the full protocol
        ) -> list:  # the records written
    "Run every method of the lab, print one line per record and a table, save the records to the registry."
    os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    import torch
    from transformers.utils import logging as hf_logging
    from ft_kit.continual import LabConfig, lab_table, save_records
    from ft_kit.results import committed_results_dir
    hf_logging.set_verbosity_error()
    cfg = LabConfig() if not n else LabConfig(n_train=n, n_test=n, n_probe=min(n, 16))
    fractions, lambdas = ((0.1, 0.25, 0.5), (1e4, 1e5, 1e6, 1e7)) if not n else ((0.5,), (1e5,))
    t0 = time.perf_counter()
    print(f"continual lab: {cfg.n_train} training / {cfg.n_test} test examples per task, {torch.get_num_threads()} threads")
    def show(r):
        m = r["metrics"]
        print(f"{time.perf_counter() - t0:7.0f} s  {r['name']:28} A {m['matrix'][0][0]:.1%} -> {m['a_accuracy']:.1%}, "
              f"B {m['b_accuracy']:.1%}, forgetting {100 * m['forgetting']:+.1f} pts", flush=True)
    records = run_lab(cfg, fractions, lambdas, callback=show)
    folder = None if os.environ.get("FT_KIT_RESULTS_DIR") else committed_results_dir() / ("_test" if n else "")
    paths = save_records(records, folder, overwrite=True)
    with __import__("pandas").option_context("display.width", 200, "display.max_columns", 20):
        print(lab_table(records).drop(columns="method").round(3).to_string())
    print(f"{len(paths)} records saved to {paths[0].parent.name}/ in {(time.perf_counter() - t0) / 60:.1f} min")
    return records


if __name__ == "__main__":
    main(int(os.environ["CONTINUAL_N"]) if os.environ.get("CONTINUAL_N") else None)
