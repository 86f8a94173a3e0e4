"""course_lib.svm: the SVM against scikit-learn and its own duality certificate."""

import doctest

import numpy as np
import pytest
import torch
from sklearn.svm import SVC

from argument_policy import check_policy
from course_lib import poisoning
from course_lib import svm as P

pytestmark = pytest.mark.poisoning


def _blobs(seed: int, n: int, d: int, sep: float):
    """Two Gaussian classes at +-sep/2 along the diagonal; separable for sep >> 1."""
    rng = np.random.default_rng(seed)
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    rng.shuffle(y)
    X = rng.normal(size=(n, d)) + 0.5 * sep * y[:, None] * np.ones(d) / np.sqrt(d)
    return X, y


def _sklearn(X, y, C):
    n = len(y)
    sk = SVC(kernel="linear", C=C / n, tol=1e-12).fit(X, y)  # sklearn sums the hinge: its C is ours / n
    alpha = np.zeros(n)
    alpha[sk.support_] = np.abs(sk.dual_coef_[0])
    return sk.coef_[0], float(sk.intercept_[0]), alpha, sk


def _dual(alpha, X, y):
    w = X.T @ (alpha * y)
    return alpha.sum() - 0.5 * w @ w


def _primal_by_hand(w, b, X, y, C):
    return 0.5 * sum(wi * wi for wi in w) + C * np.mean([max(0.0, 1 - yi * (xi @ w + b)) for xi, yi in zip(X, y)])

CASES = [(seed, n, d, sep, C) for seed, (n, d, sep) in enumerate(
    [(40, 2, 6.0), (60, 3, 2.0), (120, 5, 1.0), (200, 10, 4.0), (80, 20, 0.0), (150, 2, 1.5)])
    for C in (0.1, 10.0, 1000.0)]


def _assert_agrees_with_sklearn(X, y, C):
    sol = P.fit_svm(X, y, C)
    w, b = P.train_svm(X, y, C)
    np.testing.assert_array_equal(w, sol.w)
    w_sk, b_sk, alpha_sk, sk = _sklearn(X, y, C)
    # How close must the weights be? The dual is 1-strongly concave in w: for feasible alpha,
    # ||w(alpha) - w*||^2 <= 2 (D* - D(alpha)) <= 2 (P(w, b) - D(alpha)). Both solutions'
    # distances to w* are bounded by their gaps to our primal value: ours by its certified
    # gap, libsvm's (which stops on a KKT violation, not a gap) by its dual's.
    primal = _primal_by_hand(w, b, X, y, C)
    radius = np.sqrt(2 * max(0.0, sol.gap)) + np.sqrt(2 * max(0.0, primal - _dual(alpha_sk, X, y)))
    scale = max(1.0, np.abs(w_sk).max())
    assert np.linalg.norm(w - w_sk) <= radius + 1e-7 * scale
    assert np.linalg.norm(w - w_sk) <= 1e-3 * scale  # and the bound is not vacuous
    # b = y_t - w . x_t on a margin SV: off by at most ||w - w_sk|| max ||x_t|| from libsvm's
    # (which averages that over its free SVs), up to libsvm's own KKT tolerance
    assert abs(b - b_sk) <= np.linalg.norm(w - w_sk) * np.linalg.norm(X, axis=1).max() + 1e-6 * scale
    f = X @ w + b
    clear = np.abs(f) > 1e-4 * scale  # points on the boundary may fall either way
    np.testing.assert_array_equal(np.where(f >= 0, 1.0, -1.0)[clear], sk.predict(X)[clear])
    assert primal <= _primal_by_hand(w_sk, b_sk, X, y, C) + P.DEFAULT_TOL


@pytest.mark.parametrize("seed, n, d, sep, C", CASES)
def test_train_svm_matches_sklearn(seed, n, d, sep, C):
    _assert_agrees_with_sklearn(*_blobs(seed, n, d, sep), C)


