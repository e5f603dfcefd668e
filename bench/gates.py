"""Apply the validity gates to committed records that were written before the gates existed: `python -m bench.gates`.

Each record with validation metrics but no verdict gets `valid` and `failed` (the reasons of
`ft_kit.experiment.failures`), so that no lesson can show a failed run as a result. Records that already carry a
verdict, and majority baselines, are left as they are. Idempotent: a second run changes nothing.
"""
from __future__ import annotations

import json
import os

from ft_kit.experiment import failures
from ft_kit.results import committed_results_dir


def main() -> list[str]:
    "Mark every unjudged record; return the names of those that failed."
    failed = []
    for path in sorted(committed_results_dir().glob("*.json")):
        r = json.loads(path.read_text())
        m = r.get("metrics")
        if "valid" in r or not isinstance(m, dict) or "confusion_matrix" not in m or "majority_accuracy" not in m: continue
        if r.get("method") == "majority": continue
        reasons = failures(m, r.get("weight_change"))
        r.update(valid=not reasons, failed=reasons)
        tmp = path.with_suffix(".json.tmp"); tmp.write_text(json.dumps(r, indent=1, ensure_ascii=False) + "\n"); os.replace(tmp, path)
        if reasons: failed.append(path.stem); print(f"{path.stem}: failed: {'; '.join(reasons)}")
    return failed


if __name__ == "__main__":
    main()
