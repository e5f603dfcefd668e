"""`make bench`: training loops, inference and prompt scoring, each timed at least twice, alternated, medians reported.

Training, on the same model, data, batch size and steps: the kit's loop in fp32 and in bf16 autocast (and in bf16
without reusing freed memory, `ft_kit.train.reuse_freed_memory`), Hugging Face Trainer as it comes (random order,
fp32), Trainer configured well (`train_sampling_strategy="group_by_length"`, `bf16=True`), the same Trainer in a
process that reuses freed memory as the kit's loop does, and the naive pad-to-128 loop. Each loop sets the memory
setting it runs under, and each timing runs in a fresh process (spawned, kernels warmed up untimed), so no loop's
process-wide setting reaches another and the order of the loops changes nothing. For each: real tokens/s,
padded/real token ratio, peak memory (resident set sampled during the loop, above what it was before), GFLOP/s
against measured fp32 and bf16 matmul ceilings.
Inference: `ft_kit.train.predict` snippets/s in fp32 and bf16. Frozen layers: an epoch of head-only training with the
encoder recomputed against read from `ft_kit.experiment.cached_bottom`. Then the SmolLM2 scorer (bench/prompting.py) and the
service under load (bench/serve_load.py). Records: bench_loops, bench_inference, bench_frozen_cache, bench_prompting, bench_serve.

Size: BENCH_N (training snippets, default 512), BENCH_EPOCHS (1), BENCH_BATCH (16), BENCH_ROUNDS (3).
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import psutil
import torch
from torch import nn

from ft_kit.data import TextDataset, load_splits, make_loader, sample_balanced
from ft_kit.models import get_device, load_encoder
from ft_kit.results import save_result
from ft_kit.train import TrainConfig, naive_train, predict, reuse_freed_memory, seed_everything, train

N = int(os.environ.get("BENCH_N", 512))  # training snippets
EPOCHS = int(os.environ.get("BENCH_EPOCHS", 1))  # passes over them
BS = int(os.environ.get("BENCH_BATCH", 16))  # batch size of every loop
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))  # timings of each loop (alternated; the median is reported)
LR = 5e-5  # the same peak learning rate everywhere


def sync(device: torch.device) -> None:
    "Wait for the device to finish (so timings are honest on CUDA)."
    if device.type == "cuda": torch.cuda.synchronize()


def matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 10) -> float:
    "Measured GFLOP/s of an n x n matrix multiply in `dtype` (2 n^3 FLOPs each), the best of three timings."
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(4):  # the first round warms up
        sync(device); t = time.perf_counter()
        for _ in range(reps): a @ b
        sync(device); best = min(best, time.perf_counter() - t)
    return 2 * n**3 * reps / best / 1e9


class PeakRSS:
    "Sample this process's resident set every 5 ms inside the block; `.mb` is the peak above the level at entry."
    def __enter__(self):
        self.proc, self.stop = psutil.Process(), threading.Event()
        self.base = self.peak = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._watch, daemon=True); self.thread.start()
        return self

    def _watch(self):
        while not self.stop.wait(0.005): self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self.stop.set(); self.thread.join(); self.mb = (self.peak - self.base) / 2**20


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


def run_kit(df, device, precision: str, reuse: bool = True) -> dict:
    "The kit's loop: length buckets, dynamic padding, fused AdamW, freed memory reused (unless not `reuse`), no validation."
    if reuse: reuse_freed_memory()  # else glibc's defaults, as a fresh process has them
    seed_everything(0); m, tok = load_encoder(device=device)
    cfg = TrainConfig(lr=LR, epochs=EPOCHS, batch_size=BS, precision=precision, reuse_memory=reuse)
    with PeakRSS() as mem: r = train(m, {"train": df}, cfg, tok, progress=False)
    return {"seconds": r.train_time_s, "tokens": r.tokens, "padded_tokens": r.padded_tokens,
            "flops": train_flops(m, kit_shapes(df, tok, cfg)), "peak_mb": mem.mb, "loss_last": r.history["train"][-1]["loss"]}


class _Shapes:
    "A Trainer callback-free way to see the batches: a collator wrapper that records each batch's shape."
    def __init__(self, collate): self.collate, self.shapes = collate, []

    def __call__(self, items):
        b = self.collate(items); self.shapes.append(tuple(b["input_ids"].shape)); return b


def run_trainer(df, device, fast: bool, reuse: bool = False) -> dict:
    """Hugging Face Trainer with dynamic padding, the same schedule and batch size; `fast`: group_by_length + bf16;
    `reuse`: in a process whose freed memory is reused (what the kit's loop sets), else with glibc's defaults."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
    if reuse: reuse_freed_memory()  # else glibc's defaults, as a fresh process has them
    seed_everything(0); m, tok = load_encoder(device=device)
    ds = TextDataset(df, tok, 128)
    steps = EPOCHS * -(-len(ds) // BS)
    extra = {"train_sampling_strategy": "group_by_length", "bf16": True} if fast else {}
    collate = _Shapes(DataCollatorWithPadding(tok))
    with tempfile.TemporaryDirectory() as d, PeakRSS() as mem:
        args = TrainingArguments(output_dir=d, per_device_train_batch_size=BS, num_train_epochs=EPOCHS, learning_rate=LR,
                                 weight_decay=0.01, warmup_steps=round(0.1 * steps), max_grad_norm=1.0, seed=0,
                                 save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[],
                                 disable_tqdm=True, use_cpu=device.type == "cpu", dataloader_num_workers=0, **extra)
        tr = Trainer(model=m, args=args, train_dataset=ds, data_collator=collate)
        sync(device); t = time.perf_counter(); tr.train(); sync(device)
        seconds = time.perf_counter() - t
    padded = sum(B * T for B, T in collate.shapes)
    return {"seconds": seconds, "tokens": EPOCHS * sum(ds.lengths), "padded_tokens": padded,
            "flops": train_flops(m, collate.shapes), "peak_mb": mem.mb}


def run_naive(df, device) -> dict:
    "The seed-style loop: every text padded to 128, plain AdamW, constant learning rate, glibc's memory defaults."
    torch.manual_seed(0); m, tok = load_encoder(device=device)
    with PeakRSS() as mem: r = naive_train(m, tok, df, epochs=EPOCHS, batch_size=BS, lr=LR)
    shapes = [(min(BS, len(df) - i), 128) for i in range(0, len(df), BS)] * EPOCHS
    return {"seconds": r["seconds"], "tokens": r["tokens"], "padded_tokens": r["padded_tokens"],
            "flops": train_flops(m, shapes), "peak_mb": mem.mb}


LOOPS = {"kit_fp32": lambda df, d: run_kit(df, d, "fp32"), "kit_bf16": lambda df, d: run_kit(df, d, "bf16"),
         "kit_bf16_no_reuse": lambda df, d: run_kit(df, d, "bf16", reuse=False),
         "trainer_default": lambda df, d: run_trainer(df, d, False), "trainer_fast": lambda df, d: run_trainer(df, d, True),
         "trainer_fast_reuse": lambda df, d: run_trainer(df, d, True, reuse=True), "naive": run_naive}
REUSE = {"kit_fp32", "kit_bf16", "trainer_fast_reuse"}  # the loops that run with freed memory reused
FP32 = {"kit_fp32", "trainer_default", "naive"}  # the loops that compute in fp32


def alternated(fns: dict, rounds: int) -> dict[str, list]:
    "Run every function `rounds` times, alternating the order (forwards, then backwards, ...): name -> results."
    out, names = {k: [] for k in fns}, list(fns)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]): out[name].append(fns[name]())
    return out


