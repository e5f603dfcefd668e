"""Speed comparisons (`make bench`) and the full-size runs behind the lessons' numbers (`make results`)."""

import os
import time


def _env(name: str, default: str) -> str:
    "A setting of a bench script: the environment variable `name`, else `default`."
    return os.environ.get(name, default)


def tried_line(tried: list) -> str:
    "A search's values as one line, e.g. '3e-04: 0.824, 1e-02: 0.500 (failed)', from a search record's `tried`."
    return ", ".join(f"{v:.0e}: {a:.3f}{'' if ok else ' (failed)'}" for v, a, ok, _ in tried)


def point_line(size, # the point's training size
               started: float, # `time.perf_counter()` when the point began
               rec: dict, # its search record (chosen, tried)
               reason: str = "", # why every value failed, if one did
              ) -> str:
    "The line a budget script prints for one point: size, seconds taken, the chosen value and every value tried."
    return f"n={size}: {time.perf_counter() - started:.0f} s, chosen {rec['chosen']} [{tried_line(rec['tried'])}] {reason}"
