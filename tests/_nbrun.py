"""Run notebooks under nbdev's test runner one after another in this one process: `python tests/_nbrun.py OUT.json NB...`.

What `nbdev_test --path nbs/NB` does per notebook (test-mode sizes, `tst_flags` cells skipped), without starting a
new Python and importing torch and transformers again for each one. Each notebook still gets its own shell and
namespace; after each, OUT.json holds {notebook: {"ok", "seconds", "log"}} so far.
"""
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

os.environ.update(IN_TEST="1", MPLBACKEND="Agg")
from nbdev.config import get_config  # noqa: E402
from nbdev.test import test_nb  # noqa: E402


def main(out: Path, names: list[str]) -> None:
    "Test each notebook of nbs/, saving the results after each."
    cfg, results = get_config(), {}
    for name in names:
        log, t, env = io.StringIO(), time.perf_counter(), dict(os.environ)
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            ok, _ = test_nb(cfg.nbs_path / name, skip_flags=cfg.tst_flags.split(), basepath=cfg.config_path)
        os.environ.clear(); os.environ.update(env)  # a notebook's environment variables end with it
        results[name] = {"ok": bool(ok), "seconds": round(time.perf_counter() - t, 1), "log": log.getvalue()[-6000:]}
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
