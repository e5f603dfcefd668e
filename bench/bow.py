"""A bag-of-words yardstick for lesson 05's label-budget grid, for `make results`: what word counts alone learn.

    python -m bench.bow        # records transferbow-n<size> (resumable: a size whose record exists is read back)

On each training sample of the transfer grid (the same class-balanced draws: `ft_kit.transfer.transfer_budget`), a
logistic regression on TF-IDF features of words and word pairs. Its inverse regularisation C is chosen on the
validation split among the values that pass the kit's gates (`ft_kit.experiment.failures`), then scored once on
the test split, as every method of the kit is. Lesson 05 sets the random start beside it
(`ft_kit.transfer.bow_comparison`). TRANSFER_SIZES ("32,128,512,2048,all") picks the sizes.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace

from bench import _env
from bench.protocol import transfer_sizes

BOW_CS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)  # inverse regularisation strengths searched on validation
BOW_FEATURES = {"ngram_range": (1, 2), "sublinear_tf": True}  # TF-IDF of words and word pairs, log-scaled counts
PREFIX = "transferbow"  # records: transferbow-n<size>


def bow_point(data: dict, # train/validation/test frames with `text` and `label`
              cs: tuple = BOW_CS, # the C values tried
             ) -> dict: # the record's fields: chosen C, validation and test metrics, every C tried, the verdict
    "Fit at every C on the training rows, choose the best valid C on validation, score it on the test split."
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from ft_kit.experiment import failures
    from ft_kit.metrics import evaluate
    t = time.perf_counter()
    vec = TfidfVectorizer(**BOW_FEATURES).fit(data["train"]["text"])
    X = {k: vec.transform(d["text"]) for k, d in data.items()}
    y = {k: d["label"].to_numpy() for k, d in data.items()}
    fits = [LogisticRegression(C=c, max_iter=5000).fit(X["train"], y["train"]) for c in cs]
    val = [evaluate(y["validation"], f.predict_proba(X["validation"])) for f in fits]
    bad = [failures(m) for m in val]
    ok = [i for i, b in enumerate(bad) if not b]
    best = max(ok or range(len(cs)), key=lambda i: val[i]["accuracy"])
    return {"C": cs[best], "metrics": val[best], "test": evaluate(y["test"], fits[best].predict_proba(X["test"])),
            "tried": [[c, m["accuracy"], not b] for c, m, b in zip(cs, val, bad)], "valid": bool(ok),
            "failed": [] if ok else bad[best], "train_time_s": time.perf_counter() - t}


def main(results_dir=None) -> list[dict]:
    "Every size of the transfer grid: its bag-of-words point, saved as transferbow-n<size> (existing records kept)."
    from ft_kit.data import load_splits
    from ft_kit.experiment import budget_data
    from ft_kit.results import find_result, save_result
    from ft_kit.transfer import transfer_budget
    budget = transfer_budget()
    splits, out = load_splits(budget.data_seed), []
    for n in transfer_sizes(_env("TRANSFER_SIZES", "32,128,512,2048,all")):
        name = f"{PREFIX}-n{'all' if n is None else n}"
        if (old := find_result(name, results_dir)) is not None: out.append(old); continue
        b = replace(budget, n_train=n)
        data = budget_data(b, splits)
        p = bow_point(data)
        save_result(name, {"model": "LogisticRegression (lbfgs)", "features": BOW_FEATURES, "C": p.pop("C"), "Cs": BOW_CS},
                    p.pop("metrics"), ("validation", data["validation"]), results_dir, method="bow", protocol=asdict(b),
                    n_labelled=len(data["train"]), **p)
        out.append(find_result(name, results_dir))
        print(f"{name}: C {out[-1]['config']['C']}, validation {out[-1]['metrics']['accuracy']:.3f}, "
              f"test {out[-1]['test']['accuracy']:.3f}{'' if p['valid'] else ' failed: ' + '; '.join(p['failed'])}", flush=True)
    return out


if __name__ == "__main__":
    main()
