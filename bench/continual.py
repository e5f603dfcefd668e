"""`make results` for lesson 09: the continual-learning lab on the experiment layer, saved as data/results/continual-*.json
(committed). Run: `python -m bench.continual` (resumable: runs whose records exist with the same protocol are read back).

Each method's setting is chosen on validation (full fine-tuning's rate on A; LoRA's rate, the replay share and EWC's
strength on both tasks), then every seed runs at it. Size (defaults of `LabConfig`): 1,500 training and 500
validation and test examples per task, one epoch of batch 16 (94 steps per task), 3 seeds.

CONTINUAL_N=64 (any number) shrinks every sample to that many examples (a smoke test) and writes into
data/results/_test/ (git-ignored) unless FT_KIT_RESULTS_DIR says otherwise, so it never touches the committed records.
CONTINUAL_LABELS=seq_full,replay runs only those methods (after the task-A search).
"""
from __future__ import annotations

import os
import time
import warnings


def main(n: int | None = None,  # examples per sample (train, validation, test; probe <= n); None: the full protocol
        ) -> dict:  # label -> the search's result
    "Run the lab's searches and seeds, print one line per new record and the summary over seeds."
    os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    from dataclasses import replace
    import torch
    from ft_kit.continual import LabConfig, lab_summary, run_lab
    from ft_kit.results import committed_results_dir
    from ft_kit.models import quiet_transformers
    quiet_transformers()
    cfg = LabConfig() if not n else LabConfig(replace(LabConfig().budget, n_train=n, n_eval=n), n_probe=min(n, 16))
    folder = None if os.environ.get("FT_KIT_RESULTS_DIR") else committed_results_dir() / ("_test" if n else "")
    labels = tuple(x for x in os.environ.get("CONTINUAL_LABELS", "").split(",") if x) or None
    t0 = time.perf_counter()
    print(f"continual lab: {cfg.budget.n_train} training / {cfg.budget.n_eval} validation and test examples per task, "
          f"seeds {cfg.budget.seeds}, {torch.get_num_threads()} threads", flush=True)
    def show(r):
        m = r["test"]
        line = (f"A {m['matrix'][0][0]:.1%} -> {m['matrix'][1][0]:.1%}, B {m['matrix'][1][1]:.1%}, forgetting "
                f"{100 * m['forgetting']:+.1f} pts" if "matrix" in m else f"A {m['accuracy']:.1%}")
        print(f"{time.perf_counter() - t0:7.0f} s  {r['name']:36} val {r['metrics']['accuracy']:.1%}  test {line}"
              f"{'' if r['valid'] else '  FAILED: ' + '; '.join(r['failed'])}", flush=True)
    out = run_lab(cfg, folder, labels=labels, log=show)
    print({k: v["chosen"] for k, v in out.items()})
    cols = [c for c in lab_summary(folder).columns if c.endswith(("_mean", "_ci95")) or c in ("method", "chosen", "status", "seeds")]
    with __import__("pandas").option_context("display.width", 250, "display.max_columns", 30):
        print(lab_summary(folder)[cols].round(3).to_string())
    print(f"continual lab done in {(time.perf_counter() - t0) / 60:.1f} min")
    return out


if __name__ == "__main__":
    main(int(os.environ["CONTINUAL_N"]) if os.environ.get("CONTINUAL_N") else None)
