"""Fine-tune SmolLM2 itself on lesson 08's prompt, for `make results`: `python -m bench.prompt_tune`.

A LoRA adapter (r=8 on q_proj and v_proj) learns to answer the zero-shot prompt with the right label word, the
loss on the label word alone (`ft_kit.prompting.answer_loss`, equal to trl's completion-only loss). Each labelled
size is one row of the experiment layer (`ft_kit.prompting.answer_tune_point`): a learning-rate search on 500
balanced validation snippets with seed 0, seeds 1 and 2 at the chosen rate, the validity gates, one record per run
(`prompttune-smollm2-lora[-t<steps>][-decay]-n<size>-lr<rate>-s<seed>`), scored on the 500 balanced test snippets the prompting
records use. Resumable: a run whose record exists is read back. Sizes and steps without editing the file:
PT_SIZES ("all"; e.g. "128,512,all"), PT_STEPS (300), PT_BATCH (8), PT_SEEDS ("0,1,2"), PT_EVAL (500),
PT_PRECISION ("auto": bf16 autocast where the chip does it fast, as AMX CPUs do; fp32 weights, optimizer and loss),
PT_GRID (the learning rates searched first, default "3e-4,1e-3,3e-3": with the constant rate, 3e-5 and 1e-4 lost to
1e-3 on validation), PT_WIDEN (extra rates beyond an edge, 1),
PT_SCHEDULE ("linear": 10% warm-up, then linear decay to 0; "constant": one rate throughout, as the first records ran).
A setting other than 300 steps or the constant rate is part of the row's label (`-t<steps>`, `-decay`), so records of
two settings never mix: `answer_tune_point` refuses to read back a record that ran with another setting.
"""
from __future__ import annotations

import time
import warnings

from bench import _env, point_line


def main() -> dict:
    "Every requested size: search, seeds, gates; print what each cost."
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error(); hf_logging.disable_progress_bar()
    from ft_kit.data import load_splits, sample_balanced
    from ft_kit.models import load_causal_lm
    from ft_kit.prompting import AnswerTuneConfig, PromptSetup, answer_tune_point, lora_lm
    splits, n_eval = load_splits(), int(_env("PT_EVAL", "500"))
    cfg = AnswerTuneConfig(steps=int(_env("PT_STEPS", "300")), batch_size=int(_env("PT_BATCH", "8")),
                           precision=_env("PT_PRECISION", "auto"), schedule=_env("PT_SCHEDULE", "linear"))
    seeds = tuple(int(s) for s in _env("PT_SEEDS", "0,1,2").split(","))
    def make():
        model, tok = load_causal_lm()
        return lora_lm(model), tok
    tag = ("" if cfg.steps == 300 else f"-t{cfg.steps}") + ("-decay" if cfg.schedule == "linear" else "")
    out = {}
    for size in _env("PT_SIZES", "all").split(","):
        train = splits["train"] if size == "all" else sample_balanced(splits["train"], int(size), seed=0)
        data = {"train": train, "validation": sample_balanced(splits["validation"], n_eval, seed=0),
                "test": sample_balanced(splits["test"], n_eval, seed=0)}
        t = time.perf_counter()
        grid = tuple(float(v) for v in _env("PT_GRID", "3e-4,1e-3,3e-3").split(","))
        rec = answer_tune_point(f"smollm2-lora{tag}-n{size}", make, PromptSetup(), data, grid=grid, seeds=seeds,
                                widen=int(_env("PT_WIDEN", "1")), cfg=cfg)
        out[size] = rec
        print(point_line(size, t, rec, rec["reason"]), flush=True)
    return out


if __name__ == "__main__":
    main()
