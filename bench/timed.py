"""Run one `make results` script and record how long it took: `python -m bench.timed bench.runs [args...]`.

Prints the wall time at the end and saves it as the registry record `wall-<module>` (e.g. `wall-bench.runs`), with
the arguments and whether the script finished. A resumed run that skipped finished work records its own, shorter
time: the record says what the last run cost, and the per-row records of bench.protocol say what each row cost.
"""
from __future__ import annotations

import runpy
import sys
import time


def main(argv: list[str]) -> int:
    "Run the module named by argv[0] as __main__ with the remaining arguments; record and print its wall time."
    if not argv: raise SystemExit("usage: python -m bench.timed <module> [args...]")
    module, args = argv[0], argv[1:]
    sys.argv = [module, *args]
    t0, status = time.perf_counter(), "finished"
    try: runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code not in (None, 0): status = f"exited with {e.code}"; raise
    except BaseException as e: status = f"failed: {type(e).__name__}"; raise
    finally:
        secs = time.perf_counter() - t0
        from ft_kit.results import save_result
        save_result(f"wall-{module}", {"module": module, "args": args}, {}, wall_s=round(secs, 1), status=status, overwrite=True)
        print(f"{module}: {secs / 60:.1f} min ({status})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
