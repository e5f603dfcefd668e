"""MiniLM + LoRA, and SmolLM2 + a classification head, on lesson 08's evaluation set: `python -m bench.label_budget`.

Lesson 08's decision figure compares prompting SmolLM2 with training, on the same 500 balanced test snippets. This
script adds the sentence-encoder side: LoRA (r=8 on query and value, lesson 07's `lora` row) on the packaged MiniLM,
trained on n labelled snippets (a balanced sample; "all" is the whole training split), through the PEFT protocol's
experiment layer (`ft_kit.peft_methods.run_protocol`): a learning-rate search on lesson 08's 500 balanced validation
snippets with the first seed, the other seeds at the chosen rate, the validity gates, one record per run
(`labelbudget-lora_n<size>-lr<rate>-s<seed>`, searches `labelbudget-lora_n<size>-search`). Small sets train for at
least 100 steps (at most 20 epochs), as the transfer grid does. Resumable: a run whose record exists is read back.
LB_SIZES ("32,128,512,all"), LB_SEEDS ("0,1,2").

LB_MODEL=smollm2-head runs the other half of "prompt or train?" on the language model lesson 08 prompts: SmolLM2-135M
with a classification head on its last token (`ft_kit.prompting.lm_classifier`), LoRA r=8 on q_proj and v_proj and
the head trained (rows `smollm2_head_n<size>`). Its budget matches the answer-tuned LoRA of `bench.prompt_tune`:
batches of 8, one epoch of n balanced labels, at least 100 steps, so n=2400 (its default LB_SIZES "128,512,2400") is
the 300 steps of 8 that the answer-tuned "all" row trained for.
"""
from __future__ import annotations

import time
import warnings

from bench import _env, tried_line


def main() -> dict:
    "Every requested size: search, seeds, gates; print what each cost and the chosen rate."
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error(); hf_logging.disable_progress_bar()
    from ft_kit.data import load_splits, sample_balanced
    from ft_kit.peft_methods import protocol_budget, run_protocol
    from ft_kit.prompting import lm_classifier_factory
    s = load_splits()
    evals = {k: sample_balanced(s[k], 500, seed=0) for k in ("validation", "test")}  # lesson 08's evaluation snippets
    seeds = tuple(int(v) for v in _env("LB_SEEDS", "0,1,2").split(","))
    head = _env("LB_MODEL", "minilm") == "smollm2-head"
    make, out = (lm_classifier_factory() if head else None), {}
    for size in _env("LB_SIZES", "128,512,2400" if head else "32,128,512,all").split(","):
        budget = protocol_budget(n_train=None if size == "all" else int(size), balanced=True, n_eval=None, min_steps=100,
                                 seeds=seeds, **(dict(epochs=1, batch_size=8) if head else {}))
        row = ((f"smollm2_head_n{size}", "lora", {"target_modules": ("q_proj", "v_proj")}) if head
               else (f"lora_n{size}", "lora", {}))
        t = time.perf_counter()
        out[size] = rec = run_protocol([row], budget, make, prefix="labelbudget", splits={"train": s["train"], **evals})[0]
        tried = tried_line(rec["tried"])
        print(f"n={size}: {time.perf_counter() - t:.0f} s, chosen {rec['chosen']} [{tried}] {rec['reason']}", flush=True)
    return out


if __name__ == "__main__":
    main()
