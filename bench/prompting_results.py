"""The full prompting evaluation of lesson 08 (`make results`): >= 500 balanced test snippets, results in the registry.

Run: `python -m bench.prompting_results` (add `--n 40 --quick --results-dir /tmp/x` for a quick check). As in
bench/runs.py, RUNS_N=40 shrinks the run (quick grid) and writes into data/results/_test unless --results-dir is given.
Resumable: a record is reused when its evaluation split, its prompt and its demonstrations are the ones this run
would use; anything else is scored again. PROMPT_THREADS sets torch's threads (default 1 on 2 cores, where a second
job may share them).
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from dataclasses import dataclass, field

# Records written before the odd-n fix of `sample_balanced` (6f47948) lack their demonstrations' pool positions;
# for an even k the draw did not change, so they are reused; an odd k is scored again.
_DRAW_UNCHANGED = lambda k: k % 2 == 0


def _reusable(old: dict | None, split: dict, config: dict, demos: list | None) -> bool:
    "Whether a saved record was made on this split, with this prompt and these demonstrations."
    if not old or (old.get("split") or {}).get("hash") != split["hash"]: return False
    same = lambda k, v: old.get("config", {}).get(k) == (list(v) if isinstance(v, tuple) else v)
    if not all(same(k, v) for k, v in config.items()): return False
    if demos is None or old.get("demos") == demos: return True
    return "demos" not in old and _DRAW_UNCHANGED(len(demos))


@dataclass
class Grid:
    "What every scored prompt of one run shares: the model, the evaluation snippets, the pool, the registry folder."
    model: object  # the causal LM
    tok: object  # its tokenizer
    ev: object  # the balanced evaluation snippets (text, label)
    pool: object  # the labelled snippets demonstrations come from, with their position `pos`
    results_dir: str | None  # where records go
    scored: list = field(default_factory=list)  # names of the records scored (not reused) in this run

    def __post_init__(self):
        from ft_kit.results import describe_split
        self.y, self.texts = self.ev["label"].to_numpy(), list(self.ev["text"])
        self.split = describe_split("test", self.ev)

    def todo(self, name: str, config: dict, demos: list | None = None) -> bool:
        "True when `name` must be scored (no reusable record)."
        from ft_kit.results import find_result
        if _reusable(find_result(name, self.results_dir), self.split, config, demos): return False
        print(f"  scoring {name}", flush=True); return True

    def save(self, name: str, config: dict, s, t: float | None, cf=None, **extra) -> None:
        "Metrics of scores `s` (and content-free scores `cf`) raw and after both calibrations, saved as a record."
        from ft_kit.prompting import class_probs, contextual_calibration, evaluate_scores, prior_correction
        from ft_kit.results import save_result
        m = evaluate_scores(self.y, s)
        m["prior_corrected_accuracy"] = evaluate_scores(self.y, prior_correction(s))["accuracy"]
        if cf is not None:
            cal = evaluate_scores(self.y, contextual_calibration(s, cf))
            m.update(calibrated_accuracy=cal["accuracy"], calibrated_pred_share=cal["pred_share"],
                     cf_pos_share=float(class_probs(cf)[:, 1].mean()))  # the bias contextual calibration removes
        m["mean_pos_prob"] = float(class_probs(s)[:, 1].mean())  # the bias batch calibration removes (on these inputs)
        save_result(name, config, m, self.split, self.results_dir, True,
                    latency_s=None if t is None else t / len(self.texts), **extra)
        self.scored.append(name)

    def score(self, setup, demos=None) -> tuple:
        "(scores of the evaluation snippets, seconds, scores of the content-free inputs) for one prompt."
        from ft_kit.prompting import CONTENT_FREE, score_texts
        t = time.time(); s = score_texts(self.model, self.tok, setup, self.texts, demos)
        return s, time.time() - t, score_texts(self.model, self.tok, setup, list(CONTENT_FREE), demos)


def zero_shot(g: Grid) -> None:
    "Four zero-shot prompts: two wordings of the label words, a two-word verbalizer, the chat template."
    from ft_kit.prompting import PromptSetup
    chat = PromptSetup(template="Review: {text}\nSentiment (positive or negative):", words=("negative", "positive"),
                       instruction="Classify the sentiment of the movie review.", chat=True)
    setups = {"raw": PromptSetup(), "raw_bad_good": PromptSetup(words=(" bad", " good")),
              "raw_thumbs": PromptSetup(words=(" thumbs down", " thumbs up")), "chat": chat}
    for name, setup in setups.items():
        config = {**vars(setup), "n_train": 0}
        if g.todo(f"prompting_zero_{name}", config):
            s, t, cf = g.score(setup)
            g.save(f"prompting_zero_{name}", config, s, t, cf)


def few_shot(g: Grid, ks: tuple, seeds: tuple) -> None:
    "Every (k, strategy, draw), seed-major, so that an interrupted run has every k for its first draws."
    from ft_kit.prompting import PromptSetup, choose_demos
    setup = PromptSetup()
    for seed in seeds:
        for k in [k for k in ks if k > 0]:
            for how in ("random", "balanced"):
                demos = choose_demos(g.pool, k, how, seed)
                name, config = f"prompting_icl_k{k}_{how}_s{seed}", {**vars(setup), "k": k, "strategy": how, "seed": seed,
                                                                      "n_train": k}
                if not g.todo(name, config, demos["pos"].tolist()): continue
                s, t, cf = g.score(setup, demos)
                g.save(name, config, s, t, cf, last_label=int(demos["label"].iloc[-1]), demos=demos["pos"].tolist(),
                       demo_labels=demos["label"].tolist())


def similar_and_probes(g: Grid, similar_ks: tuple) -> None:
    "Nearest-neighbour demonstrations (no shared prefix: slow) and the linear probe on the same embeddings."
    import torch
    from sklearn.linear_model import LogisticRegression
    from ft_kit.data import sample_balanced
    from ft_kit.models import load_encoder
    from ft_kit.prompting import PromptSetup, embed_texts, nearest_demos, score_texts
    encoder, etok = load_encoder()
    pool_emb, ev_emb, setup = embed_texts(encoder, etok, list(g.pool["text"])), embed_texts(encoder, etok, g.texts), \
        PromptSetup()
    for k in similar_ks:
        config = {**vars(setup), "k": k, "strategy": "similar", "n_train": k}
        if not g.todo(f"prompting_icl_k{k}_similar", config): continue
        near, t = nearest_demos(ev_emb, pool_emb, k), time.time()
        s = torch.cat([score_texts(g.model, g.tok, setup, [x], g.pool.iloc[i.tolist()]) for x, i in zip(g.texts, near)])
        g.save(f"prompting_icl_k{k}_similar", config, s, time.time() - t)
    for m in sorted({m for m in (4, 8, 16, 32, 64, 128, len(g.pool)) if m <= len(g.pool)}):
        config = {"model": "all-MiniLM-L6-v2 mean-pooled", "C": 10, "n_train": m}
        if not g.todo(f"prompting_probe_n{m}", config): continue
        idx, t = sample_balanced(g.pool, m, 0)["pos"].to_numpy().copy(), time.time()
        clf = LogisticRegression(max_iter=1000, C=10).fit(pool_emb[idx].numpy(), g.pool["label"].to_numpy()[idx])
        fit_s = time.time() - t
        scores = torch.tensor(clf.predict_log_proba(ev_emb.numpy()))
        g.save(f"prompting_probe_n{m}", config, scores, None, train_time_s=fit_s)


def run_full(n: int = 500,  # balanced test snippets
             ks: tuple = (0, 1, 2, 4, 8, 16),  # numbers of demonstrations
             seeds: tuple = (0, 1, 2, 3, 4),  # demonstration draws (choice and order) per (k, strategy)
             similar_ks: tuple = (2, 8),  # k values also run with nearest-neighbour demonstrations
             n_pool: int = 200,  # training snippets demonstrations are drawn from
             results_dir: str | None = None,  # default: the registry's folder (data/results)
            ) -> list:  # names of the records scored in this run (reused ones are not listed)
    "Zero-shot prompts, the few-shot grid (random/balanced/similar) with two calibrations, the probe: `prompting_*`."
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    import torch
    torch.set_num_threads(int(os.environ.get("PROMPT_THREADS", 1 if (os.cpu_count() or 1) <= 2 else os.cpu_count())))
    from ft_kit.data import load_splits, sample_balanced
    from ft_kit.models import load_causal_lm
    model, tok = load_causal_lm()
    splits = load_splits()
    pool = sample_balanced(splits["train"], n_pool, seed=0)
    g = Grid(model, tok, sample_balanced(splits["test"], n, seed=0), pool.assign(pos=range(len(pool))), results_dir)
    zero_shot(g); few_shot(g, ks, seeds); similar_and_probes(g, similar_ks)
    return g.scored


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500); ap.add_argument("--results-dir", default=None)
    ap.add_argument("--quick", action="store_true", help="k in (0, 2), one seed, similar at k=2: a smoke test")
    a = ap.parse_args()
    if os.environ.get("RUNS_N"):
        from ft_kit.results import committed_results_dir
        a.n, a.quick = int(os.environ["RUNS_N"]), True
        a.results_dir = a.results_dir or str(committed_results_dir() / "_test")
    kw = {"ks": (0, 2), "seeds": (0,), "similar_ks": (2,), "n_pool": 40} if a.quick else {}
    t = time.time(); done = run_full(a.n, results_dir=a.results_dir, **kw)
    print(f"scored {len(done)} records in {time.time() - t:.0f} s (the others were reused)")
