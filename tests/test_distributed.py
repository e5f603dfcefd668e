"""Two CPU processes (gloo, started by `accelerate launch`) against one: the same global batch gives the same
training as the one-process loop of ft_kit.train, and only the main process writes checkpoints and results.

Run as a script, this file is the worker that every launched process executes: `python tests/test_distributed.py OUT`.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from _tiny import items, tiny_bert
from ft_kit.data import collate_batch
from ft_kit.train import TrainConfig, train

CFG = dict(lr=3e-3, epochs=2, batch_size=8, warmup_steps=1, seed=0, device="cpu")  # global batch 8: 4 per process


def data() -> dict:
    "32 shuffled training items (seeded generator: the same order in every run) and 16 validation items."
    return {"train": DataLoader(items(32, 1), batch_size=8, shuffle=True, generator=torch.Generator(),
                                collate_fn=collate_batch),
            "validation": DataLoader(items(16, 2), batch_size=8, collate_fn=collate_batch)}


def worker(out: Path) -> None:
    "One launched process: train with distributed_train, each rank pointed at its own checkpoint and results folders."
    torch.set_num_threads(1)
    from ft_kit.distributed import distributed_train, make_accelerator
    acc = make_accelerator("cpu")
    rank = acc.process_index
    os.environ["FT_KIT_RESULTS_DIR"] = str(out / f"results_rank{rank}")  # a rank that writes shows up here
    model = tiny_bert(dropout=0.0)
    res = distributed_train(model, data(), TrainConfig(**CFG, output_dir=str(out / f"ckpt_rank{rank}")),
                            progress=False, record="tiny_ddp", accelerator=acc)
    (out / "final").mkdir(exist_ok=True)
    torch.save({"weights": model.state_dict(), "losses": [h["loss"] for h in res.history["train"]], "best": res.best,
                "steps": res.steps, "tokens": res.tokens, "world": acc.num_processes}, out / "final" / f"rank{rank}.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def launch(out: Path, root: Path) -> subprocess.CompletedProcess:
    "`accelerate launch` two CPU processes (gloo) running `worker` on a fresh port; the log goes to out/launch.log."
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("IN_TEST", None)  # the registry must refuse a second write, not overwrite it quietly
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--num_cpu_threads_per_process", "1", "--main_process_port", str(free_port()), __file__, str(out)]
    p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=240)
    (out / "launch.log").write_text(p.stdout + p.stderr)
    return p


def test_two_processes_match_one(tmp_path, root):
    p = launch(tmp_path, root)
    if p.returncode and "address already in use" in (p.stdout + p.stderr).lower():  # the free port was taken meanwhile
        p = launch(tmp_path, root)
    errors = [l for l in (p.stdout + p.stderr).splitlines() if "Error" in l or "error:" in l]
    assert p.returncode == 0, "\n".join(errors[:20]) + "\n...\n" + p.stderr[-3000:]

    # the single-process reference: ft_kit.train.train, same model, data, order and global batch
    torch.set_num_threads(1)
    ref_model = tiny_bert(dropout=0.0)
    ref = train(ref_model, data(), TrainConfig(**CFG), progress=False)

    r0, r1 = (torch.load(tmp_path / "final" / f"rank{k}.pt", weights_only=False) for k in (0, 1))
    assert r0["world"] == 2 and r0["steps"] == ref.steps == 8
    for k, v in ref_model.state_dict().items():  # both processes end with the one-process weights
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k
        torch.testing.assert_close(r0["weights"][k], v, atol=2e-5, rtol=1e-4, msg=k)
    torch.testing.assert_close(torch.tensor(r0["losses"]), torch.tensor([h["loss"] for h in ref.history["train"]]),
                               atol=1e-5, rtol=1e-5)  # logged loss = mean over the global batch
    assert r0["tokens"] == ref.tokens  # tokens summed over both processes
    assert abs(r0["best"]["loss"] - ref.best["loss"]) < 1e-5 and r0["best"]["accuracy"] == ref.best["accuracy"]
    assert r1["best"] == r0["best"]  # gathered metrics: the same on both processes

    files = lambda d: sorted(p.name for p in d.rglob("*") if p.is_file()) if d.exists() else []
    assert files(tmp_path / "ckpt_rank0") == ["best.pt", "last.pt"]
    assert files(tmp_path / "ckpt_rank1") == []  # the other process wrote no checkpoint
    assert files(tmp_path / "results_rank0") == ["tiny_ddp.json"]
    assert files(tmp_path / "results_rank1") == []  # ... and no result
    rec = json.loads((tmp_path / "results_rank0" / "tiny_ddp.json").read_text())
    assert rec["distributed"]["num_processes"] == 2 and rec["distributed"]["backend"] == "gloo"


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