@pytest.mark.parametrize("seed, n, d, sep, C", CASES[::2])
@pytest.mark.parametrize("tol", [1e-3, 1e-8])
def test_objective_is_within_tol_of_the_optimum(seed, n, d, sep, C, tol):
    X, y = _blobs(seed, n, d, sep)
    sol = P.fit_svm(X, y, C, tol=tol)
    U = C / n
    # the dual point is feasible, so D(alpha) <= P* (weak duality): an independent certificate
    assert (sol.alpha >= 0).all() and (sol.alpha <= U).all()
    assert abs(sol.alpha @ y) <= 1e-10 * max(1.0, U * n)
    np.testing.assert_allclose(sol.w, X.T @ (sol.alpha * y), atol=1e-12 * max(1.0, U * n))
    primal = _primal_by_hand(sol.w, sol.b, X, y, C)
    assert primal - _dual(sol.alpha, X, y) <= tol + 1e-9 * max(1.0, primal)
    assert sol.gap <= tol
    # and against scikit-learn's solution: ours is no worse than its up to tol
    w_sk, b_sk, _, _ = _sklearn(X, y, C)
    assert primal <= _primal_by_hand(w_sk, b_sk, X, y, C) + tol
    assert P.svm_objective(sol.w, sol.b, X, y, C) == pytest.approx(primal, rel=1e-12)


@pytest.mark.parametrize("C", [1.0, 100.0, 1e4])
@pytest.mark.parametrize("seed", range(3))
def test_train_svm_matches_sklearn_on_digits(digits_7_1, C, seed):
    X, y = digits_7_1
    idx = np.random.default_rng(seed).permutation(len(y))[:120]
    _assert_agrees_with_sklearn(X[idx], y[idx], C)


def test_tensors_in_tensors_out():
    X, y = _blobs(0, 50, 4, 2.0)
    w_np, b_np = P.train_svm(X, y, 5.0)
    w_t, b_t = P.train_svm(torch.tensor(X, dtype=torch.float32), torch.tensor(y).long(), 5.0)
    assert isinstance(w_t, torch.Tensor) and w_t.dtype == torch.float32 and w_t.shape == (4,)
    assert isinstance(b_t, float)
    np.testing.assert_allclose(w_t.numpy(), w_np, atol=1e-5)
    w64, _ = P.train_svm(torch.tensor(X), torch.tensor(y), 5.0)
    assert w64.dtype == torch.float64
    np.testing.assert_allclose(w64.numpy(), w_np, atol=1e-12)


def test_warm_start_reaches_the_same_solution():
    X, y = _blobs(3, 100, 5, 1.0)
    cold = P.fit_svm(X, y, 50.0)
    X2 = X.copy()
    X2[0] += 0.3  # one point moved: the old alpha is still feasible
    warm = P.fit_svm(X2, y, 50.0, alpha0=cold.alpha)
    again = P.fit_svm(X2, y, 50.0)
    np.testing.assert_allclose(warm.w, again.w, atol=1e-8)
    assert warm.b == pytest.approx(again.b, abs=1e-8)


def test_max_iter_is_an_error_not_a_silent_answer():
    X, y = _blobs(1, 200, 5, 0.5)
    with pytest.raises(RuntimeError, match="max_iter"):
        P.fit_svm(X, y, 1000.0, tol=1e-12, max_iter=3)


@pytest.mark.parametrize("seed", range(20))
def test_hinge_loss_and_error_match_a_by_hand_formula(seed):
    rng = np.random.default_rng(seed)
    n, d = rng.integers(1, 30), rng.integers(1, 8)
    X, w, b = rng.normal(size=(n, d)), rng.normal(size=d), float(rng.normal())
    y = rng.choice([-1.0, 1.0], size=n)
    by_hand = sum(max(0.0, 1.0 - y[i] * (sum(w[j] * X[i, j] for j in range(d)) + b)) for i in range(n)) / n
    assert P.hinge_loss(w, b, X, y) == pytest.approx(by_hand, rel=1e-12, abs=1e-14)
    errors = sum((1.0 if X[i] @ w + b >= 0 else -1.0) != y[i] for i in range(n)) / n
    assert P.classification_error(w, b, X, y) == errors
    # the torch version is the same number and differentiable: d/dw = -1/n sum_{active} y_i x_i
    wt = torch.tensor(w, requires_grad=True)
    loss = P.hinge_loss(wt, b, torch.tensor(X), torch.tensor(y))
    assert isinstance(loss, torch.Tensor) and loss.item() == pytest.approx(by_hand, rel=1e-12, abs=1e-14)
    (g,) = torch.autograd.grad(loss, wt)
    active = 1 - y * (X @ w + b) > 0
    np.testing.assert_allclose(g.numpy(), -(y[active] @ X[active]) / n, atol=1e-12)


