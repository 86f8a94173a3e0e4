"""course_lib.poisoning: the SVM against scikit-learn and its own duality certificate, the
poisoning gradient against finite differences, and the attack's behaviour."""

from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.svm import SVC

from course_lib import poisoning as P
from course_lib.data import load_dataset

pytestmark = pytest.mark.poisoning


def _blobs(seed: int, n: int, d: int, sep: float):
    """Two Gaussian classes at +-sep/2 along the diagonal; separable for sep >> 1."""
    rng = np.random.default_rng(seed)
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    rng.shuffle(y)
    X = rng.normal(size=(n, d)) + 0.5 * sep * y[:, None] * np.ones(d) / np.sqrt(d)
    return X, y


def _box_blobs(seed: int, n: int, d: int):
    """Overlapping classes inside [0, 1]^d (the attack's box)."""
    rng = np.random.default_rng(seed)
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    rng.shuffle(y)
    X = np.clip(0.5 + 0.45 * y[:, None] / np.sqrt(d) + 0.15 * rng.normal(size=(n, d)), 0, 1)
    return X, y


@pytest.fixture(scope="module")
def digits_7_1():
    ds = load_dataset("digits")
    X, Y = ds.train.tensors
    X, Y = X.flatten(1).double().numpy(), Y.numpy()
    keep = (Y == 7) | (Y == 1)
    return X[keep], np.where(Y[keep] == 7, 1.0, -1.0)


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


# ----------------------------------------------------------------------------- the gradient

def _retrained(Xtr, ytr, Xv, yv, xc, yc, C):
    """Validation loss of the SVM retrained with (xc, yc), and what fixes its active set."""
    X, y = np.vstack([Xtr, xc]), np.append(ytr, yc)
    sol = P.fit_svm(X, y, C, tol=1e-12)
    U = C / len(y)
    margins_v = yv * (Xv @ sol.w + sol.b)
    S = tuple(P._margin_set(sol.alpha, U))
    # with no margin SV, b is fixed by the two points at the ends of the primal's flat segment
    ends = P._optimal_bias(y * (X @ sol.w) - 1, y)[2:] if not S else ()
    pattern = (S, tuple(sol.alpha >= U * (1 - 1e-8)), tuple(margins_v < 1), ends)
    return P.hinge_loss(sol.w, sol.b, Xv, yv), pattern, sol, U


def _separable_box(seed: int, n: int, d: int):
    """Well-separated classes inside [0, 1]^d."""
    rng = np.random.default_rng(seed)
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    rng.shuffle(y)
    return np.clip(0.5 + 0.3 * y[:, None] / np.sqrt(d) + 0.05 * rng.normal(size=(n, d)), 0, 1), y


def _grad_case(kind: str, seed: int, d: int):
    """(X_train, y_train, X_val, y_val, x_poison, y_poison) for one kind of case."""
    rng = np.random.default_rng(seed)
    Xv, yv = _box_blobs(seed + 100, 60, d)
    if kind == "flip":  # the attack's start: a +1 training point, moved a little, labelled -1
        Xtr, ytr = _box_blobs(seed, 30, d)
        i = int(np.flatnonzero(ytr > 0)[0])
        return Xtr, ytr, Xv, yv, np.clip(Xtr[i] + 0.1 * rng.normal(size=d), 0.05, 0.95), -1.0
    # a +1 point between the separated classes: with a large C it is a margin SV itself
    Xtr, ytr = _separable_box(seed, 30, d)
    return Xtr, ytr, Xv, yv, np.clip(0.5 + 0.1 / np.sqrt(d) + 0.03 * rng.normal(size=d), 0, 1), 1.0


# (kind, d, C): on overlapping classes a small C leaves every alpha at a bound (b sits on a
# flat segment of the primal), a larger C leaves margin SVs; on separated classes with a
# large C the poison point is itself a margin SV (its alpha is free, its x_t enters the KKT rows).
GRAD_CASES = [(kind, seed, d, C) for seed in range(8) for kind, d, C in
              (("flip", 2, 1.0), ("flip", 2, 30.0), ("flip", 5, 10.0), ("flip", 20, 100.0),
               ("margin", 2, 1000.0), ("margin", 5, 1000.0))]


def test_poison_gradient_matches_central_finite_differences():
    # h = 1e-5: the polished solver is exact to ~1e-13, so rounding contributes ~1e-13 / h =
    # 1e-8 to a difference quotient; inside a fixed active set the loss is a smooth (rational)
    # function of x_c, so truncation is O(h^2) ~ 1e-10. A case counts only if the active set
    # (margin SVs, error vectors, validation points with positive hinge, the points fixing b)
    # is the same at x_c - h e_j and x_c + h e_j as at x_c: there the loss is differentiable.
    h = 1e-5
    checked, kinds = 0, set()
    for kind, seed, d, C in GRAD_CASES:
        Xtr, ytr, Xv, yv, xc, yc = _grad_case(kind, seed, d)
        g = P.poison_gradient(Xtr, ytr, Xv, yv, xc, yc, C=C)
        _, pattern, sol, U = _retrained(Xtr, ytr, Xv, yv, xc, yc, C)
        fd = np.zeros(d)
        same = True
        for j in range(d):
            e = np.zeros(d)
            e[j] = h
            lp, pp, _, _ = _retrained(Xtr, ytr, Xv, yv, xc + e, yc, C)
            lm, pm, _, _ = _retrained(Xtr, ytr, Xv, yv, xc - e, yc, C)
            same &= pp == pattern == pm
            fd[j] = (lp - lm) / (2 * h)
        if not same:
            continue
        checked += 1
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7, err_msg=f"{kind}, seed {seed}, d {d}, C {C}")
        S = P._margin_set(sol.alpha, U)
        kinds.add("no margin SV" if len(S) == 0 else "poison on margin" if len(sol.alpha) - 1 in S else "margin SVs")
    assert checked >= 0.8 * len(GRAD_CASES)
    assert kinds == {"no margin SV", "margin SVs", "poison on margin"}, kinds


