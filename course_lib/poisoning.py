"""Poisoning a linear SVM by gradient ascent on one training point (lecture 6).

The victim is the linear SVM of :mod:`course_lib.svm` (mean-hinge primal with constant C,
labels in {-1, +1}). The attacker (Biggio, Nelson & Laskov, ICML 2012) adds one point
``(x_c, y_c)`` and solves the bilevel problem ``max over x_c in [0, 1]^d of
L_val(w*(x_c), b*(x_c))``, the mean validation hinge loss of the SVM trained on the poisoned
set, by projected gradient ascent; the gradient goes through the trained SVM by implicit
differentiation of its KKT conditions (:func:`poison_gradient`).

=============== ================= ===========================================================
math            code              meaning
=============== ================= ===========================================================
w, b            ``w``, ``b``      the SVM's weights (d,) and bias; f(x) = w . x + b
alpha           ``alpha``         dual variables (n,), in [0, C / n]
C               ``C``             regularization constant of the mean-hinge primal
x_c, y_c        ``x_poison``,     the poison point (d,) in [0, 1]^d and its label in {-1, +1}
                ``y_poison``
t               ``step_size``     length of each ascent step (input units, Euclidean)
=============== ================= ===========================================================

:func:`poisoned_boundary` and :func:`loss_surface` are the computations behind lecture 6's
pictures (:mod:`course_lib.widgets.poisoning` draws them).

The SVM's names (``train_svm``, ``fit_svm``, ``hinge_loss``, ``classification_error``,
``svm_objective``, ``support_sets``, ``SVMSolution``, ``DEFAULT_TOL``) and the data helper
:func:`course_lib.data.binary_task` are importable from here too, as lecture 6 and the
assignment use them: ``from course_lib import poisoning; poisoning.train_svm(...)``.

Clean-label poisoning of neural networks by feature collision (Shafahi et al. 2018, lecture 10) is
in :mod:`course_lib.feature_collision`; ``poisoning.feature_collision`` is the same function.

Inputs may be NumPy arrays or torch tensors (the same kind for every array argument of a
call); results come back as the inputs' kind (for tensors: the dtype and device of
``x_poison``).

Examples:
    >>> rng = np.random.default_rng(0)
    >>> y = np.where(np.arange(40) % 2 == 0, 1.0, -1.0)
    >>> X = np.clip(0.5 + 0.2 * y[:, None] + 0.1 * rng.normal(size=(40, 2)), 0, 1)
    >>> x_end, history = poison_svm(X[:20], y[:20], X[20:], y[20:], X[0], -1, C=20.0,
    ...                             steps=10, step_size=0.05)
    >>> bool(history["loss"][-1] > history["loss"][0])
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from course_lib import _checks
from course_lib.data import binary_task
from course_lib.feature_collision import feature_collision
from course_lib.svm import (DEFAULT_TOL, Array, SupportSets, SVMSolution, as_kind_of, as_numpy,
                            check_labels, check_points, classification_error, fit_svm,
                            hinge_loss, one_blas_thread, optimal_bias, support_sets, svm_objective,
                            train_svm)

__all__ = ["DEFAULT_TOL", "PoisonedBoundary", "SVMSolution", "SupportSets", "binary_task",
           "classification_error", "feature_collision", "fit_svm", "hinge_loss", "loss_surface", "poison_gradient",
           "poison_svm", "poisoned_boundary", "support_sets", "svm_objective", "train_svm"]


# ----------------------------------------------------------------------------- the attack

@dataclass(frozen=True)
class _State:
    sol: SVMSolution
    loss: float
    error: float
    grad: np.ndarray


def _state(Xtr: np.ndarray, ytr: np.ndarray, Xv: np.ndarray, yv: np.ndarray, xc: np.ndarray, yc: float,
           C: float, tol: float, alpha0: np.ndarray | None) -> _State:
    """Retrain with the poison point (last row) and differentiate the validation loss."""
    X = np.vstack([Xtr, xc[None]])
    y = np.append(ytr, yc)
    sol = fit_svm(X, y, C, tol=tol, alpha0=alpha0)
    w, b, alpha = sol.w, sol.b, sol.alpha
    c = len(y) - 1
    margins = yv * (Xv @ w + b)
    loss = float(np.maximum(0.0, 1.0 - margins).mean())
    error = float((np.where(Xv @ w + b >= 0, 1.0, -1.0) != yv).mean())
    # validation points with a positive hinge: dL/d(w, b) = -1/m sum_k y_k (x_k, 1)
    act = margins < 1.0
    m = len(yv)
    gw = -(yv[act] @ Xv[act]) / m
    gb = -yv[act].sum() / m
    # Implicit differentiation of the KKT conditions on the margin SVs S (their set is
    # locally constant; alpha_k for k outside S stays at 0 or U, alpha_c included if c is
    # not in S). With w = sum_s alpha_s y_s x_s, differentiating y_t (w . x_t + b) = 1,
    # t in S, and sum_s y_s alpha_s = 0 in x_c gives
    #   Q_SS J_a + y_S J_b = R,  y_S^T J_a = 0,
    #   R_t = -alpha_c y_c y_t x_t^T - [t = c] y_c w^T        (rows (d,)),
    # and dw/dx_c = X_S^T diag(y_S) J_a + alpha_c y_c I,  db/dx_c = J_b.
    S = support_sets(alpha, C).margin
    ac = alpha[c]
    if len(S) == 0:
        # Every alpha is at a bound, so w = sum_s alpha_s y_s x_s moves only through x_c:
        # dw/dx_c = alpha_c y_c I. b is the midpoint of the primal's flat segment in b,
        # b = (b_lo + b_hi) / 2 with b_t = y_t - w . x_t (the kink of point t; lo == hi
        # when the minimum is a single kink), so db/dx_c = -(x_lo + x_hi)^T dw/dx_c / 2
        # - w [t = c] / 2 for each end t that is the poison point itself.
        G = y * (X @ w) - 1.0
        _, _, lo, hi = optimal_bias(G, y)
        db = -0.5 * ac * yc * (X[lo] + X[hi]) - 0.5 * w * ((lo == c) + (hi == c))
        grad = ac * yc * gw + db * gb
    else:
        XS, yS = X[S], y[S]
        k = len(S)
        A = np.zeros((k + 1, k + 1))
        A[:k, :k] = (yS[:, None] * yS[None, :]) * (XS @ XS.T)
        A[:k, k] = yS
        A[k, :k] = yS
        R = np.zeros((k + 1, X.shape[1]))
        R[:k] = -ac * yc * yS[:, None] * XS
        R[:k][S == c] -= yc * w
        # grad = (dw/dx_c)^T gw + (db/dx_c)^T gb = J^T v + alpha_c y_c gw with J = A^-1 R and
        # v = (diag(y_S) X_S gw, gb); A is symmetric, so J^T v = R^T z with A z = v (one
        # solve of size |S| + 1 instead of d). lstsq: S may be degenerate (|S| > d + 1).
        v = np.append(yS * (XS @ gw), gb)
        z = np.linalg.lstsq(A, v, rcond=None)[0]
        grad = R.T @ z + ac * yc * gw
    return _State(sol, loss, error, grad)


def _check_label(value: Any, name: str) -> float:
    """One label, -1 or +1 (a Python or NumPy integer or float, or a one-element tensor), as a float."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.reshape(())
    try:
        label = _checks.number(value, name)
    except _checks.ArgumentError:
        raise _checks.fail(name, "-1 or +1", value) from None
    if label not in (-1.0, 1.0):
        raise _checks.fail(name, "-1 or +1", value)
    return label