def test_svm_rejects_bad_input():
    X, y = _blobs(0, 10, 2, 1.0)
    with pytest.raises(ValueError, match="y must hold labels"):
        P.train_svm(X, (y > 0).astype(float), 1.0)  # {0, 1} labels
    with pytest.raises(ValueError, match="both classes"):
        P.train_svm(X, np.ones(10), 1.0)
    with pytest.raises(ValueError, match="shape"):
        P.train_svm(X, y[:5], 1.0)
    with pytest.raises(ValueError, match="C must be a finite number > 0"):
        P.train_svm(X, y, 0)
    with pytest.raises(ValueError, match="tol"):
        P.train_svm(X, y, 1.0, tol=0.0)
    with pytest.raises(ValueError, match="finite"):
        P.train_svm(np.full((10, 2), np.nan), y, 1.0)
    with pytest.raises(TypeError, match="X"):
        P.train_svm(X.tolist(), y, 1.0)
    with pytest.raises(ValueError, match="w must have shape"):
        P.hinge_loss(np.zeros(3), 0.0, X, y)
    with pytest.raises(ValueError, match="y must have shape"):
        P.hinge_loss(np.zeros(2), 0.0, X, y[:3])




def test_support_sets_partition_the_points_by_their_alpha():
    X, y = _blobs(2, 80, 3, 1.0)
    sol = P.fit_svm(X, y, 10.0)
    sets = P.support_sets(sol.alpha, 10.0)
    U = 10.0 / 80
    assert sorted(np.concatenate(sets).tolist()) == list(range(80))
    assert len(sets.margin) and len(sets.error) and len(sets.rest)
    np.testing.assert_allclose(y[sets.margin] * (X[sets.margin] @ sol.w + sol.b), 1.0, atol=1e-9)
    assert (y[sets.rest] * (X[sets.rest] @ sol.w + sol.b) >= 1 - 1e-9).all()
    assert (y[sets.error] * (X[sets.error] @ sol.w + sol.b) <= 1 + 1e-9).all()
    np.testing.assert_array_equal(sol.alpha[sets.error], U)
    assert P.support_sets(torch.tensor(sol.alpha), np.float64(10.0)).margin.tolist() == sets.margin.tolist()
    with pytest.raises(ValueError, match="alpha"):
        P.support_sets(np.zeros((2, 2)), 1.0)


def test_poisoning_still_exports_the_svm():
    for name in ("fit_svm", "train_svm", "hinge_loss", "classification_error", "svm_objective",
                 "support_sets", "SVMSolution", "DEFAULT_TOL"):
        assert getattr(poisoning, name) is getattr(P, name)


def test_docstring_examples():
    assert doctest.testmod(P).failed == 0


def _same_solution(a, b):
    return np.array_equal(a[0], b[0]) and a[1] == b[1]


_X, _Y = _blobs(0, 12, 2, 2.0)
_ALPHA = P.fit_svm(_X, _Y, 5.0).alpha

POLICY = [
    (lambda v: P.train_svm(_X, _Y, v), "C", 5.0, _same_solution),
    (lambda v: P.train_svm(_X, _Y, 5.0, tol=v), "tol", 2.0 ** -20, _same_solution),
    (lambda v: P.fit_svm(_X, _Y, v).w, "C", 5.0, np.array_equal),
    (lambda v: P.fit_svm(_X, _Y, 5.0, tol=v).w, "tol", 2.0 ** -20, np.array_equal),
    (lambda v: P.fit_svm(_X, _Y, 5.0, max_iter=v).w, "max_iter", 1000, np.array_equal),
    (lambda v: P.svm_objective(np.ones(2), 0.0, _X, _Y, v), "C", 5.0, float.__eq__),
    (lambda v: P.hinge_loss(np.ones(2), v, _X, _Y), "b", 0.5, float.__eq__),
    (lambda v: P.support_sets(_ALPHA, v).margin, "C", 5.0, np.array_equal),
]


@pytest.mark.parametrize("call, name, value, same", POLICY, ids=[f"{i}-{c[1]}" for i, c in enumerate(POLICY)])
def test_argument_policy(call, name, value, same):
    check_policy(call, name, value, same)
