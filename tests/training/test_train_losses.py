"""Multi-part hinge: values, gradient, and agreement with the core's HingeThresholds."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from upper_fast_train.losses import hinge_loss, negative_hinge, personal_contrast  # noqa: E402

THETA = [0.2, 0.5, 0.55, 0.6, 0.65]


def _oracle(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    theta = np.asarray(THETA)[labels]
    pos = labels > 0
    cost = np.where(pos, np.maximum(0, theta - scores), np.maximum(0, scores - theta))
    grad = np.where(pos, -(theta - scores > 0).astype(np.float64), (scores - theta > 0).astype(np.float64)) / len(scores)
    return float(cost.mean()), grad


def _batch(n: int = 257, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, n).astype(np.float32), rng.integers(0, 5, n).astype(np.int64)


def test_hinge_matches_numpy_oracle_value_and_gradient():
    scores, labels = _batch()
    s = torch.from_numpy(scores).requires_grad_()
    loss = hinge_loss(s, torch.from_numpy(labels), THETA)
    loss.backward()
    value, grad = _oracle(scores.astype(np.float64), labels)
    assert float(loss) == pytest.approx(value, rel=1e-5)
    np.testing.assert_allclose(s.grad.numpy(), grad, atol=1e-7)


def test_hinge_orders_interaction_types():
    """The same score costs more for a purchase than for a click."""
    s = torch.full((4,), 0.52)
    costs = [float(hinge_loss(s[:1], torch.tensor([t]), THETA)) for t in (1, 2, 3, 4)]
    assert costs == sorted(costs) and costs[0] == 0.0 and costs[3] > 0


def test_hinge_matches_core_hinge_thresholds():
    import upper_fast

    if not hasattr(upper_fast, "HingeThresholds"):
        pytest.skip("upper_fast.HingeThresholds is not built in this checkout (kernels area)")
    core = upper_fast.HingeThresholds(click=THETA[1], favorite=THETA[2], add_to_cart=THETA[3], purchase=THETA[4], negative=THETA[0])
    scores, labels = _batch(1001, seed=3)
    core_loss, core_grad = core.hinge_loss(scores, labels)
    s = torch.from_numpy(scores).requires_grad_()
    loss = hinge_loss(s, torch.from_numpy(labels), THETA)
    loss.backward()
    assert float(loss) == pytest.approx(float(core_loss), rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(s.grad.numpy(), np.asarray(core_grad), rtol=1e-5, atol=1e-8)


def test_hinge_rejects_bad_inputs():
    with pytest.raises(TypeError, match="int64"):
        hinge_loss(torch.zeros(3), torch.zeros(3, dtype=torch.int32), THETA)
    with pytest.raises(ValueError, match="0..4"):
        hinge_loss(torch.zeros(2), torch.tensor([0, 5]), THETA)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        hinge_loss(torch.zeros(2), torch.tensor([0, 1]), THETA[:4])


def test_negative_hinge_ignores_invalid_entries():
    s = torch.tensor([[0.9, 0.1], [0.5, 0.9]])
    valid = torch.tensor([[False, True], [True, True]])
    # valid costs: 0 (0.1 < 0.2), 0.3, 0.7 -> mean over the 3 valid entries
    assert float(negative_hinge(s, valid, 0.2)) == pytest.approx(1.0 / 3)
    assert float(negative_hinge(s, torch.zeros_like(valid), 0.2)) == 0.0


def test_personal_contrast_matches_a_hand_computed_softmax_and_skips_rows_without_rivals():
    import math

    scores = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.8, 0.3], [0.4, 0.4, 0.9]], requires_grad=True)
    cand = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)
    targ = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)  # row 2 has no rival: skipped
    got = personal_contrast(scores, cand, targ, 0.1)
    a = math.log(math.exp(9) + math.exp(5)) - 9
    b = math.log(math.exp(2) + math.exp(8) + math.exp(3)) - 8
    assert abs(float(got) - (a + b) / 2) < 1e-5
    got.backward()
    g = scores.grad
    assert g[0, 0] < 0 and g[0, 1] > 0 and g[0, 2] == 0  # own product up, the rival down, non-candidates untouched
    assert torch.all(g[2] == 0)
    # nothing to contrast: zero, with a gradient path
    none = personal_contrast(scores, cand, cand, 0.1)
    assert float(none) == 0.0 and none.requires_grad
    with pytest.raises(ValueError):
        personal_contrast(scores, cand, targ, 0.0)


def test_shown_pairwise_hinge_value_mask_and_errors():
    from upper_fast_train.losses import shown_pairwise_hinge

    pos = torch.tensor([0.8, 0.5], requires_grad=True)
    shown = torch.tensor([[0.75, 0.2], [0.9, 0.0]], requires_grad=True)
    valid = torch.tensor([[True, True], [True, False]])
    # pairs: 0.1 - 0.05 = 0.05; 0.1 - 0.6 -> 0; 0.1 - (-0.4) = 0.5; the masked pair is ignored
    got = shown_pairwise_hinge(pos, shown, valid, 0.1)
    assert abs(float(got) - (0.05 + 0.0 + 0.5) / 3) < 1e-6
    got.backward()
    assert shown.grad[1, 1] == 0 and shown.grad[0, 1] == 0 and shown.grad[0, 0] > 0
    assert float(shown_pairwise_hinge(pos, shown, torch.zeros(2, 2, dtype=torch.bool), 0.1)) == 0.0
    with pytest.raises(ValueError, match="bool"):
        shown_pairwise_hinge(pos, shown, valid.float(), 0.1)
    with pytest.raises(ValueError, match="expected"):
        shown_pairwise_hinge(pos[:1], shown, valid, 0.1)


def test_softmax_contrast_matches_cross_entropy_and_ignores_forbidden_columns():
    from upper_fast_train.losses import softmax_contrast

    rng = np.random.default_rng(3)
    scores = torch.from_numpy(rng.uniform(-1, 1, (4, 6)).astype(np.float32))
    target = torch.tensor([0, 2, 5, 1])
    forbidden = torch.zeros(4, 6, dtype=torch.bool)
    forbidden[0, 3] = True  # a group positive of row 0: not a negative
    forbidden[1, 2] = True  # the target itself is never dropped
    got = softmax_contrast(scores, target, forbidden, 0.1)
    logits = scores / 0.1
    want = []
    for i in range(4):
        keep = [j for j in range(6) if not (forbidden[i, j] and j != int(target[i]))]
        want.append(float(torch.logsumexp(logits[i, keep], 0) - logits[i, target[i]]))
    assert float(got) == pytest.approx(np.mean(want), rel=1e-5)
    # raising the forbidden column's score changes nothing; raising a negative's raises the loss
    bumped = scores.clone()
    bumped[0, 3] += 5
    assert float(softmax_contrast(bumped, target, forbidden, 0.1)) == pytest.approx(float(got), rel=1e-6)
    bumped[0, 4] += 5
    assert float(softmax_contrast(bumped, target, forbidden, 0.1)) > float(got) + 0.1
    rows = torch.tensor([True, False, False, False])
    assert float(softmax_contrast(scores, target, forbidden, 0.1, rows)) == pytest.approx(want[0], rel=1e-5)
    assert float(softmax_contrast(scores, target, forbidden, 0.1, torch.zeros(4, dtype=torch.bool))) == 0.0
    # per-row weights: the weighted mean of the same per-row terms; rows off or weight 0 take no part
    weights = torch.tensor([1.0, 3.0, 0.0, 2.0])
    got_w = softmax_contrast(scores, target, forbidden, 0.1, None, weights)
    assert float(got_w) == pytest.approx((want[0] + 3 * want[1] + 2 * want[3]) / 6, rel=1e-5)
    assert float(softmax_contrast(scores, target, forbidden, 0.1, None, torch.ones(4))) == pytest.approx(float(got), rel=1e-6)
    assert float(softmax_contrast(scores, target, forbidden, 0.1, rows, torch.tensor([0.0, 1.0, 1.0, 1.0]))) == 0.0
    with pytest.raises(ValueError, match="one per row"):
        softmax_contrast(scores, target, forbidden, 0.1, None, torch.ones(3))


def test_softmax_distill_is_zero_at_the_teacher_and_positive_elsewhere():
    from upper_fast_train.losses import softmax_distill

    rng = np.random.default_rng(4)
    teacher = torch.from_numpy(rng.uniform(-1, 1, (3, 5)).astype(np.float32))
    target = torch.tensor([0, 1, 2])
    forbidden = torch.zeros(3, 5, dtype=torch.bool)
    forbidden[0, 4] = True
    assert float(softmax_distill(teacher, teacher, target, forbidden, 0.1, 0.1)) == pytest.approx(0.0, abs=1e-6)
    student = torch.from_numpy(rng.uniform(-1, 1, (3, 5)).astype(np.float32))
    kl = float(softmax_distill(student, teacher, target, forbidden, 0.1, 0.1))
    assert kl > 0.01
    # a forbidden column never matters, on either side
    s2, t2 = student.clone(), teacher.clone()
    s2[0, 4] += 3
    t2[0, 4] -= 3
    assert float(softmax_distill(s2, t2, target, forbidden, 0.1, 0.1)) == pytest.approx(kl, rel=1e-5)
    assert float(softmax_distill(student, teacher, target, forbidden, 0.1, 0.1, torch.zeros(3, dtype=torch.bool))) == 0.0
