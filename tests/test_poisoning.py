"""course_lib.poisoning: the poisoning gradient against finite differences, the attack's
behaviour, the numbers behind lecture 6's pictures, and data.binary_task (its data)."""

from collections import Counter

import numpy as np
import pytest
import torch

from argument_policy import check_policy
from course_lib import data, svm
from course_lib import poisoning as P
from course_lib.data import load_dataset

pytestmark = pytest.mark.poisoning


def _box_blobs(seed: int, n: int, d: int):
    """Overlapping classes inside [0, 1]^d (the attack's box)."""
    rng = np.random.default_rng(seed)
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    rng.shuffle(y)
    X = np.clip(0.5 + 0.45 * y[:, None] / np.sqrt(d) + 0.15 * rng.normal(size=(n, d)), 0, 1)
    return X, y


# ----------------------------------------------------------------------------- the gradient

def _retrained(Xtr, ytr, Xv, yv, xc, yc, C):
    """Validation loss of the SVM retrained with (xc, yc), and what fixes its active set."""
    X, y = np.vstack([Xtr, xc]), np.append(ytr, yc)
    sol = P.fit_svm(X, y, C, tol=1e-12)
    U = C / len(y)
    margins_v = yv * (Xv @ sol.w + sol.b)
    S = tuple(svm.support_sets(sol.alpha, C).margin)
    # with no margin SV, b is fixed by the two points at the ends of the primal's flat segment
    ends = svm.optimal_bias(y * (X @ sol.w) - 1, y)[2:] if not S else ()
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
        S = svm.support_sets(sol.alpha, C).margin
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


def test_binary_task_lives_in_data_and_is_reexported():
    assert P.binary_task is data.binary_task


# ----------------------------------------------------------------------------- pictures' numbers

def test_poisoned_boundary_and_loss_surface_are_the_retrained_svm():
    Xtr, ytr = _box_blobs(3, 20, 2)
    Xv, yv = _box_blobs(4, 40, 2)
    xc = np.array([0.8, 0.75])
    r = P.poisoned_boundary(Xtr, ytr, Xv, yv, xc, -1, C=20.0)
    w1, b1 = P.train_svm(np.vstack([Xtr, xc]), np.append(ytr, -1.0), 20.0)
    np.testing.assert_allclose(r.w_poisoned, w1)
    assert r.loss_poisoned == pytest.approx(P.hinge_loss(w1, b1, Xv, yv))
    g1, g2, loss = P.loss_surface(Xtr, ytr, Xv, yv, -1, C=20.0, resolution=4)
    for i, j in [(0, 0), (1, 3), (3, 2)]:
        at = P.poisoned_boundary(Xtr, ytr, Xv, yv, np.array([g1[j], g2[i]]), -1, C=20.0)
        assert loss[i, j] == pytest.approx(at.loss_poisoned, abs=1e-9)
    with pytest.raises(ValueError, match="resolution"):
        P.loss_surface(Xtr, ytr, Xv, yv, -1, C=1.0, resolution=1)
    with pytest.raises(ValueError, match="2-D"):
        P.loss_surface(np.hstack([Xtr, Xtr]), ytr, np.hstack([Xv, Xv]), yv, -1, C=1.0)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(P).failed == 0
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(data.binary_task, "binary_task", globs={"binary_task": data.binary_task}):
        runner.run(test)
    assert runner.failures == 0


# ----------------------------------------------------------------------------- argument policy

_XT, _YT = _box_blobs(0, 12, 2)
_XV, _YV = _box_blobs(1, 12, 2)
_X0 = _XT[np.flatnonzero(_YT > 0)[0]]


def _attack(**kw):
    args = dict(C=12.0, steps=2, step_size=0.1) | kw
    return P.poison_svm(_XT, _YT, _XV, _YV, _X0, -1, **args)[0]


def _task(**kw):
    return data.binary_task("digits", **(dict(positive=7, negative=1, n_train=5, n_val=5, seed=0) | kw))["X_val"]


POLICY = [
    (lambda v: _attack(C=v), "C", 12.0),
    (lambda v: _attack(steps=v), "steps", 2),
    (lambda v: _attack(step_size=v), "step_size", 0.125),
    (lambda v: _attack(tol=v), "tol", 2.0 ** -30),
    (lambda v: P.poison_gradient(_XT, _YT, _XV, _YV, _X0, -1, C=v), "C", 12.0),
    (lambda v: P.poison_gradient(_XT, _YT, _XV, _YV, _X0, -1, C=12.0, tol=v), "tol", 2.0 ** -30),
    (lambda v: P.poisoned_boundary(_XT, _YT, _XV, _YV, _X0, -1, C=v).w_poisoned, "C", 12.0),
    (lambda v: P.loss_surface(_XT, _YT, _XV, _YV, -1, C=v, resolution=2)[2], "C", 12.0),
    (lambda v: P.loss_surface(_XT, _YT, _XV, _YV, -1, C=12.0, resolution=v)[2], "resolution", 2),
    (lambda v: _task(n_train=v), "n_train", 5),
    (lambda v: _task(n_val=v), "n_val", 5),
    (lambda v: _task(seed=v), "seed", 3),
    (lambda v: _task(positive=v), "positive", 7),
]


@pytest.mark.parametrize("call, name, value", POLICY, ids=[f"{i}-{c[1]}" for i, c in enumerate(POLICY)])
def test_argument_policy(call, name, value):
    check_policy(call, name, value, np.array_equal)