def _check_attack(X_train: Any, y_train: Any, X_val: Any, y_val: Any, x_poison: Any, y_poison: Any,
                  C: Any, tol: Any):
    Xtr = check_points(X_train, "X_train")
    ytr = check_labels(y_train, Xtr.shape[0], "y_train", "X_train", both=False)
    Xv = check_points(X_val, "X_val")
    if Xv.shape[1] != Xtr.shape[1]:
        raise ValueError(f"X_val must have {Xtr.shape[1]} features like X_train, got shape {Xv.shape}")
    yv = check_labels(y_val, Xv.shape[0], "y_val", "X_val", both=False)
    xc = as_numpy(x_poison, "x_poison")
    if xc.shape != (Xtr.shape[1],):
        raise ValueError(f"x_poison must have shape ({Xtr.shape[1]},), got {xc.shape}")
    if not np.isfinite(xc).all() or xc.min() < 0 or xc.max() > 1:
        raise ValueError("x_poison must lie in the box [0, 1]^d")
    yc = _check_label(y_poison, "y_poison")
    if not ((np.append(ytr, yc) > 0).any() and (np.append(ytr, yc) < 0).any()):
        raise ValueError("y_train with y_poison must contain both classes -1 and +1")
    return Xtr, ytr, Xv, yv, xc, yc, _checks.number(C, "C", gt=0), _checks.number(tol, "tol", gt=0)


