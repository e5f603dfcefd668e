"""Load test of `ft-kit serve` on loopback: requests/s and p50/p99 latency at a few concurrency levels, with and
without micro-batching, zero errors required. Writes `bench_serve` into the results registry.

Size: SERVE_N (requests per level, default 96), SERVE_LEVELS (concurrency levels, default "1,4,16"),
SERVE_MAX_S (time limit per level in seconds, default 60; a level that hits it stops early and says so).
With 2 or more cores the server and the load generator run pinned to different cores (`split_cores`), so that
the clients' own work does not slow the server it measures.
Run: `python -m bench.serve_load` (or from `python -m bench` once hooked in).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

N = int(os.environ.get("SERVE_N", 96))  # requests per concurrency level
LEVELS = [int(x) for x in os.environ.get("SERVE_LEVELS", "1,4,16").split(",")]  # concurrent clients
MAX_S = float(os.environ.get("SERVE_MAX_S", 60))  # time limit per level
SERVE = "from ft_kit.cli import main; raise SystemExit(main())"


def split_cores(allowed: list[int] | None = None,  # the cores this process may use; default: its affinity
               ) -> tuple[set, set]:  # (server's cores, load generator's cores): apart when there are 2 or more
    "The last allowed core for the load generator, the others for the server (one core: both share it)."
    allowed = sorted(os.sched_getaffinity(0) if allowed is None else allowed)
    return (set(allowed), set(allowed)) if len(allowed) < 2 else (set(allowed[:-1]), {allowed[-1]})


def make_model(folder: Path) -> Path:
    "The packaged encoder with a seeded, untrained head as a model folder (inference cost is what is measured)."
    import torch
    from ft_kit.deploy import ModelInfo, save_model
    from ft_kit.models import load_encoder
    torch.manual_seed(0)
    m, tok = load_encoder(device="cpu")
    return save_model(m, tok, folder / "model", ModelInfo(method="head"))


def post(port: int, text: str) -> tuple[int, float]:
    "One POST /predict on loopback: (status, seconds)."
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps({"text": text}).encode(),
                                 headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as r: r.read(); status = r.status
    except urllib.error.HTTPError as e: status = e.code
    except OSError: status = 0
    return status, time.perf_counter() - t


def start(model_dir: Path, batching: bool, cores: set) -> tuple[subprocess.Popen, int]:
    "Start the server (127.0.0.1, a free port) on `cores` and wait until /health answers."
    from ft_kit.serve import free_port
    port = free_port()
    args = [sys.executable, "-c", SERVE, "serve", str(model_dir), "--port", str(port)] + ([] if batching else ["--no-batching"])
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: os.sched_setaffinity(0, cores))  # pinned before torch picks its threads
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2): return proc, port
        except OSError: time.sleep(0.5)
    proc.kill(); raise RuntimeError("the server did not start within 120 s")


def level(port: int, texts: list[str], clients: int) -> dict:
    "Send len(texts) requests from `clients` threads; stop early at MAX_S."
    lat, errors, lock, nxt = [], 0, threading.Lock(), iter(range(len(texts)))
    t_end = time.perf_counter() + MAX_S
    def worker():
        nonlocal errors
        while time.perf_counter() < t_end:
            with lock: i = next(nxt, None)
            if i is None: return
            status, s = post(port, texts[i])
            with lock:
                lat.append(s); errors += status != 200
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    [t.start() for t in threads]; [t.join() for t in threads]
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(lat), "errors": errors, "req_per_s": len(lat) / wall,
            "p50_ms": 1000 * float(np.percentile(lat, 50)), "p99_ms": 1000 * float(np.percentile(lat, 99)),
            "hit_time_limit": len(lat) < len(texts)}


def main() -> dict:
    "Measure both modes at every level, print the table, save `bench_serve`."
    from ft_kit.data import load_splits
    from ft_kit.results import save_result
    texts = load_splits()["validation"]["text"].head(N).tolist()
    res, mine = {}, os.sched_getaffinity(0)
    server_cores, client_cores = split_cores()
    with tempfile.TemporaryDirectory() as d:
        model_dir = make_model(Path(d))
        for batching in (False, True):
            proc, port = start(model_dir, batching, server_cores)
            os.sched_setaffinity(0, client_cores)
            try:
                for _ in range(4): post(port, texts[0])  # warm-up
                res["batching" if batching else "one_by_one"] = [level(port, texts, c) for c in LEVELS]
            finally:
                os.sched_setaffinity(0, mine); proc.terminate(); proc.wait(60)
    print(f"{N} requests per level, one text each, loopback; server: MiniLM, torch, on {len(server_cores)} of "
          f"{len(mine)} cores, the clients on {'another' if server_cores != client_cores else 'the same'} core")
    print(f"{'mode':11} {'clients':>7} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for mode, rows in res.items():
        for r in rows:
            print(f"{mode:11} {r['clients']:7d} {r['req_per_s']:7.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['errors']:6d}"
                  + ("  (time limit)" if r["hit_time_limit"] else ""))
    errors = sum(r["errors"] for rows in res.values() for r in rows)
    top = max(LEVELS)
    gain = next(r for r in res["batching"] if r["clients"] == top)["req_per_s"] / next(r for r in res["one_by_one"] if r["clients"] == top)["req_per_s"]
    print(f"micro-batching at {top} clients: {gain:.2f}x the requests per second of one-by-one; errors: {errors}")
    path = save_result("bench_serve", {"requests_per_level": N, "levels": LEVELS, "max_s": MAX_S, "backend": "torch",
                                       "server_cores": len(server_cores), "pinned_apart": server_cores != client_cores},
                       {**res, "errors": errors, "batching_gain_at_max_level": gain}, overwrite=True)
    print(f"saved {path.name}")
    if errors: raise SystemExit(f"{errors} request(s) failed")
    return res


if __name__ == "__main__":
    main()
