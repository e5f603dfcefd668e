"""SetFit on the packaged MiniLM, lesson 08's few-shot reference among sentence encoders: `python -m bench.setfit_budget`.

SetFit (Tunstall et al. 2022; the `setfit` library) fine-tunes a sentence encoder contrastively on pairs of labelled
snippets (same label: similar, else dissimilar), then fits a logistic regression on its sentence vectors. Here the
encoder is the packaged all-MiniLM-L6-v2, loaded offline from its folder, trained on n balanced labelled snippets
(n in SF_SIZES, "8,32,64") and scored on lesson 08's 500 balanced validation and test snippets, the set every method
of the decision figure uses. Each size goes through the experiment layer's `search` (the body's learning rate on the
1-3-10 grid, on validation, seed 0; seeds 1 and 2 at the chosen rate) and validity gates (`failures`, with the
body's largest weight change); one record per run (`setfit-minilm_n<size>-lr<rate>-s<seed>`, searches
`setfit-minilm_n<size>-search`), read back on a rerun. SF_SEEDS ("0,1,2").
"""
from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from bench import _env, point_line


@dataclass
class SetFitRun:
    "One SetFit run: labelled set, the body's training, the seed."
    n_train: int  # balanced labelled snippets (data seed 0, as the other rows of the figure)
    body_lr: float  # learning rate of the encoder's contrastive fine-tuning (setfit's default: 2e-5)
    seed: int  # training seed (pair sampling, batch order, the head's fit)
    lr: float = 0.0  # the same rate under the registry's common name (set from body_lr)
    batch_size: int = 16  # pairs per step
    num_iterations: int = 10  # pairs per labelled snippet and side (setfit's default is 20; 10 fits a session's CPU time)
    num_epochs: int = 1  # passes over the pairs
    max_length: int = 64  # tokens per snippet, as every other row
    head: str = "logistic regression (scikit-learn, setfit's default)"  # the classifier on the sentence vectors

    def __post_init__(self): self.lr = self.body_lr


GRID = (3e-6, 1e-5, 3e-5, 1e-4)  # 1.5 decades around setfit's default 2e-5


def _body_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.model_body.named_parameters()}


def _probs(model, texts: list[str]) -> np.ndarray:
    return np.asarray(model.predict_proba(texts, batch_size=64, as_numpy=True), dtype=float)


def train_once(cfg: SetFitRun, train, evals: dict) -> dict:
    "Train one SetFit model and return what its record holds (metrics on validation, test, costs, weight change)."
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from ft_kit.experiment import weight_change
    from ft_kit.metrics import evaluate
    from ft_kit.models import encoder_dir
    model = SetFitModel.from_pretrained(str(encoder_dir()))
    before, tmp = _body_state(model), tempfile.mkdtemp(prefix="setfit-")  # setfit's checkpoints go to a scratch folder
    args = TrainingArguments(batch_size=cfg.batch_size, num_epochs=cfg.num_epochs, num_iterations=cfg.num_iterations,
                             body_learning_rate=cfg.body_lr, max_length=cfg.max_length, seed=cfg.seed, report_to="none",
                             output_dir=tmp, save_strategy="no")
    rows = Dataset.from_pandas(train[["text", "label"]].reset_index(drop=True))
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    t = time.perf_counter(); trainer.train(); train_s = time.perf_counter() - t
    shutil.rmtree(tmp, ignore_errors=True)
    out = {"train_time_s": train_s, "weight_change": weight_change(before, model.model_body)}
    for part, df in evals.items():
        t = time.perf_counter(); p = _probs(model, list(df["text"]))
        out["metrics" if part == "validation" else "test"] = evaluate(df["label"].to_numpy(), p)
        if part == "test": out["latency_s"] = (time.perf_counter() - t) / len(df)
    head = model.model_head  # scikit-learn's logistic regression, fitted on the sentence vectors
    body = sum(p.numel() for p in model.model_body.parameters())
    out["params"] = {"trainable": body + head.coef_.size + head.intercept_.size}
    return out


def run(cfg: SetFitRun, train, evals: dict, label: str, protocol: dict) -> dict:
    "One run's record: read back if it exists, else trained, gated and saved."
    from ft_kit.experiment import failures, run_name
    from ft_kit.results import describe_split, find_result, save_result
    name = run_name("setfit", label, cfg.seed, cfg.body_lr)
    if (old := find_result(name)) is not None: return old
    out = train_once(cfg, train, evals)
    why = failures(out["metrics"], out["weight_change"])
    save_result(name, asdict(cfg), out.pop("metrics"), ("validation", evals["validation"]), method="setfit", label=label,
                seed=cfg.seed, value=cfg.body_lr, lr=cfg.body_lr, options={}, overrides={}, protocol=protocol,
                train_split=describe_split("train", train), valid=not why, failed=why, status="ok", **out)
    return find_result(name)


def main() -> dict:
    "Every requested size: the search, the seeds, the gates, and a search record; print what each cost."
    warnings.filterwarnings("ignore")
    from ft_kit.data import load_splits, sample_balanced
    from ft_kit.experiment import search
    from ft_kit.results import save_result
    s = load_splits()
    evals = {k: sample_balanced(s[k], 500, seed=0) for k in ("validation", "test")}  # lesson 08's evaluation snippets
    seeds = tuple(int(v) for v in _env("SF_SEEDS", "0,1,2").split(","))
    out = {}
    for n in (int(v) for v in _env("SF_SIZES", "8,32,64").split(",")):
        train, label, t = sample_balanced(s["train"], n, seed=0), f"minilm_n{n}", time.perf_counter()
        protocol = {"n_train": n, "balanced": True, "data_seed": 0, "eval": "lesson 08's 500 balanced validation/test",
                    "seeds": list(seeds), "grid": list(GRID)}
        res = search(lambda v, seed: run(SetFitRun(n, v, seed), train, evals, label, protocol), GRID, seeds, widen=1)
        reasons = sorted({f for *_, r in res["tried"] for f in r})
        why = "" if res["chosen"] is not None else "every rate failed: " + "; ".join(reasons)
        save_result(f"setfit-{label}-search", {}, {}, label=label, method="setfit", options={}, grid=list(GRID),
                    description=f"SetFit (setfit), packaged MiniLM, {n} labels", chosen=res["chosen"], tried=res["tried"],
                    reason=why, protocol=protocol, tags={"n_labelled": n}, overwrite=True)
        out[n] = res
        print(point_line(n, t, res, why), flush=True)
    return out


if __name__ == "__main__":
    main()
