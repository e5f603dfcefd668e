"""Full-size runs of lessons 05 (transfer) and 07 (one protocol, every method), for `make results`.

    python -m bench.protocol                 # both parts
    python -m bench.protocol protocol        # only the PEFT protocol  (records peft-<method>-s<seed>)
    python -m bench.protocol transfer        # only the label-budget grid (records transfer-<kind>-n<size>-s<seed>)
    python -m bench.protocol sweep           # only the sweep rows not yet recorded (rank, targets, lr, epochs)

Every method of the protocol runs in a fresh process (spawned), so that each record's `peak_memory_mb` is the
peak of that method alone, not of everything before it. Sizes can be changed without editing the file:
PROTOCOL_N_TRAIN (training snippets, default 1000; 0 = all), PROTOCOL_EPOCHS (2), PROTOCOL_MAX_LENGTH (64),
PROTOCOL_SEEDS (seeds of the main methods, default "0,1,2"), TRANSFER_EPOCHS (1), TRANSFER_MIN_STEPS (100),
PROTOCOL_SCALE (e.g. 0.05 for a quick timed check: scales the training sample, the evaluation splits and the
transfer sizes, and writes under the prefix "peftscaled"/"transferscaled" instead of the lesson's names).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

# main methods: every seed; the others: the first seed (see ProtocolConfig.seeds); a small LoRA sweep: first seed
MAIN = ["majority", "probe", "head", "bitfit", "full", "lora"]
# peft_lora computes what lora computes (lesson 06 checks logits and gradients to 1e-6): one seed is enough
OTHERS = ["peft_lora", "last1", "last2", "peft_adalora", "peft_ia3", "peft_prompt", "peft_prefix"]
SWEEP = [("lora_r32", "lora", {"r": 32, "alpha": 64}),
         ("lora_ffn", "lora", {"target_modules": ("query", "key", "value", "intermediate.dense", "output.dense")}),
         ("lora_lr3e-4", "lora", {"lr": 3e-4}), ("lora_lr3e-3", "lora", {"lr": 3e-3}), ("lora_4ep", "lora", {"epochs": 4}),
         ("head_lr1e-2", "head", {"lr": 1e-2})]  # does a larger step get the head off the majority answer?


def _env(name: str, default: str) -> str: return os.environ.get(name, default)


def protocol_config():
    "The full-size protocol, with the environment's overrides."
    from ft_kit.peft_methods import ProtocolConfig
    scale = float(_env("PROTOCOL_SCALE", "1"))
    n = int(_env("PROTOCOL_N_TRAIN", "1000")) or None
    return ProtocolConfig(n_train=max(16, round(n * scale)) if n and scale < 1 else n,
                          n_eval=None if scale >= 1 else max(16, round(1215 * scale)),
                          epochs=int(_env("PROTOCOL_EPOCHS", "2")), max_length=int(_env("PROTOCOL_MAX_LENGTH", "64")),
                          seeds=tuple(int(s) for s in _env("PROTOCOL_SEEDS", "0,1,2").split(",")),
                          prefix="peft" if scale >= 1 else "peftscaled", final_eval_only=True)


def _child(spec, seeds) -> tuple[list[str], float]:
    "Run one method (all its seeds) in this fresh process; return the records written and the seconds taken."
    import warnings
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error(); hf_logging.disable_progress_bar()
    from ft_kit.peft_methods import run_protocol
    t = time.perf_counter()
    paths = run_protocol([spec], protocol_config(), seeds=seeds)
    return [p.name for p in paths], time.perf_counter() - t


def run_protocol_part(sweep_only: bool = False) -> float:
    "Every method of lesson 07 at full size (or only the sweep rows), one spawned process per method; returns the seconds taken."
    pcfg, t0 = protocol_config(), time.perf_counter()
    jobs = [] if sweep_only else [(m, pcfg.seeds) for m in MAIN] + [(m, pcfg.seeds[:1]) for m in OTHERS]
    jobs += [(s, pcfg.seeds[:1]) for s in SWEEP]
    if sweep_only:  # `sweep` adds the rows that are missing; delete a record to run it again
        from ft_kit.results import resolve_results_dir
        jobs = [(s, sd) for s, sd in jobs if not (resolve_results_dir() / f"{pcfg.prefix}-{s[0]}-s{sd[0]}.json").exists()]
    print(f"protocol: {len(jobs)} methods, training sample {pcfg.n_train or 'all'}, {pcfg.epochs} epochs, "
          f"max_length {pcfg.max_length}, seeds {pcfg.seeds} (main methods), prefix {pcfg.prefix!r}", flush=True)
    ctx = mp.get_context("spawn")
    for spec, seeds in jobs:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
            names, secs = ex.submit(_child, spec, seeds).result()
        print(f"  {spec if isinstance(spec, str) else spec[0]:14} {secs:7.0f} s  {', '.join(names)}", flush=True)
    return time.perf_counter() - t0


def run_transfer_part() -> float:
    "Both starts of lesson 05 on 32, 128, 512, 2048 and all snippets; returns the seconds taken."
    from ft_kit.transfer import TransferConfig, run_transfer
    scale = float(_env("PROTOCOL_SCALE", "1"))
    tc = TransferConfig(epochs=int(_env("TRANSFER_EPOCHS", "1")), min_steps=int(_env("TRANSFER_MIN_STEPS", "100")))
    if scale < 1:
        tc = TransferConfig(sizes=tuple(max(8, round(n * scale)) for n in (32, 128, 512, 2048)), n_eval=max(16, round(1215 * scale)),
                            epochs=tc.epochs, min_steps=max(2, round(tc.min_steps * scale)), prefix="transferscaled")
    print(f"transfer: sizes {tc.sizes}, {tc.epochs} epoch(s) (at least {tc.min_steps} steps, at most {tc.max_epochs} epochs), "
          f"seeds {tc.seeds}, prefix {tc.prefix!r}", flush=True)
    t0 = time.perf_counter()
    for p in run_transfer(tc): print(f"  {p.name}  ({time.perf_counter() - t0:.0f} s so far)", flush=True)
    return time.perf_counter() - t0


def main(parts: list[str] | None = None) -> dict:
    "Run the requested parts ('protocol', 'transfer', 'sweep'; default the first two) and print what each cost."
    parts = parts or ["protocol", "transfer"]
    if bad := [p for p in parts if p not in ("protocol", "transfer", "sweep")]:
        raise SystemExit(f"unknown part(s) {bad}: use protocol, transfer and/or sweep")
    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    cost = {}
    if "protocol" in parts: cost["protocol_s"] = run_protocol_part()
    elif "sweep" in parts: cost["sweep_s"] = run_protocol_part(sweep_only=True)
    if "transfer" in parts: cost["transfer_s"] = run_transfer_part()
    print("; ".join(f"{k[:-2]} {v / 60:.1f} min" for k, v in cost.items()), flush=True)
    return cost


if __name__ == "__main__":
    main(sys.argv[1:])
