"""ft_kit.metrics against scikit-learn (hypothesis-generated labels) and hand-computed closed forms."""
import subprocess
import sys

import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings, strategies as st
from sklearn.dummy import DummyClassifier

from ft_kit import metrics as M


@st.composite
def label_pairs(draw, max_classes=4):
    "(labels, preds, C): equal-length integer arrays in 0..C-1, often with classes never predicted or absent."
    C = draw(st.integers(2, max_classes))
    n = draw(st.integers(1, 40))
    y = draw(st.lists(st.integers(0, C - 1), min_size=n, max_size=n))
    p = draw(st.lists(st.integers(0, C - 1), min_size=n, max_size=n))
    return np.array(y), np.array(p), C


@settings(max_examples=100, deadline=None)
@given(label_pairs())
def test_counts_match_sklearn(data):
    y, p, C = data
    labels = list(range(C))
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p))
    np.testing.assert_array_equal(M.confusion_matrix(y, p, C), skm.confusion_matrix(y, p, labels=labels))
    got = M.precision_recall_f1(y, p, average="macro", num_classes=C)
    want = skm.precision_recall_fscore_support(y, p, labels=labels, average="macro", zero_division=0)
    assert [got["precision"], got["recall"], got["f1"]] == pytest.approx(list(want[:3]))
    per = M.precision_recall_f1(y, p, average=None, num_classes=C)
    want = skm.precision_recall_fscore_support(y, p, labels=labels, average=None, zero_division=0)
    for k, w in zip(("precision", "recall", "f1"), want[:3]): np.testing.assert_allclose(per[k], w)


@settings(max_examples=100, deadline=None)
@given(label_pairs(max_classes=2), st.integers(0, 1))
def test_binary_matches_sklearn(data, pos):
    y, p, _ = data
    got = M.precision_recall_f1(y, p, average="binary", pos_label=pos, num_classes=2)
    want = skm.precision_recall_fscore_support(y, p, labels=[0, 1], average="binary", pos_label=pos, zero_division=0)
    assert [got["precision"], got["recall"], got["f1"]] == pytest.approx(list(want[:3]))


@settings(max_examples=100, deadline=None)
@given(label_pairs(), st.lists(st.integers(0, 3), min_size=1, max_size=30))
def test_majority_baseline_matches_dummy(data, train):
    y, _, C = data
    train = np.array(train) % C
    dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(train), 1)), train)
    got = M.majority_baseline(y, train, num_classes=C)
    assert got["majority_class"] == dummy.predict([[0]])[0]
    assert got["majority_accuracy"] == pytest.approx(dummy.score(np.zeros((len(y), 1)), y))
    want_f1 = skm.f1_score(y, np.full_like(y, got["majority_class"]), labels=list(range(C)), average="macro", zero_division=0)
    assert got["majority_macro_f1"] == pytest.approx(want_f1)


def test_class_never_predicted_is_zero_not_nan():
    "zero_division=0: precision of a class never predicted is 0, as in scikit-learn."
    y, p = [0, 1, 1, 2], [0, 0, 0, 0]
    per = M.precision_recall_f1(y, p, average=None, num_classes=3)
    assert per["precision"].tolist() == [0.25, 0.0, 0.0] and per["f1"][1:].tolist() == [0.0, 0.0]
    # a class absent from both labels and predictions still counts in the macro mean (with 0)
    m = M.precision_recall_f1([0, 0], [0, 0], average="macro", num_classes=2)
    assert m == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert m["f1"] == pytest.approx(skm.f1_score([0, 0], [0, 0], labels=[0, 1], average="macro", zero_division=0))