def median_seconds(runs: dict) -> dict:
    "name -> the median of its rounds' seconds, from `alternated`'s results (each a dict with 'seconds')."
    return {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}


def median_row(runs: list[dict], ceilings: dict) -> dict:
    "The median of each timing over the rounds, and the figures derived from it."
    sec = statistics.median(r["seconds"] for r in runs); r0 = runs[0]
    return {"seconds": sec, "seconds_all": [r["seconds"] for r in runs], "tokens": r0["tokens"], "tokens_per_s": r0["tokens"] / sec,
            "padded_per_real": r0["padded_tokens"] / r0["tokens"], "peak_mb": statistics.median(r["peak_mb"] for r in runs),
            "gflops": r0["flops"] / sec / 1e9, "of_fp32_ceiling": r0["flops"] / sec / 1e9 / ceilings["fp32"],
            "of_bf16_ceiling": r0["flops"] / sec / 1e9 / ceilings["bf16"]}


def _loop_in_child(name: str, n: int, threads: int) -> dict:
    "One timing of loop `name` in this fresh process: the same sample, kernels warmed up first, untimed."
    torch.set_num_threads(threads); device = get_device()
    df = sample_balanced(load_splits()["train"], n, seed=0)
    warm, tok = load_encoder(device=device)  # warm up the kernels once, untimed, in the loop's own memory setting
    cfg = TrainConfig(epochs=1, batch_size=BS, precision="fp32" if name in FP32 else "bf16", reuse_memory=name in REUSE)
    train(warm, {"train": df[:2 * BS]}, cfg, tok, progress=False)
    del warm
    return LOOPS[name](df, device)