def test_gradient_is_zero_when_the_poison_point_is_not_a_support_vector():
    Xtr, ytr = _box_blobs(0, 30, 3)
    Xv, yv = _box_blobs(1, 60, 3)
    xc = np.full(3, 0.0)  # far on the -1 side, labelled -1: alpha_c = 0
    sol = P.fit_svm(np.vstack([Xtr, xc]), np.append(ytr, -1.0), 10.0)
    assert sol.alpha[-1] == 0
    g = P.poison_gradient(Xtr, ytr, Xv, yv, xc, -1, C=10.0)
    assert np.all(g == 0)
    x_end, hist = P.poison_svm(Xtr, ytr, Xv, yv, xc, -1, C=10.0, steps=3, step_size=0.1)
    np.testing.assert_array_equal(x_end, xc)  # nothing to climb: the point stays
    assert np.all(hist["loss"] == hist["loss"][0])


# ----------------------------------------------------------------------------- the attack

def test_each_step_is_a_normalized_projected_ascent_step():
    Xtr, ytr = _box_blobs(5, 40, 2)
    Xv, yv = _box_blobs(6, 100, 2)
    xc = Xtr[np.flatnonzero(ytr > 0)[0]]
    x_end, hist = P.poison_svm(Xtr, ytr, Xv, yv, xc, -1, C=40.0, steps=12, step_size=0.2)
    assert hist["x"].shape == (13, 2) and hist["loss"].shape == hist["error"].shape == (13,)
    np.testing.assert_array_equal(hist["x"][0], xc)
    np.testing.assert_array_equal(hist["x"][-1], x_end)
    for t in range(12):
        g = P.poison_gradient(Xtr, ytr, Xv, yv, hist["x"][t], -1, C=40.0)
        assert np.linalg.norm(hist["x"][t + 1] - hist["x"][t]) <= 0.2 + 1e-12
        if np.linalg.norm(g) > 0:
            np.testing.assert_allclose(hist["x"][t + 1], np.clip(hist["x"][t] + 0.2 * g / np.linalg.norm(g), 0, 1),
                                       atol=1e-9)
        # else: a point on the edge of the active set (seen with another NumPy/BLAS build on a GPU
        # machine): the attack's warm-started solve and this cold one may fall on either side of it
        # a cold solve to the attack's own duality gap (1e-10): the two solutions are each within
        # about sqrt(2 * 1e-10) of the optimum in w, so the losses agree to well within 1e-6, not
        # to the last digits (1e-9 held on one CPU and failed by 1.5e-9 on another)
        w, b = P.train_svm(np.vstack([Xtr, hist["x"][t]]), np.append(ytr, -1.0), 40.0, tol=1e-10)
        assert hist["loss"][t] == pytest.approx(P.hinge_loss(w, b, Xv, yv), abs=1e-6)
        assert hist["error"][t] == P.classification_error(w, b, Xv, yv)


@pytest.mark.parametrize("seed", range(4))
def test_attack_raises_validation_loss_and_error_beyond_the_label_flip(digits_7_1, seed):
    X, y = digits_7_1
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    tr, va = perm[:40], perm[40:]
    Xtr, ytr, Xv, yv = X[tr], y[tr], X[va], y[va]
    i = rng.choice(np.flatnonzero(ytr > 0))  # a 7 labelled as a 1: the label flip
    x_end, hist = P.poison_svm(Xtr, ytr, Xv, yv, Xtr[i], -1, C=41.0, steps=25, step_size=0.5)
    clean_w, clean_b = P.train_svm(Xtr, ytr, 41.0 * 40 / 41)  # same dual bound C/n as poisoned
    clean_err = P.classification_error(clean_w, clean_b, Xv, yv)
    assert hist["error"][0] <= clean_err + 0.02  # flipping one label alone does little
    assert hist["loss"][-1] >= 1.5 * hist["loss"][0]
    assert hist["error"][-1] >= hist["error"][0] + 0.02
    assert np.all((hist["x"] >= 0) & (hist["x"] <= 1))  # in the box at every step
    steps = np.linalg.norm(np.diff(hist["x"], axis=0), axis=1)
    assert np.all(steps <= 0.5 + 1e-12)  # the projection only shortens a step


