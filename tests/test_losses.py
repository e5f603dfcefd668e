"""ft_kit.losses against torch.nn.functional: property tests (hypothesis), extremes, bad input, gradcheck."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from ft_kit.losses import (bce_with_logits, binary_cross_entropy, cross_entropy, cross_entropy_grad, entropy,
                           kl_divergence, log_softmax, naive_bce_with_logits, naive_softmax, perplexity, sigmoid,
                           smooth_targets, softmax, softplus)

TOL = 1e-10
FAST = settings(max_examples=60, deadline=None)


def _randn(seed, *shape, scale=1.0):
    "A float64 tensor of normal draws from its own generator."
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _close(a, b, tol=TOL):
    "Elementwise |a - b| <= tol, NaNs in the same places."
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.equal(a.isnan(), b.isnan()), (a, b)
    m = ~a.isnan()
    assert torch.allclose(a[m], b[m], atol=tol, rtol=0), (a, b)


seeds = st.integers(0, 2**31 - 1)
scales = st.sampled_from([0.1, 1.0, 5.0, 30.0])
reductions = st.sampled_from(["mean", "sum", "none"])


@FAST
@given(seed=seeds, n=st.integers(1, 20), scale=scales)
def test_sigmoid_softplus_log_softmax_match_torch(seed, n, scale):
    z = _randn(seed, n, 4, scale=scale)
    _close(sigmoid(z), torch.sigmoid(z))
    _close(softplus(z), F.softplus(z, threshold=500))  # torch returns z itself above its default threshold 20
    _close(log_softmax(z), F.log_softmax(z, -1))
    _close(log_softmax(z, dim=0), F.log_softmax(z, 0))
    _close(softmax(z, temperature=0.7), F.softmax(z / 0.7, -1))


@FAST
@given(seed=seeds, n=st.integers(1, 20), reduction=reductions)
def test_bce_matches_torch(seed, n, reduction):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, generator=g, dtype=torch.float64)
    y = torch.rand(n, generator=g, dtype=torch.float64)  # soft targets too
    _close(binary_cross_entropy(p, y, reduction), F.binary_cross_entropy(p, y, reduction=reduction))


@FAST
@given(seed=seeds, n=st.integers(1, 20), scale=scales, reduction=reductions)
def test_bce_with_logits_matches_torch(seed, n, scale, reduction):
    z = _randn(seed, n, scale=scale)
    y = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed)).double()
    _close(bce_with_logits(z, y, reduction), F.binary_cross_entropy_with_logits(z, y, reduction=reduction))


@FAST
@given(seed=seeds, n=st.integers(1, 16), c=st.integers(2, 7), scale=scales, reduction=reductions,
       weighted=st.booleans(), eps=st.sampled_from([0.0, 0.1, 0.5, 1.0]), n_ignored=st.integers(0, 3))
def test_cross_entropy_indices_match_torch(seed, n, c, scale, reduction, weighted, eps, n_ignored):
    g = torch.Generator().manual_seed(seed)
    z = _randn(seed, n, c, scale=scale)
    t = torch.randint(0, c, (n,), generator=g)
    t[torch.randperm(n, generator=g)[:n_ignored]] = -100
    w = torch.rand(c, generator=g, dtype=torch.float64) + 0.05 if weighted else None
    kw = dict(weight=w, label_smoothing=eps, reduction=reduction)
    _close(cross_entropy(z, t, **kw), F.cross_entropy(z, t, **kw))  # all ignored: nan in both for 'mean'


@FAST
@given(seed=seeds, n=st.integers(1, 16), c=st.integers(2, 7), reduction=reductions, weighted=st.booleans(),
       eps=st.sampled_from([0.0, 0.2]))
def test_cross_entropy_probabilities_match_torch(seed, n, c, reduction, weighted, eps):
    g = torch.Generator().manual_seed(seed)
    z, q = _randn(seed, n, c, scale=3.0), torch.rand(n, c, generator=g, dtype=torch.float64).softmax(-1)
    w = torch.rand(c, generator=g, dtype=torch.float64) if weighted else None
    kw = dict(weight=w, label_smoothing=eps, reduction=reduction)
    _close(cross_entropy(z, q, **kw), F.cross_entropy(z, q, **kw))


@FAST
@given(seed=seeds, reduction=reductions, eps=st.sampled_from([0.0, 0.3]))
def test_cross_entropy_unbatched_and_spatial_match_torch(seed, reduction, eps):
    z1, z3 = _randn(seed, 5), _randn(seed + 1, 2, 5, 3, 4)
    g = torch.Generator().manual_seed(seed)
    t1, t3 = torch.randint(0, 5, (), generator=g), torch.randint(0, 5, (2, 3, 4), generator=g)
    t3[0, 0, 0] = -100
    _close(cross_entropy(z1, t1, label_smoothing=eps, reduction=reduction),
           F.cross_entropy(z1, t1, label_smoothing=eps, reduction=reduction))
    _close(cross_entropy(z3, t3, label_smoothing=eps, reduction=reduction),
           F.cross_entropy(z3, t3, label_smoothing=eps, reduction=reduction))


def test_custom_ignore_index():
    z, t = _randn(0, 9, 4), torch.tensor([0, 1, 2, 3, 3, 1, 0, 3, 2])
    _close(cross_entropy(z, t, ignore_index=3), F.cross_entropy(z, t, ignore_index=3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_for_huge_logits(dtype):
    z = torch.tensor([-1e4, -1e3, 0.0, 1e3, 1e4], dtype=dtype)
    for y in (torch.zeros(5, dtype=dtype), torch.ones(5, dtype=dtype)):
        assert torch.isfinite(bce_with_logits(z, y, reduction="none")).all()
        _close(bce_with_logits(z, y, reduction="none"), F.binary_cross_entropy_with_logits(z, y, reduction="none"), 1e-3)
    zz = torch.stack([z, -z, z.flip(0)])
    for t in range(5):
        tt = torch.full((3,), t)
        for eps in (0.0, 0.1):
            ours = cross_entropy(zz, tt, label_smoothing=eps, reduction="none")
            assert torch.isfinite(ours).all()
            _close(ours, F.cross_entropy(zz, tt, label_smoothing=eps, reduction="none"), 1e-3 * 1e4 if dtype == torch.float32 else 1e-6)
    assert torch.isfinite(log_softmax(zz)).all() and torch.isfinite(softmax(zz)).all()
    assert torch.isfinite(sigmoid(z)).all()


def test_naive_versions_do_fail():
    "The teaching versions really show inf/NaN, so the lesson's claim holds."
    assert torch.isnan(naive_softmax(torch.tensor([1e4, 0.0]))).any()
    assert naive_bce_with_logits(torch.tensor([-1e4]), torch.tensor([1.0])).isinf()
    assert naive_bce_with_logits(torch.tensor([1e4]), torch.tensor([1.0])).isnan()


@pytest.mark.parametrize("fn, args, msg", [
    (binary_cross_entropy, (torch.tensor([0.5, 1.2]), torch.tensor([1.0, 0.0])), "use bce_with_logits"),
    (binary_cross_entropy, (torch.tensor([0.5, -0.1]), torch.tensor([1.0, 0.0])), "p (probabilities) must be in [0, 1]"),
    (binary_cross_entropy, (torch.tensor([0.5, float("nan")]), torch.tensor([1.0, 0.0])), "must be in [0, 1]"),
    (binary_cross_entropy, (torch.rand(3), torch.ones(2)), "p has shape (3,) but y has shape (2,)"),
    (binary_cross_entropy, (torch.rand(2), torch.tensor([0.0, 2.0])), "y (targets) must be in [0, 1]"),
    (bce_with_logits, (torch.rand(2, 3), torch.ones(3)), "z has shape (2, 3) but y has shape (3,)"),
    (bce_with_logits, (torch.rand(2), torch.tensor([1.0, -1.0])), "y (targets) must be in [0, 1]"),
    (cross_entropy, (torch.rand(4, 3), torch.tensor([0, 1, 3, 2])), "target contains class 3 but logits have 3 classes"),
    (cross_entropy, (torch.rand(4, 3), torch.tensor([0, -1, 1, 2])), "target contains class -1"),
    (cross_entropy, (torch.rand(4, 3), torch.tensor([0, 1, 2])), "need one class index per example, shape (4,)"),
    (cross_entropy, (torch.rand(4, 3), torch.rand(4, 2)), "logits has shape (4, 3) but target (class probabilities)"),
    (cross_entropy, (torch.tensor(1.0), torch.tensor(0)), "logits must have a class dimension"),
])
def test_bad_input_is_rejected_clearly(fn, args, msg):
    with pytest.raises((ValueError, TypeError)) as e: fn(*args)
    assert msg in str(e.value), str(e.value)


def test_bad_options_are_rejected_clearly():
    z, t = torch.rand(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"weight must have one entry per class, shape \(3,\)"): cross_entropy(z, t, weight=torch.ones(2))
    with pytest.raises(ValueError, match="label_smoothing must be in"): cross_entropy(z, t, label_smoothing=-0.1)
    with pytest.raises(ValueError, match="reduction must be"): cross_entropy(z, t, reduction="avg")
    with pytest.raises(ValueError, match="reduction must be"): bce_with_logits(z[:, 0], z[:, 1], reduction="avg")
    with pytest.raises(ValueError, match="temperature must be > 0"): softmax(z, temperature=-1.0)
    with pytest.raises(ValueError, match="class indices"): smooth_targets(torch.tensor([0, 3]), 3, 0.1)
    with pytest.raises(TypeError, match="real numbers"): sigmoid(torch.tensor([True]))


def test_gradcheck():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z1 = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    p = (torch.rand(6, generator=g, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    y = torch.randint(0, 2, (6,), generator=g).double()
    t = torch.tensor([0, 3, -100, 2, 1])
    w = torch.rand(4, generator=g, dtype=torch.float64) + 0.1
    assert torch.autograd.gradcheck(sigmoid, (z1,))
    assert torch.autograd.gradcheck(softplus, (z1,))
    assert torch.autograd.gradcheck(lambda x: log_softmax(x), (z,))
    assert torch.autograd.gradcheck(lambda x: binary_cross_entropy(x, y), (p,))
    assert torch.autograd.gradcheck(lambda x: bce_with_logits(x, y), (z1,))
    assert torch.autograd.gradcheck(lambda x: cross_entropy(x, t, weight=w, label_smoothing=0.2), (z,))
    assert torch.autograd.gradcheck(lambda x: cross_entropy(x, t.clamp(min=0).float().softmax(0).expand(4, 5).T.contiguous()), (z,))


def test_gradients_at_zero_are_right():
    "sigmoid'(0) = 1/4 and softplus'(0) = 1/2: a plain |z| in the stable forms would give 0 here."
    z = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (gs,) = torch.autograd.grad(sigmoid(z).sum(), z)
    (gp,) = torch.autograd.grad(softplus(z).sum(), z)
    assert gs.item() == pytest.approx(0.25) and gp.item() == pytest.approx(0.5)


@FAST
@given(seed=seeds, n=st.integers(1, 10), c=st.integers(2, 6))
def test_closed_form_gradient_matches_autograd(seed, n, c):
    z = _randn(seed, n, c, scale=3.0).requires_grad_()
    t = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))
    (g,) = torch.autograd.grad(F.cross_entropy(z, t), z)
    _close(cross_entropy_grad(z.detach(), t), g)


@FAST
@given(seed=seeds, c=st.integers(2, 6))
def test_entropy_kl_perplexity(seed, c):
    g = torch.Generator().manual_seed(seed)
    q, z = torch.rand(c, generator=g, dtype=torch.float64).softmax(0), _randn(seed, c)
    p = softmax(z)
    _close(entropy(q), -(q * q.log()).sum())
    _close(kl_divergence(q, p), F.kl_div(p.log(), q, reduction="sum"))
    _close(F.cross_entropy(z, q), entropy(q) + kl_divergence(q, p))  # H(q, p) = H(q) + KL(q || p)
    _close(perplexity(torch.tensor(math.log(c), dtype=torch.float64)), torch.tensor(float(c), dtype=torch.float64))


def test_smooth_targets():
    q = smooth_targets(torch.tensor([2, 0]), 4, 0.2, dtype=torch.float64)
    _close(q, torch.tensor([[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]], dtype=torch.float64))
    z, t = _randn(3, 2, 4), torch.tensor([2, 0])
    _close(F.cross_entropy(z, q), F.cross_entropy(z, t, label_smoothing=0.2))