def in_fresh_process(name: str) -> dict:
    "Time loop `name` in a new process: a process-wide setting of one loop (the kit's memory reuse) cannot touch another."
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_loop_in_child, name, N, torch.get_num_threads()).result()


def bench_training(df, device, ceilings: dict) -> dict:
    "Every training loop, each timing in a fresh process, alternated, medians; the ratios the speed goals are stated in."
    runs = alternated({k: (lambda k=k: in_fresh_process(k)) for k in LOOPS}, ROUNDS)
    res = {k: median_row(v, ceilings) for k, v in runs.items()}
    tps = {k: v["tokens_per_s"] for k, v in res.items()}
    return {**res, "kit_bf16_vs_trainer_default": tps["kit_bf16"] / tps["trainer_default"],
            "kit_bf16_vs_trainer_fast": tps["kit_bf16"] / tps["trainer_fast"], "kit_bf16_vs_kit_fp32": tps["kit_bf16"] / tps["kit_fp32"],
            "kit_bf16_vs_trainer_fast_reuse": tps["kit_bf16"] / tps["trainer_fast_reuse"],
            "reuse_gain_kit": tps["kit_bf16"] / tps["kit_bf16_no_reuse"], "reuse_gain_trainer": tps["trainer_fast_reuse"] / tps["trainer_fast"],
            "kit_fp32_vs_naive": tps["kit_fp32"] / tps["naive"], "kit_bf16_vs_naive": tps["kit_bf16"] / tps["naive"]}


def fit_head(model: nn.Module, tok, df) -> None:
    "Fit the mean-pooled model's head to `df` (logistic regression on its frozen sentence vectors), so it predicts something."
    from ft_kit.models import sentence_vectors
    from ft_kit.peft_methods import fit_logistic
    with torch.no_grad():
        X, y = zip(*[(sentence_vectors(model.base_model, b["input_ids"], b["attention_mask"]), b["labels"])
                     for b in make_loader(df, tok, batch_size=64)])
    model.classifier.load_state_dict(fit_logistic(torch.cat(X), torch.cat(y), model.config.num_labels).state_dict())


def bench_inference(device, df, n: int = 512) -> dict:
    """`predict` on n validation snippets in fp32 and in bf16, alternated, medians; the largest probability difference
    and the share of equal predictions, from a head fitted on `df` (a fresh head's probabilities all sit near 0.5)."""
    m, tok = load_encoder(device=device, pooling="auto")  # the mean-pooled head, as MiniLM was trained
    val = load_splits()["validation"][:n]; dl = make_loader(val, tok, batch_size=64)
    fit_head(m, tok, df)
    predict(m, dl)  # warm-up
    def one(p):
        t = time.perf_counter(); probs = predict(m, dl, p); return {"seconds": time.perf_counter() - t, "probs": probs}
    runs = alternated({"fp32": lambda: one("fp32"), "bf16": lambda: one("bf16")}, ROUNDS)
    out = {k: {"seconds": sec, "snippets_per_s": n / sec} for k, sec in median_seconds(runs).items()}
    p32, p16 = runs["fp32"][0]["probs"], runs["bf16"][0]["probs"]
    labels = val["label"].to_numpy()
    return {**out, "bf16_vs_fp32": out["bf16"]["snippets_per_s"] / out["fp32"]["snippets_per_s"],
            "max_prob_diff": float(abs(p32 - p16).max()), "same_prediction": float((p32.argmax(1) == p16.argmax(1)).mean()),
            "accuracy": {"fp32": float((p32.argmax(1) == labels).mean()), "bf16": float((p16.argmax(1) == labels).mean())},
            "head": "logistic regression fitted on the training sample's frozen sentence vectors", "n": n}


def bench_frozen(df, device) -> dict:
    "Head-only training (the encoder frozen, mean-pooled head) for one epoch: recomputing the encoder, against reading it from a warm cache."
    from ft_kit.experiment import cached_bottom
    from ft_kit.peft_methods import encoder_factory, head_only
    make, store = encoder_factory(device=device), {}
    def one(cached: bool) -> dict:
        m, tok = make(0); head_only(m)
        with (cached_bottom(m, store) if cached else contextlib.nullcontext()):
            r = train(m, {"train": df}, TrainConfig(lr=3e-3, epochs=1, batch_size=BS), tok, progress=False)
        return {"seconds": r.train_time_s}
    one(True)  # fills the cache: the first epoch of the first run pays for it
    runs = alternated({"recomputed": lambda: one(False), "cached": lambda: one(True)}, ROUNDS)
    sec = median_seconds(runs)
    return {"seconds": sec, "speedup": sec["recomputed"] / sec["cached"], "n": len(df)}