def test_attack_accepts_tensors_and_returns_them():
    Xtr, ytr = _box_blobs(7, 30, 3)
    Xv, yv = _box_blobs(8, 50, 3)
    xc = torch.tensor(Xtr[np.flatnonzero(ytr > 0)[0]], dtype=torch.float32)
    x_end, hist = P.poison_svm(torch.tensor(Xtr), torch.tensor(ytr), torch.tensor(Xv), torch.tensor(yv),
                               xc, -1, C=30.0, steps=3, step_size=0.1)
    assert isinstance(x_end, torch.Tensor) and x_end.dtype == torch.float32 and x_end.shape == (3,)
    g = P.poison_gradient(Xtr, ytr, Xv, yv, xc.double(), torch.tensor(-1), C=30.0)
    assert isinstance(g, torch.Tensor) and g.dtype == torch.float64
    x_np, _ = P.poison_svm(Xtr, ytr, Xv, yv, xc.double().numpy(), -1, C=30.0, steps=3, step_size=0.1)
    np.testing.assert_allclose(x_end.numpy(), x_np, atol=1e-6)


# ----------------------------------------------------------------------------- bad input

def _ok():
    Xtr, ytr = _box_blobs(0, 20, 3)
    Xv, yv = _box_blobs(1, 20, 3)
    return dict(X_train=Xtr, y_train=ytr, X_val=Xv, y_val=yv, x_poison=np.full(3, 0.5), y_poison=-1,
                C=10.0, steps=2, step_size=0.1)


@pytest.mark.parametrize("change, match", [
    ({"y_train": np.zeros(20)}, "y_train"),
    ({"y_val": np.arange(20.0)}, "y_val"),
    ({"y_train": np.ones(19)}, "y_train"),
    ({"X_val": np.zeros((20, 4))}, "X_val"),
    ({"X_train": np.zeros(20)}, "X_train"),
    ({"C": 0.0}, "C"),
    ({"C": -1.0}, "C"),
    ({"C": float("nan")}, "C"),
    ({"step_size": 0.0}, "step_size"),
    ({"steps": -1}, "steps"),
    ({"steps": 1.5}, "steps"),
    ({"x_poison": np.full(3, 1.5)}, r"\[0, 1\]"),
    ({"x_poison": np.full(3, -0.1)}, r"\[0, 1\]"),
    ({"x_poison": np.full(4, 0.5)}, "x_poison"),
    ({"y_poison": 0}, "y_poison"),
    ({"y_poison": 2}, "y_poison"),
])
def test_attack_rejects_bad_input(change, match):
    kwargs = _ok() | change
    with pytest.raises(ValueError, match=match):
        P.poison_svm(**kwargs)


def test_svm_rejects_bad_input():
    X, y = _blobs(0, 10, 2, 1.0)
    with pytest.raises(ValueError, match="y must hold labels"):
        P.train_svm(X, (y > 0).astype(float), 1.0)  # {0, 1} labels
    with pytest.raises(ValueError, match="both classes"):
        P.train_svm(X, np.ones(10), 1.0)
    with pytest.raises(ValueError, match="shape"):
        P.train_svm(X, y[:5], 1.0)
    with pytest.raises(ValueError, match="C must be > 0"):
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


def test_binary_task_splits_two_digits_without_overlap():
    task = P.binary_task("digits", 7, 1, n_train=50, n_val=100, seed=3)
    assert task["X_train"].shape == (50, 64) and task["X_val"].shape == (100, 64)
    ds = load_dataset("digits")
    x, y = ds.train.tensors
    X71 = x[(y == 7) | (y == 1)].flatten(1).double().numpy()
    available = Counter(r.tobytes() for r in X71)
    drawn = Counter(r.tobytes() for r in np.vstack([task["X_train"], task["X_val"]]))
    # drawn from the train split's 7s and 1s, without replacement: train and val do not overlap
    assert all(count <= available[row] for row, count in drawn.items())
    for split in ("train", "val", "test"):
        assert set(np.unique(task[f"y_{split}"])) == {-1.0, 1.0}
    xt, yt = ds.test.tensors
    assert len(task["y_test"]) == int(((yt == 7) | (yt == 1)).sum())
    assert (task["y_test"] > 0).sum() == int((yt == 7).sum())
    again = P.binary_task("digits", 7, 1, n_train=50, n_val=100, seed=3)
    np.testing.assert_array_equal(again["X_val"], task["X_val"])
    with pytest.raises(ValueError, match="exceeds"):
        P.binary_task("digits", 7, 1, n_train=300, n_val=100)
    with pytest.raises(ValueError, match="differ"):
        P.binary_task("digits", 7, 7, n_train=3, n_val=3)
    numpy_ints = P.binary_task("digits", np.int64(7), 1, n_train=np.int64(50), n_val=np.int64(100), seed=3)
    np.testing.assert_array_equal(numpy_ints["X_train"], task["X_train"])
    for classes in ((7, 12), (-1, 1), (7.0, 1)):  # a class the data set does not have: no silent one-class task
        with pytest.raises(ValueError, match="must be a class of 'digits'"):
            P.binary_task("digits", *classes, n_train=5, n_val=5)