def test_ece_closed_form_by_hand():
    """3 bins on [0, 1]: (0, 1/3], (1/3, 2/3], (2/3, 1].
    Three-class probs with confidences 0.9, 0.8 (bin 3), 0.5, 0.4 (bin 2); right, wrong, right, wrong.
    bin 3: acc 1/2, conf 0.85 -> gap 0.35; bin 2: acc 1/2, conf 0.45 -> gap 0.05.
    ECE = 2/4 * 0.35 + 2/4 * 0.05 = 0.2."""
    probs = [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.4, 0.3, 0.3]]
    labels = [0, 0, 2, 1]
    assert M.expected_calibration_error(labels, probs, n_bins=3) == pytest.approx(0.2)
    t = M.reliability_bins(labels, probs, n_bins=3)
    assert t["count"].tolist() == [0, 2, 2]
    assert t["confidence"].iloc[1:].tolist() == pytest.approx([0.45, 0.85])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 60), st.integers(0, 2**31 - 1), st.integers(1, 15))
def test_ece_matches_direct_loop(n, seed, n_bins):
    "ECE equals a plain loop over bins (independent of the vectorised code)."
    r = np.random.default_rng(seed)
    probs = r.dirichlet(np.ones(3), n)
    y = r.integers(0, 3, n)
    conf, correct = probs.max(1), probs.argmax(1) == y
    ece = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inb = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if inb.any(): ece += inb.mean() * abs(correct[inb].mean() - conf[inb].mean())
    assert M.expected_calibration_error(y, probs, n_bins) == pytest.approx(ece, abs=1e-12)


def test_evaluate_matches_sklearn_and_accepts_torch():
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(0)
    y = r.integers(0, 2, 200)
    logits = torch.tensor(r.normal(size=(200, 2)) + np.stack([1 - y, y], 1), dtype=torch.float32)
    ev = M.evaluate(torch.tensor(y), logits.softmax(-1))
    pred = logits.argmax(-1).numpy()
    assert ev["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert ev["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert ev["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert ev["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert ev["majority_accuracy"] == pytest.approx(max(np.mean(y), 1 - np.mean(y)))


@pytest.mark.parametrize("call, msg", [
    (lambda: M.evaluate([0, 1, 1], [0.1, 0.9]), "`labels` has 3 entries but `probs` has 2 rows"),
    (lambda: M.evaluate([0, 1], [[0.5, 0.6], [0.1, 0.9]]), "must sum to 1"),
    (lambda: M.evaluate([0, 1], [[3.0, -1.0], [0.1, 0.9]]), "not logits"),
    (lambda: M.evaluate([0, 3], [[0.5, 0.5], [0.1, 0.9]]), "out of range"),
    (lambda: M.evaluate([0, -1], [0.5, 0.5]), "out of range"),
    (lambda: M.accuracy([0, 1], [1]), "`labels` has 2 entries but `preds` has 1"),
    (lambda: M.accuracy([0.5, 1], [1, 1]), "integer class indices"),
    (lambda: M.evaluate([], []), "empty"),
    (lambda: M.evaluate([0, 1], [[np.nan, 1.0], [0.1, 0.9]]), "NaN"),
])
def test_bad_input_is_explained(call, msg):
    with pytest.raises((ValueError, TypeError), match=msg.replace("(", r"\(").replace("`", "`")):
        call()


def test_module_does_not_import_sklearn():
    code = "import sys, ft_kit.metrics; assert 'sklearn' not in sys.modules and 'torch' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_ece_bin_edges_are_closed_on_the_right():
    """A confidence on a bin edge belongs to the bin below: bins are (lo, hi].
    y=[1,1]; confidences 0.5 (argmax 0: wrong) in (0.4, 0.5], 0.55 (right) in (0.5, 0.6]:
    ECE = 1/2 * |0 - 0.5| + 1/2 * |1 - 0.55| = 0.475 (half-open [lo, hi) bins would give 1/2 * 2 * |0.5 - 0.525| = 0.025)."""
    y, p = [1, 1], [[0.5, 0.5], [0.45, 0.55]]
    assert M.expected_calibration_error(y, p) == pytest.approx(0.475)
    t = M.reliability_bins(y, p)
    assert t.loc[4, "count"] == 1 and t.loc[5, "count"] == 1 and t.loc[4, "upper"] == pytest.approx(0.5)
    assert M.expected_calibration_error([0], [[1.0, 0.0]]) == 0.0  # confidence 1 falls in the last bin, (0.9, 1]