@one_blas_thread
def poison_gradient(X_train: Array, y_train: Array, X_val: Array, y_val: Array, x_poison: Array,
                    y_poison: int, *, C: float, tol: float = 1e-10) -> Array:
    """Gradient in x_poison of the validation hinge loss of the SVM retrained with the poison.

    ``L(x_c) = hinge_loss(w*(x_c), b*(x_c), X_val, y_val)`` where ``(w*, b*)`` is
    :func:`train_svm` on the training set plus ``(x_c, y_c)``, with ``C`` applied to the
    n + 1 points (dual bound ``C / (n + 1)``). The gradient comes from implicit
    differentiation of the KKT conditions (Biggio et al. 2012): the sets of margin support
    vectors, error vectors and non-support vectors are assumed not to change for an
    infinitesimal move of x_c (true except on a set of measure zero), so the margin SVs'
    equations ``y_t (w . x_t + b) = 1`` and ``sum y alpha = 0`` stay satisfied, a linear
    system that gives ``dw/dx_c`` and ``db/dx_c``. It is zero when the poison point is not a
    support vector (alpha_c = 0, it does not touch the solution).

    Args:
        X_train: (n, d); y_train: (n,) in {-1, +1}.
        X_val: (m, d); y_val: (m,) in {-1, +1}.
        x_poison: (d,) in [0, 1]^d; y_poison: -1 or +1.
        C: regularization constant > 0 of the mean-hinge primal on the n + 1 points.
        tol: the SVM's duality gap tolerance (tight: the gradient assumes the exact solution).

    Returns:
        The gradient (d,), x_poison's kind (tensor: its dtype and device).

    Raises:
        ValueError: for bad shapes, labels, C <= 0, tol <= 0 or x_poison outside [0, 1]^d.
    """
    Xtr, ytr, Xv, yv, xc, yc, C, tol = _check_attack(X_train, y_train, X_val, y_val, x_poison,
                                                    y_poison, C, tol)
    return as_kind_of(x_poison, _state(Xtr, ytr, Xv, yv, xc, yc, C, tol, None).grad)


@one_blas_thread
def poison_svm(X_train: Array, y_train: Array, X_val: Array, y_val: Array, x_poison: Array,
               y_poison: int, *, C: float, steps: int, step_size: float,
               tol: float = 1e-10) -> tuple[Array, dict[str, np.ndarray]]:
    """Biggio, Nelson & Laskov (2012): projected gradient ascent on one poison point.

    Each step retrains the SVM on the training set plus ``(x_c, y_poison)`` (warm-started
    from the previous dual solution), takes the gradient ``g`` of the validation hinge loss
    (:func:`poison_gradient`) and moves ``x_c <- clip(x_c + step_size * g / ||g||, 0, 1)``;
    a zero gradient (the point is not a support vector) stops the point where it is.

    Args:
        X_train, y_train: clean training set (n, d), (n,) in {-1, +1}.
        X_val, y_val: the attacker's validation set (m, d), (m,) in {-1, +1}.
        x_poison: the starting point (d,) in [0, 1]^d, e.g. a training point of the other
            class (so that with label ``y_poison`` it is a label flip).
        y_poison: its label, -1 or +1 (fixed during the attack).
        C: regularization constant > 0 of the mean-hinge primal on the n + 1 points.
        steps: number of ascent steps >= 0.
        step_size: Euclidean length of each step > 0, in input units.
        tol: the SVM's duality gap tolerance.

    Returns:
        ``(x_poison, history)``: the final point (x_poison's kind, in [0, 1]^d) and a dict of
        NumPy arrays with ``steps + 1`` rows, entry t after t steps (entry 0 is the label
        flip alone, before any move): ``"loss"`` the validation hinge loss, ``"error"``
        the validation error, ``"x"`` the point (steps + 1, d), ``"grad_norm"`` ||g||.

    Raises:
        ValueError: for bad shapes, labels, C <= 0, tol <= 0, step_size <= 0, steps < 0
            (or not an integer), or x_poison outside [0, 1]^d.
    """
    Xtr, ytr, Xv, yv, xc, yc, C, tol = _check_attack(X_train, y_train, X_val, y_val, x_poison,
                                                    y_poison, C, tol)
    steps = _checks.integer(steps, "steps", ge=0)
    step_size = _checks.number(step_size, "step_size", gt=0)
    losses, errors, path, norms = [], [], [], []
    alpha = None
    for t in range(steps + 1):
        st = _state(Xtr, ytr, Xv, yv, xc, yc, C, tol, alpha)
        alpha = st.sol.alpha
        g_norm = float(np.linalg.norm(st.grad))
        losses.append(st.loss)
        errors.append(st.error)
        path.append(xc.copy())
        norms.append(g_norm)
        if t == steps:
            break
        if g_norm > 0:
            xc = np.clip(xc + step_size * st.grad / g_norm, 0.0, 1.0)
    history = {"loss": np.array(losses), "error": np.array(errors), "x": np.array(path),
               "grad_norm": np.array(norms)}
    return as_kind_of(x_poison, xc), history




# ----------------------------------------------------------------------------- pictures' numbers

