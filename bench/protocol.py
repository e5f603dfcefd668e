"""Full-size runs of lessons 05 (transfer) and 07 (one protocol, every method), for `make results`.

    python -m bench.protocol                 # both parts
    python -m bench.protocol protocol        # only the PEFT protocol   (records peft-<label>-lr<rate>-s<seed>, peft-<label>-search)
    python -m bench.protocol transfer        # only the label-budget grid (records transfer-<start>-n<size>-lr<rate>-s<seed>, -search)

Every row of the protocol is a learning-rate search on validation (first seed) followed by the other seeds at the
chosen rate (`ft_kit.experiment.search`); every run is gated (`ft_kit.experiment.failures`). Rows run in the order
of ROWS, each in a fresh spawned process (so each record's `peak_memory_mb` is that method's alone). The script is
resumable: a run whose record exists is read back, not trained again, so a rerun continues where it stopped.
Its wall time per row is recorded in `<prefix>-wall_time`. Sizes can be changed without editing the file:
PROTOCOL_N_TRAIN (training snippets, default 4000; 0 = all), PROTOCOL_EPOCHS (2), PROTOCOL_SEEDS ("0,1,2"),
PROTOCOL_ROWS (comma-separated labels to run, default all), PROTOCOL_SCALE (e.g. 0.02 for a quick timed check: scales
the training sample and the evaluation splits and writes under the prefixes "peftscaled" and "transferscaled"),
TRANSFER_SIZES ("32,128,512,2048,all"), TRANSFER_KINDS ("pretrained,random"). The transfer grid goes through the same
search, seeds and gates (`ft_kit.transfer.transfer_point`); its wall time per point is in `transfer-wall_time`.
"""
from __future__ import annotations

import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from bench import _env, tried_line

LORA_QV = ("query", "value")
# (label, method, options), most important first: a run cut short by the session still has the main rows
# a fourth element changes the budget for that row: head_cls is the head on BERT's [CLS] pooler instead of mean pooling
ROWS = [("majority", "majority", {}), ("probe", "probe", {}), ("head", "head", {}), ("head_cls", "head", {}, {"pooling": "cls"}),
        ("full", "full", {}),
        ("lora", "lora", {}), ("bitfit", "bitfit", {}), ("peft_adalora", "peft_adalora", {}), ("peft_prefix", "peft_prefix", {}),
        ("peft_prompt", "peft_prompt", {}), ("peft_ia3", "peft_ia3", {}), ("last2", "last2", {}),
        ("dora", "peft_lora", {"use_dora": True}), ("rslora", "peft_lora", {"use_rslora": True}),
        ("lora_all", "peft_lora", {"target_modules": "all-linear"}), ("last1", "last1", {})]
# the rank sweep: alpha = 2r (scale 2 at every rank) against a fixed alpha = 16 (scale 16 / r)
RANKS = [("lora_r1", "lora", {"r": 1, "alpha": 2}), ("lora_r1_a16", "lora", {"r": 1, "alpha": 16}),
         ("lora_r4", "lora", {"r": 4, "alpha": 8}), ("lora_r4_a16", "lora", {"r": 4, "alpha": 16}),
         ("lora_r16", "lora", {"r": 16, "alpha": 32}), ("lora_r16_a16", "lora", {"r": 16, "alpha": 16}),
         ("lora_r64", "lora", {"r": 64, "alpha": 128}), ("lora_r64_a16", "lora", {"r": 64, "alpha": 16})]


def protocol_budget():
    "The full-size protocol budget, with the environment's overrides; and its record prefix."
    from ft_kit.peft_methods import protocol_budget as base
    scale = float(_env("PROTOCOL_SCALE", "1"))
    n = int(_env("PROTOCOL_N_TRAIN", "4000")) or None
    b = base(n_train=max(32, round(n * scale)) if n and scale < 1 else n, n_eval=None if scale >= 1 else max(32, round(1215 * scale)),
             epochs=int(_env("PROTOCOL_EPOCHS", "2")), seeds=tuple(int(s) for s in _env("PROTOCOL_SEEDS", "0,1,2").split(",")))
    return b, "peft" if scale >= 1 else "peftscaled"


def _child(spec) -> tuple[dict, float]:
    "Run one row (search and seeds) in this fresh process; return its search record and the seconds taken."
    import warnings
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error(); hf_logging.disable_progress_bar()
    from ft_kit.peft_methods import run_protocol
    from dataclasses import replace
    t = time.perf_counter()
    budget, prefix = protocol_budget()
    budget = replace(budget, **(spec[3] if len(spec) > 3 else {}))
    return run_protocol([spec[:3]], budget, prefix=prefix)[0], time.perf_counter() - t


def _save_wall(prefix: str, walls: dict, total: float) -> None:
    "Record the wall time of each row and in all (merged with what earlier, resumed runs recorded)."
    from ft_kit.results import find_result, save_result
    old = (find_result(f"{prefix}-wall_time") or {}).get("rows", {})
    save_result(f"{prefix}-wall_time", {}, {}, rows={**old, **walls}, last_run_s=total, overwrite=True)