def main() -> dict:
    "Measure the ceilings, the training loops and inference; print the tables; save the records."
    device = get_device()
    df = sample_balanced(load_splits()["train"], N, seed=0)
    ceilings = {"fp32": matmul_gflops(device), "bf16": matmul_gflops(device, torch.bfloat16)}
    warm, tok = load_encoder(device=device)  # warm up kernels and caches once, untimed, so no loop pays for it
    for p in ("fp32", "bf16"): train(warm, {"train": df[:2 * BS]}, TrainConfig(epochs=1, batch_size=BS, precision=p), tok, progress=False)
    del warm
    tr = bench_training(df, device, ceilings)
    print(f"{N} snippets x {EPOCHS} epoch(s), batch {BS}, device {device}, {torch.get_num_threads()} threads, "
          f"{ROUNDS} rounds alternated (medians)")
    print(f"matmul 2048x2048 ceilings: fp32 {ceilings['fp32']:.0f} GFLOP/s, bf16 {ceilings['bf16']:.0f} GFLOP/s")
    print(f"{'loop':16} {'s/epoch':>8} {'tokens/s':>9} {'padded/real':>11} {'peak MB':>8} {'GFLOP/s':>8} {'vs naive':>8}")
    for name in LOOPS:
        r = tr[name]
        print(f"{name:16} {r['seconds'] / EPOCHS:8.1f} {r['tokens_per_s']:9.0f} {r['padded_per_real']:11.2f} {r['peak_mb']:8.0f} "
              f"{r['gflops']:8.1f} {r['tokens_per_s'] / tr['naive']['tokens_per_s']:7.2f}x")
    print(f"kit bf16 / Trainer default: {tr['kit_bf16_vs_trainer_default']:.2f}x (goal >= 2.0); kit bf16 / Trainer "
          f"group_by_length+bf16: {tr['kit_bf16_vs_trainer_fast']:.2f}x (goal >= 1.15); kit bf16 / kit fp32: {tr['kit_bf16_vs_kit_fp32']:.2f}x")
    print(f"freed memory reused: the kit {tr['reuse_gain_kit']:.2f}x, Trainer {tr['reuse_gain_trainer']:.2f}x faster; kit bf16 / "
          f"Trainer group_by_length+bf16 in a process that reuses freed memory too: {tr['kit_bf16_vs_trainer_fast_reuse']:.2f}x")
    cfg = {"n_train": N, "epochs": EPOCHS, "batch_size": BS, "lr": LR, "rounds": ROUNDS, "device": str(device),
           "threads": torch.get_num_threads()}
    save_result("bench_loops", cfg, {**tr, "ceilings_gflops": ceilings}, split=("train sample", df), overwrite=True)
    inf = bench_inference(device, df)
    print(f"predict, {inf['n']} snippets: fp32 {inf['fp32']['snippets_per_s']:.0f}/s, bf16 {inf['bf16']['snippets_per_s']:.0f}/s "
          f"({inf['bf16_vs_fp32']:.2f}x); fitted head: largest probability difference {inf['max_prob_diff']:.1e}, "
          f"same class {inf['same_prediction']:.1%}, accuracy fp32 {inf['accuracy']['fp32']:.1%} bf16 {inf['accuracy']['bf16']:.1%}")
    save_result("bench_inference", cfg, inf, overwrite=True)
    fr = bench_frozen(df, device)
    print(f"head only, one epoch of {fr['n']} snippets: frozen encoder recomputed {fr['seconds']['recomputed']:.1f} s, read from the "
          f"cache {fr['seconds']['cached']:.1f} s ({fr['speedup']:.1f}x; goal >= 5x for the epochs after the first)")
    save_result("bench_frozen_cache", cfg, fr, overwrite=True)
    return {"training": tr, "inference": inf, "frozen": fr}


if __name__ == "__main__":
    main()
    from bench.prompting import main as prompting_main  # prefix-cache scorer against the naive one, fp32 and bf16
    prompting_main()
    from bench.serve_load import main as serve_main  # the service under load: requests/s, p50/p99, zero errors
    serve_main()