@dataclass(frozen=True)
class PoisonedBoundary:
    """An SVM trained without and with one poison point (NumPy float64).

    Attributes:
        w_clean, b_clean: trained on (X, y) alone.
        w_poisoned, b_poisoned: trained on (X, y) plus (x_poison, y_poison).
        error_clean, error_poisoned: validation error of each (fraction in [0, 1]).
        loss_clean, loss_poisoned: validation mean hinge loss of each.
    """

    w_clean: np.ndarray
    b_clean: float
    w_poisoned: np.ndarray
    b_poisoned: float
    error_clean: float
    error_poisoned: float
    loss_clean: float
    loss_poisoned: float


def poisoned_boundary(X: Array, y: Array, X_val: Array, y_val: Array, x_poison: Array, y_poison: int, *,
                      C: float) -> PoisonedBoundary:
    """The SVM before and after adding ``(x_poison, y_poison)`` to the training set.

    Args:
        X, y: training set (n, d), (n,) in {-1, +1}; NumPy or torch.
        X_val, y_val: validation set (m, d), (m,) in {-1, +1}.
        x_poison: (d,) in [0, 1]^d; y_poison: -1 or +1.
        C: the SVM's constant > 0, applied to each training set as given (the clean SVM
            with C on n points, the poisoned one with C on n + 1).

    Returns:
        A :class:`PoisonedBoundary`.

    Raises:
        ValueError: as :func:`poison_gradient`.

    Examples:
        >>> X, y = np.array([[0.1, 0.1], [0.2, 0.3], [0.9, 0.9], [0.8, 0.7]]), np.array([-1.0, -1, 1, 1])
        >>> r = poisoned_boundary(X, y, X, y, np.array([0.9, 0.8]), -1, C=10.0)
        >>> r.error_clean, r.loss_poisoned > r.loss_clean
        (0.0, True)
    """
    Xtr, ytr, Xv, yv, xc, yc, C, _ = _check_attack(X, y, X_val, y_val, x_poison, y_poison, C, DEFAULT_TOL)
    w0, b0 = train_svm(Xtr, ytr, C)
    w1, b1 = train_svm(np.vstack([Xtr, xc]), np.append(ytr, yc), C)
    return PoisonedBoundary(w0, b0, w1, b1, classification_error(w0, b0, Xv, yv),
                            classification_error(w1, b1, Xv, yv),
                            hinge_loss(w0, b0, Xv, yv), hinge_loss(w1, b1, Xv, yv))


@one_blas_thread
def loss_surface(X: Array, y: Array, X_val: Array, y_val: Array, y_poison: int, *, C: float,
                 resolution: int = 25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validation hinge loss of the SVM retrained with a poison point at each node of a grid.

    The attacker's objective over [0, 1]^2 (Biggio et al. 2012, Fig. 1).

    Args:
        X, y, X_val, y_val: 2-D training and validation sets, labels in {-1, +1}.
        y_poison: the poison point's label.
        C: the SVM's constant > 0 (on the n + 1 points).
        resolution: grid nodes per axis over [0, 1], >= 2.

    Returns:
        ``(g1, g2, loss)``: the node coordinates (resolution,) each and the losses
        (resolution, resolution), ``loss[i, j]`` at ``x_poison = (g1[j], g2[i])``
        (the layout ``contourf(g1, g2, loss)`` expects).

    Raises:
        ValueError: if the data are not 2-D, resolution < 2, or as :func:`poisoned_boundary`.

    Examples:
        >>> X, y = np.array([[0.1, 0.1], [0.2, 0.3], [0.9, 0.9], [0.8, 0.7]]), np.array([-1.0, -1, 1, 1])
        >>> g1, g2, loss = loss_surface(X, y, X, y, -1, C=10.0, resolution=3)
        >>> loss.shape
        (3, 3)
    """
    resolution = _checks.integer(resolution, "resolution", ge=2)
    if check_points(X, "X").shape[1] != 2:
        raise ValueError(f"X must be 2-D points (n, 2), got {as_numpy(X, 'X').shape}")
    Xtr, ytr, Xv, yv, _, yc, C, _ = _check_attack(X, y, X_val, y_val, np.full(2, 0.5), y_poison, C,
                                                  DEFAULT_TOL)
    g = np.linspace(0.0, 1.0, resolution)
    loss = np.empty((resolution, resolution))
    y_all = np.append(ytr, yc)
    alpha = None
    for i, x2 in enumerate(g):
        for j, x1 in enumerate(g if i % 2 == 0 else g[::-1]):  # snake: warm starts stay close
            sol = fit_svm(np.vstack([Xtr, [x1, x2]]), y_all, C, tol=DEFAULT_TOL, alpha0=alpha)
            alpha = sol.alpha
            loss[i, j if i % 2 == 0 else resolution - 1 - j] = hinge_loss(sol.w, sol.b, Xv, yv)
    return g, g.copy(), loss
