"""The training benchmark on a GPU: full fine-tuning and LoRA (r=8 on query/value) of the packaged MiniLM, bf16
autocast where the GPU supports it, through `ft_kit.distributed.distributed_train`. Writes
`gpu_minilm_full_ft_bf16` and `gpu_minilm_lora_bf16` into the results registry (with the GPU's name, from
`ft_kit.results.environment_info`, and the number of processes).

    python bench/gpu_train.py                                            # one GPU
    accelerate launch --multi_gpu --num_processes 2 bench/gpu_train.py   # two GPUs, the same global batch

Size: GPU_N (training snippets, default: the whole training split), GPU_EPOCHS (default 2), GPU_BATCH (global
batch, default 16, as lesson 04b). Needs CUDA; on a machine without it, it says so and exits with status 2. Existing records of the same names
are never overwritten (it stops before training).
"""
from __future__ import annotations

import os
import sys

import torch

from ft_kit.data import load_splits, make_loader, sample_balanced
from ft_kit.distributed import distributed_train, make_accelerator
from ft_kit.lora import LoRAConfig, apply_lora
from ft_kit.models import load_encoder
from ft_kit.results import resolve_results_dir
from ft_kit.train import TrainConfig, evaluate_model, seed_everything

N = int(os.environ["GPU_N"]) if os.environ.get("GPU_N") else None  # training snippets (None: all)
EPOCHS = int(os.environ.get("GPU_EPOCHS", 2))  # passes over them
BS = int(os.environ.get("GPU_BATCH", 16))  # global batch
RUNS = {"gpu_minilm_full_ft_bf16": dict(lr=5e-5, lora=None),  # lesson 04b's settings
        "gpu_minilm_lora_bf16": dict(lr=1e-3, lora=LoRAConfig(r=8, alpha=8))}  # lesson 06's settings


def one_run(name: str, lr: float, lora: LoRAConfig | None, splits: dict, acc) -> str:
    "Train one configuration, evaluate the best checkpoint on test (main process), record it; a summary line."
    cfg = TrainConfig(lr=lr, epochs=EPOCHS, batch_size=BS, device="cuda", eval_every=None)
    seed_everything(cfg.seed)
    model, tok = load_encoder(device="cuda")
    if lora is not None: apply_lora(model, lora)
    torch.cuda.reset_peak_memory_stats()
    data = {"train": splits["train"], "validation": splits["validation"]}
    res = distributed_train(model, data, cfg, tok, accelerator=acc, record=name)
    steps_per_s = res.steps / res.train_time_s
    line = (f"{name}: {res.steps} steps in {res.train_time_s:.1f} s ({steps_per_s:.1f} steps/s, "
            f"{res.tokens / res.train_time_s:,.0f} tokens/s) on {acc.num_processes} x {torch.cuda.get_device_name(0)}, "
            f"{acc.mixed_precision}; validation accuracy {res.best.get('accuracy', float('nan')):.1%}")
    if acc.is_main_process:
        test = evaluate_model(model, make_loader(splits["test"], tok, batch_size=64))
        line += f", test accuracy {test['accuracy']:.1%}"
    return line


def main() -> int:
    if not torch.cuda.is_available():
        print("bench/gpu_train.py needs a CUDA GPU and this machine has none: nothing was run or recorded.")
        return 2
    taken = [n for n in RUNS if (resolve_results_dir() / f"{n}.json").exists()]
    if taken: raise FileExistsError(f"{taken} are already in {resolve_results_dir()}: move them away to run again")
    acc = make_accelerator("cuda", "auto")  # bf16 where the GPU supports it
    splits = load_splits()
    if N: splits = {k: sample_balanced(v, min(N, len(v)), seed=0) for k, v in splits.items()}
    for name, kw in RUNS.items():
        line = one_run(name, kw["lr"], kw["lora"], splits, acc)
        if acc.is_main_process: print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
