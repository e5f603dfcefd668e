"""Run one `make results` script and record how long it took: `python -m bench.timed bench.runs [args...]`.

Prints the wall time at the end and saves it as the registry record `wall-<module>` (e.g. `wall-bench.runs`), with
the arguments and whether the script finished. The environment settings the module reads (`PT_SIZES`, `LB_MODEL`,
...) that are set go into the name and the config: `LB_MODEL=smollm2-head` records
`wall-bench.label_budget-LB_MODEL_smollm2-head`, so one script run with two settings keeps two records. A resumed
run that skipped finished work records its own, shorter time: the record says what the last run cost, and the
per-row records of bench.protocol say what each row cost.
"""
from __future__ import annotations

import importlib.util
import os
import re
import runpy
import sys
import time

ENV_READ = re.compile(r"""(?:environ\.get|environ\[|_env)\(?\s*["']([A-Z0-9_]+)["']""")  # how scripts read settings
NOT_SETTINGS = {"FT_KIT_RESULTS_DIR"}  # read by scripts, but says where records go, not what ran


def env_settings(module: str, # a module name, e.g. 'bench.label_budget'
                 environ: dict | None = None, # default: os.environ
                ) -> dict[str, str]: # the settings the module's source reads that are set, sorted by name
    "The environment settings a script reads (found in its source) that are set now."
    environ = os.environ if environ is None else environ
    spec = importlib.util.find_spec(module)
    source = open(spec.origin).read() if spec and spec.origin else ""
    keys = sorted(set(ENV_READ.findall(source)) - NOT_SETTINGS)
    return {k: environ[k] for k in keys if environ.get(k)}


def wall_name(module: str, # the module run
              env: dict[str, str], # its settings (`env_settings`)
             ) -> str: # the registry name of its wall-time record
    "`wall-<module>`, then `-<KEY>_<value>` for each setting, so runs with different settings keep separate records."
    return "-".join([f"wall-{module}", *(f"{k}_{v}" for k, v in env.items())])


def main(argv: list[str]) -> int:
    "Run the module named by argv[0] as __main__ with the remaining arguments; record and print its wall time."
    if not argv: raise SystemExit("usage: python -m bench.timed <module> [args...]")
    module, args = argv[0], argv[1:]
    env = env_settings(module)
    sys.argv = [module, *args]
    t0, status = time.perf_counter(), "finished"
    try: runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code not in (None, 0): status = f"exited with {e.code}"; raise
    except BaseException as e: status = f"failed: {type(e).__name__}"; raise
    finally:
        secs = time.perf_counter() - t0
        from ft_kit.results import save_result
        save_result(wall_name(module, env), {"module": module, "args": args, "env": env}, {}, wall_s=round(secs, 1),
                    status=status, overwrite=True)
        print(f"{module}: {secs / 60:.1f} min ({status})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
