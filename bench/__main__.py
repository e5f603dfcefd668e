"""`make bench`: the kit's loop, Hugging Face Trainer and the naive pad-to-128 loop on the same model, data,
batch size and epochs, in one run; tokens/s, seconds per epoch, ratios, and the kit's GFLOP/s against a measured
2048x2048 fp32 matrix-multiply ceiling. Writes `bench_loops` into the results registry.

Size: BENCH_N (training snippets, default 512), BENCH_EPOCHS (default 1), BENCH_BATCH (default 16).
"""
from __future__ import annotations

import os
import tempfile
import time

import torch
from torch import nn

from ft_kit.data import TextDataset, load_splits, make_loader, sample_balanced
from ft_kit.models import get_device, load_encoder
from ft_kit.results import save_result
from ft_kit.train import TrainConfig, naive_train, seed_everything, train

N = int(os.environ.get("BENCH_N", 512))  # training snippets
EPOCHS = int(os.environ.get("BENCH_EPOCHS", 1))  # passes over them
BS = int(os.environ.get("BENCH_BATCH", 16))  # batch size of every loop
LR = 5e-5  # the same peak learning rate everywhere


def sync(device: torch.device) -> None:
    "Wait for the device to finish (so timings are honest on CUDA)."
    if device.type == "cuda": torch.cuda.synchronize()


def matmul_gflops(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    "Measured fp32 GFLOP/s of an n x n matrix multiply (2 n^3 FLOPs each), the best of three timings."
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(4):  # the first round warms up
        sync(device); t = time.perf_counter()
        for _ in range(reps): a @ b
        sync(device); best = min(best, time.perf_counter() - t)
    return 2 * n**3 * reps / best / 1e9


def nonembedding_params(model: nn.Module) -> int:
    "Parameters outside the embedding tables (the ones that cost FLOPs per token)."
    emb = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in emb)


def train_flops(model: nn.Module, shapes: list[tuple[int, int]]) -> float:
    "Training FLOPs of batches of shape (B, T): 6 x non-embedding params x tokens, plus attention 12 L d T^2 per row."
    cfg = model.config
    n, L, d = nonembedding_params(model), cfg.num_hidden_layers, cfg.hidden_size
    return sum(6 * n * B * T + 12 * L * d * B * T * T for B, T in shapes)


def kit_shapes(df, tok, cfg: TrainConfig) -> list[tuple[int, int]]:
    "The (B, T) of every batch the kit's loop computes, epoch by epoch (same loader, same seed)."
    dl = make_loader(df, tok, batch_size=cfg.batch_size, shuffle=True, bucket=cfg.bucket, max_length=cfg.max_length, seed=cfg.seed)
    shapes = []
    for e in range(cfg.epochs):
        dl.batch_sampler.epoch = e
        shapes += [tuple(b["input_ids"].shape) for b in dl]
    return shapes


def run_kit(df, device) -> dict:
    "The kit's loop: length buckets, dynamic padding, fused AdamW, no validation (the others have none)."
    seed_everything(0); m, tok = load_encoder(device=device)
    cfg = TrainConfig(lr=LR, epochs=EPOCHS, batch_size=BS)
    r = train(m, {"train": df}, cfg, tok, progress=False)
    return {"seconds": r.train_time_s, "tokens": r.tokens, "padded_tokens": r.padded_tokens,
            "flops": train_flops(m, kit_shapes(df, tok, cfg))}


def run_trainer(df, device) -> dict:
    "Hugging Face Trainer with dynamic padding (DataCollatorWithPadding), the same schedule and batch size."
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
    seed_everything(0); m, tok = load_encoder(device=device)
    ds = TextDataset(df, tok, 128)
    steps = EPOCHS * -(-len(ds) // BS)
    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(output_dir=d, per_device_train_batch_size=BS, num_train_epochs=EPOCHS, learning_rate=LR,
                                 weight_decay=0.01, warmup_steps=round(0.1 * steps), max_grad_norm=1.0, seed=0,
                                 save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[],
                                 disable_tqdm=True, use_cpu=device.type == "cpu", dataloader_num_workers=0)
        tr = Trainer(model=m, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
        sync(device); t = time.perf_counter(); tr.train(); sync(device)
        seconds = time.perf_counter() - t
    return {"seconds": seconds, "tokens": EPOCHS * sum(ds.lengths), "padded_tokens": None, "flops": None}


def run_naive(df, device) -> dict:
    "The seed-style loop: every text padded to 128, plain AdamW, constant learning rate."
    torch.manual_seed(0); m, tok = load_encoder(device=device)
    r = naive_train(m, tok, df, epochs=EPOCHS, batch_size=BS, lr=LR)
    shapes = [(min(BS, len(df) - i), 128) for i in range(0, len(df), BS)] * EPOCHS
    return {"seconds": r["seconds"], "tokens": r["tokens"], "padded_tokens": r["padded_tokens"], "flops": train_flops(m, shapes)}


def main() -> dict:
    "Run the three loops in one process, print the table, save `bench_loops`."
    device = get_device()
    df = sample_balanced(load_splits()["train"], N, seed=0)
    ceiling = matmul_gflops(device)
    warm, _ = load_encoder(device=device)  # warm up kernels and caches once, untimed, so no loop pays for it
    train(warm, {"train": df[:2 * BS]}, TrainConfig(epochs=1, batch_size=BS), _, progress=False); del warm
    res = {name: fn(df, device) for name, fn in [("kit", run_kit), ("trainer", run_trainer), ("naive", run_naive)]}
    for r in res.values():
        r["tokens_per_s"] = r["tokens"] / r["seconds"]; r["s_per_epoch"] = r["seconds"] / EPOCHS
        r["gflops"] = r["flops"] / r["seconds"] / 1e9 if r["flops"] else None
    metrics = {**res, "matmul_gflops": ceiling, "kit_vs_trainer": res["kit"]["tokens_per_s"] / res["trainer"]["tokens_per_s"],
               "kit_vs_naive": res["kit"]["tokens_per_s"] / res["naive"]["tokens_per_s"]}
    print(f"{N} snippets x {EPOCHS} epoch(s), batch {BS}, device {device}, {torch.get_num_threads()} threads")
    print(f"{'loop':8} {'s/epoch':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'vs naive':>8}")
    for name, r in res.items():
        gf = f"{r['gflops']:.1f}" if r["gflops"] else "-"
        print(f"{name:8} {r['s_per_epoch']:8.1f} {r['tokens_per_s']:9.0f} {gf:>8} {r['tokens_per_s'] / res['naive']['tokens_per_s']:7.2f}x")
    print(f"kit / Trainer: {metrics['kit_vs_trainer']:.2f}x; kit / naive: {metrics['kit_vs_naive']:.2f}x")
    print(f"matmul 2048x2048 fp32 ceiling: {ceiling:.1f} GFLOP/s; the kit's training step reaches "
          f"{res['kit']['gflops']:.1f} GFLOP/s ({res['kit']['gflops'] / ceiling:.0%} of it)")
    cfg = {"n_train": N, "epochs": EPOCHS, "batch_size": BS, "lr": LR, "device": str(device), "threads": torch.get_num_threads()}
    path = save_result("bench_loops", cfg, metrics, split=("train sample", df), overwrite=True)
    print(f"saved {path.name}")
    return metrics


if __name__ == "__main__":
    main()
    from bench.prompting import main as prompting_main  # prefix-cache scorer against the naive one at k = 8
    prompting_main()
    from bench.serve_load import main as serve_main  # the service under load: requests/s, p50/p99, zero errors
    serve_main()