def run_protocol_part() -> float:
    "Every row of lesson 07 at full size, one spawned process per row; returns the seconds taken."
    budget, prefix = protocol_budget()
    want = [r for r in _env("PROTOCOL_ROWS", "").split(",") if r]
    rows = [r for r in ROWS + RANKS if not want or r[0] in want]
    print(f"protocol: {len(rows)} rows, training sample {budget.n_train or 'all'}, {budget.epochs} epochs, seeds {budget.seeds}, "
          f"precision {budget.precision}, prefix {prefix!r}", flush=True)
    ctx, t0, walls = mp.get_context("spawn"), time.perf_counter(), {}
    for spec in rows:
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
                rec, secs = ex.submit(_child, spec).result()
        except Exception as e:  # one broken row must not stop the others: say so and go on
            print(f"  {spec[0]:14} FAILED TO RUN: {type(e).__name__}: {e}", flush=True); continue
        walls[spec[0]] = secs
        _save_wall(prefix, walls, time.perf_counter() - t0)
        tried = tried_line(rec["tried"])
        print(f"  {spec[0]:14} {secs:7.0f} s  chosen {rec['chosen']}  [{tried}] {rec.get('reason', '')}", flush=True)
    return time.perf_counter() - t0


def transfer_sizes(text: str, # e.g. "32,128,all", the value of TRANSFER_SIZES
                  ) -> tuple: # the sizes, None for 'all'
    "The transfer grid's sizes from TRANSFER_SIZES, or a message that says what the setting should look like."
    try: sizes = tuple(None if s.strip() == "all" else int(s) for s in text.split(","))
    except ValueError: sizes = (0,)
    if any(n is not None and n < 1 for n in sizes):
        raise SystemExit(f"TRANSFER_SIZES={text!r}: give comma-separated numbers of labelled examples (at least 1) or 'all', "
                         "e.g. TRANSFER_SIZES=32,128,all")
    return sizes


def transfer_config():
    "The label-budget grid of lesson 05 with the environment's overrides (PROTOCOL_SCALE, TRANSFER_SIZES, TRANSFER_KINDS)."
    from dataclasses import replace
    from ft_kit.transfer import TransferConfig, transfer_budget
    scale = float(_env("PROTOCOL_SCALE", "1"))
    tc = TransferConfig(sizes=transfer_sizes(_env("TRANSFER_SIZES", "32,128,512,2048,all")), kinds=tuple(_env("TRANSFER_KINDS", "pretrained,random").split(",")))
    if scale < 1:
        tc = replace(tc, sizes=(32, 128), prefix="transferscaled",
                     budget=transfer_budget(n_eval=max(32, round(1215 * scale)), min_steps=10))
    return tc


def run_transfer_part() -> float:
    "Both starts of lesson 05 on every size, each point a learning-rate search and 3 seeds; returns the seconds taken."
    from ft_kit.data import load_splits
    from ft_kit.models import load_encoder
    from ft_kit.transfer import start_factory, transfer_point
    tc = transfer_config()
    print(f"transfer: sizes {tc.sizes}, starts {tc.kinds}, grids {tc.grids}, seeds {tc.budget.seeds}, prefix {tc.prefix!r}", flush=True)
    base, tok = load_encoder(pooling=tc.budget.pooling); splits = load_splits(tc.budget.data_seed)
    makes = {k: start_factory(k, base, tok) for k in tc.kinds}
    t0, walls = time.perf_counter(), {}
    for n in tc.sizes:
        for k in tc.kinds:
            t = time.perf_counter()
            rec = transfer_point(k, n, makes[k], splits, tc)
            walls[rec["label"]] = time.perf_counter() - t
            _save_wall(tc.prefix, walls, time.perf_counter() - t0)
            tried = tried_line(rec["tried"])
            print(f"  {rec['label']:16} {walls[rec['label']]:7.0f} s  chosen {rec['chosen']}  [{tried}] {rec['reason']}", flush=True)
    return time.perf_counter() - t0


def main(parts: list[str] | None = None) -> dict:
    "Run the requested parts ('protocol', 'transfer'; default both) and print what each cost."
    parts = parts or ["protocol", "transfer"]
    if bad := [p for p in parts if p not in ("protocol", "transfer")]:
        raise SystemExit(f"unknown part(s) {bad}: use protocol and/or transfer")
    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    cost = {}
    if "protocol" in parts: cost["protocol_s"] = run_protocol_part()
    if "transfer" in parts: cost["transfer_s"] = run_transfer_part()
    print("; ".join(f"{k[:-2]} {v / 60:.1f} min" for k, v in cost.items()), flush=True)
    return cost


if __name__ == "__main__":
    main(sys.argv[1:])
