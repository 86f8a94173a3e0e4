"""Poisoning a linear SVM by gradient ascent on one training point (lecture 6).

The victim trains a linear SVM on labels in {-1, +1} by minimizing the primal

    P(w, b) = 1/2 ||w||^2 + C * 1/n sum_i max(0, 1 - y_i (w . x_i + b))

(the slides' objective: the *mean* hinge loss; scikit-learn's ``SVC(kernel="linear", C=c)``
minimizes the *sum*, so its ``c`` is our ``C / n``). Its dual is

    max_alpha  sum_i alpha_i - 1/2 ||sum_i alpha_i y_i x_i||^2
    s.t.       0 <= alpha_i <= U = C / n,   sum_i alpha_i y_i = 0,

with ``w = sum_i alpha_i y_i x_i``. Points with ``0 < alpha_i < U`` are *margin* support
vectors (``y_i f(x_i) = 1``), points with ``alpha_i = U`` are *error* vectors (inside the
margin or misclassified).

The attacker (Biggio, Nelson & Laskov, ICML 2012) adds one point ``(x_c, y_c)`` and
solves the bilevel problem ``max over x_c in [0, 1]^d of L_val(w*(x_c), b*(x_c))``,
the mean validation hinge loss of the SVM trained on the poisoned set, by projected
gradient ascent; the gradient goes through the trained SVM by implicit differentiation
of its KKT conditions (:func:`poison_gradient`).

=============== ================= ===========================================================
math            code              meaning
=============== ================= ===========================================================
w, b            ``w``, ``b``      the SVM's weights (d,) and bias; f(x) = w . x + b
alpha           ``alpha``         dual variables (n,), in [0, C / n]
C               ``C``             regularization constant of the mean-hinge primal above
x_c, y_c        ``x_poison``,     the poison point (d,) in [0, 1]^d and its label in {-1, +1}
                ``y_poison``
t               ``step_size``     length of each ascent step (input units, Euclidean)
=============== ================= ===========================================================

Inputs may be NumPy arrays or torch tensors (the same kind for every array argument of a
call). The solver runs in float64 NumPy on the CPU: it is a small sequential QP (a few
hundred points), where a GPU gives nothing; results come back as the inputs' kind, and
for tensors with the dtype and on the device of ``X`` (or of ``x_poison``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, Union

import numpy as np
import torch
from torch import Tensor

Array = Union[np.ndarray, Tensor]

_F = TypeVar("_F", bound=Callable[..., Any])


def _one_blas_thread(fn: _F) -> _F:
    """Run fn with BLAS limited to one thread: on matrices of a few hundred rows, threads
    only spin (tens of times slower on a busy 2-core machine). threadpoolctl comes with
    scikit-learn; without it this is a no-op."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


CHECK_EVERY = 10  # SMO iterations between duality gap checks
POLISH_EVERY = 50  # SMO iterations between exact solves on the active set

DEFAULT_TOL = 1e-8
"""Default stopping tolerance: the duality gap, in units of the primal objective."""


# ----------------------------------------------------------------------------- input checks

def _as_numpy(a: Any, name: str) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    if isinstance(a, np.ndarray):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
        return a.astype(np.float64)
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(a).__name__}")


def _check_X(X: Any, name: str) -> np.ndarray:
    Xn = _as_numpy(X, name)
    if Xn.ndim != 2 or Xn.shape[0] == 0 or Xn.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n, d) with n, d >= 1, got {Xn.shape}")
    if not np.isfinite(Xn).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return Xn


def _check_y(y: Any, n: int, name: str, xname: str, *, both: bool = True) -> np.ndarray:
    yn = _as_numpy(y, name)
    if yn.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match {xname}, got {yn.shape}")
    if not np.isin(yn, (-1.0, 1.0)).all():
        bad = np.unique(yn[~np.isin(yn, (-1.0, 1.0))])[:5]
        raise ValueError(f"{name} must hold labels in {{-1, +1}}, got values such as {bad.tolist()}")
    if both and not ((yn > 0).any() and (yn < 0).any()):
        raise ValueError(f"{name} must contain both classes -1 and +1")
    return yn


def _check_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def _check_label(value: Any, name: str) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or value not in (-1, 1):
        raise ValueError(f"{name} must be -1 or +1, got {value!r}")
    return float(value)


def _like(ref: Any, a: np.ndarray) -> Array:
    """``a`` as ``ref``'s kind: a tensor with ref's dtype and device, or a float64 array."""
    if isinstance(ref, Tensor):
        dtype = ref.dtype if ref.is_floating_point() else torch.get_default_dtype()
        return torch.as_tensor(a, dtype=dtype, device=ref.device)
    return a


# ----------------------------------------------------------------------------- the SVM

@dataclass(frozen=True)
class SVMSolution:
    """A solved linear SVM (NumPy float64).

    Attributes:
        w: weights (d,).
        b: bias.
        alpha: dual variables (n,), in [0, C / n], ``sum alpha_i y_i = 0``.
        gap: duality gap ``P(w, b) - D(alpha) >= P(w, b) - P*`` at return (<= tol).
        iterations: SMO iterations taken.
    """

    w: np.ndarray
    b: float
    alpha: np.ndarray
    gap: float
    iterations: int


def _optimal_bias(G: np.ndarray, y: np.ndarray) -> tuple[float, float, int, int]:
    """The b minimizing ``sum_i max(0, -G_i - y_i b)``, that minimum, and the points fixing b.

    With ``G = Q alpha - 1`` we have ``y_i (w . x_i) = G_i + 1``, so the sum is the summed hinge
    loss of (w, b). It is convex and piecewise linear with a kink at ``b_i = y_i - w . x_i =
    -y_i G_i`` for each point i (where i sits on the margin). Where the minimum is a flat
    segment (no margin support vector), its midpoint is returned, as LIBSVM does.

    Returns:
        ``(b, min_sum, lo, hi)``: b equals ``(b_lo + b_hi) / 2``, the kinks of points lo and
        hi (lo == hi when the minimum is a single kink).
    """
    idx = np.concatenate([np.flatnonzero(y > 0), np.flatnonzero(y < 0)])
    npos = int((y > 0).sum())
    a_order = np.argsort(-G[idx[:npos]], kind="stable")
    c_order = np.argsort(G[idx[npos:]], kind="stable")
    a = -G[idx[:npos]][a_order]  # y = +1: hinge > 0 when b < a_i
    c = G[idx[npos:]][c_order]   # y = -1: hinge > 0 when b > c_i
    owner = np.concatenate([idx[:npos][a_order], idx[npos:][c_order]])
    cand = np.concatenate([a, c])
    suffix_a = np.concatenate([np.cumsum(a[::-1])[::-1], [0.0]])  # sum of a[k:]
    prefix_c = np.concatenate([[0.0], np.cumsum(c)])               # sum of c[:k]
    ka = np.searchsorted(a, cand, side="right")
    kc = np.searchsorted(c, cand, side="left")
    f = (suffix_a[ka] - (len(a) - ka) * cand) + (kc * cand - prefix_c[kc])
    fmin = f.min()
    flat = np.flatnonzero(f <= fmin + 1e-12 * max(1.0, abs(fmin)))
    lo, hi = flat[np.argmin(cand[flat])], flat[np.argmax(cand[flat])]
    return 0.5 * (cand[lo] + cand[hi]), float(max(fmin, 0.0)), int(owner[lo]), int(owner[hi])


def _gap(alpha: np.ndarray, G: np.ndarray, y: np.ndarray, U: float) -> tuple[float, float]:
    """(duality gap, optimal bias) for a feasible alpha with ``G = Q alpha - 1``."""
    wsq = float(alpha @ (G + 1.0))  # ||w||^2 = alpha^T Q alpha
    dual = float(alpha.sum()) - 0.5 * wsq
    b, hinge_sum, _, _ = _optimal_bias(G, y)
    primal = 0.5 * wsq + U * hinge_sum
    return primal - dual, b


def _polish(K: np.ndarray, y: np.ndarray, U: float, alpha: np.ndarray) -> np.ndarray | None:
    """Solve the KKT equations exactly on the current active set, or None if that fails.

    Margin SVs F satisfy ``y_t (w . x_t + b) = 1`` and ``sum_s alpha_s y_s = 0``, a linear
    system in (alpha_F, b) once the bounded alphas are fixed at 0 or U.
    """
    thr = 1e-8 * U
    a = alpha.copy()
    a[a < thr] = 0.0
    a[a > U - thr] = U
    free = (a > 0) & (a < U)
    if not free.any():
        return a
    F, B = np.flatnonzero(free), np.flatnonzero(a == U)
    m = len(F)
    A = np.zeros((m + 1, m + 1))
    A[:m, :m] = (y[F, None] * y[None, F]) * K[np.ix_(F, F)]
    A[:m, m] = y[F]
    A[m, :m] = y[F]
    rhs = np.empty(m + 1)
    rhs[:m] = 1.0 - y[F] * (K[np.ix_(F, B)] @ (U * y[B]))
    rhs[m] = -U * y[B].sum()
    try:
        sol = np.linalg.solve(A, rhs)
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(sol).all() or (sol[:m] < 0).any() or (sol[:m] > U).any():
        return None
    a[F] = sol[:m]
    return a


def _smo(K: np.ndarray, y: np.ndarray, U: float, tol: float, alpha0: np.ndarray | None,
         max_iter: int) -> tuple[np.ndarray, float, float, int]:
    """SMO with LIBSVM's second-order working set selection, stopped on the duality gap.

    Every ``POLISH_EVERY`` iterations the KKT equations are solved exactly on the current
    active set (:func:`_polish`); the result is adopted when feasible with a smaller gap.
    SMO converges linearly and can crawl on degenerate problems (large C, low rank),
    while the polished point is exact as soon as the active set is right.
    """
    n = len(y)
    alpha = np.zeros(n) if alpha0 is None else np.clip(alpha0, 0.0, U)
    if alpha0 is not None and abs(alpha @ y) > 1e-12 * max(1.0, U * n):
        alpha = np.zeros(n)  # an infeasible warm start: start cold
    G = y * (K @ (alpha * y)) - 1.0
    dK = np.diag(K)
    it = 0
    while True:
        if it % CHECK_EVERY == 0:
            G = y * (K @ (alpha * y)) - 1.0  # fresh: no drift from the incremental updates
            gap, b = _gap(alpha, G, y, U)
            if it % POLISH_EVERY == 0:
                polished = _polish(K, y, U, alpha)
                if polished is not None:
                    Gp = y * (K @ (polished * y)) - 1.0
                    gap_p, b_p = _gap(polished, Gp, y, U)
                    if gap_p <= gap:
                        alpha, G, gap, b = polished, Gp, gap_p, b_p
            if gap <= tol:
                break
        yG = -y * G
        up = np.where(y > 0, alpha < U, alpha > 0)
        low = np.where(y > 0, alpha > 0, alpha < U)
        i = int(np.argmax(np.where(up, yG, -np.inf)))
        m = yG[i]
        cand = low & (yG < m)
        if not cand.any():  # KKT hold exactly: nothing left to improve
            G = y * (K @ (alpha * y)) - 1.0
            gap, b = _gap(alpha, G, y, U)
            break
        if it >= max_iter:
            raise RuntimeError(f"SMO did not reach tol={tol} in max_iter={max_iter} iterations "
                               f"(duality gap {gap:.3g}); raise max_iter or tol")
        bb = m - yG
        aa = np.maximum(dK[i] + dK - 2.0 * K[i], 1e-12)
        j = int(np.argmax(np.where(cand, bb * bb / aa, -np.inf)))
        # move alpha_i by +y_i delta and alpha_j by -y_j delta: sum alpha y is unchanged
        delta = bb[j] / aa[j]
        room_i = U - alpha[i] if y[i] > 0 else alpha[i]
        room_j = alpha[j] if y[j] > 0 else U - alpha[j]
        delta = min(delta, room_i, room_j)
        ai, aj = alpha[i] + y[i] * delta, alpha[j] - y[j] * delta
        # land exactly on a bound when the step was clipped by it
        if delta == room_i:
            ai = U if y[i] > 0 else 0.0
        if delta == room_j:
            aj = 0.0 if y[j] > 0 else U
        di, dj = ai - alpha[i], aj - alpha[j]
        alpha[i], alpha[j] = ai, aj
        G += y * (K[:, i] * (y[i] * di) + K[:, j] * (y[j] * dj))
        it += 1
    return alpha, gap, b, it


@_one_blas_thread
def fit_svm(X: Array, y: Array, C: float, *, tol: float = DEFAULT_TOL, alpha0: Array | None = None,
            max_iter: int = 1_000_000) -> SVMSolution:
    """Solve the linear SVM's dual to a duality gap <= tol; w, b and the dual variables.

    The dual QP is solved by SMO (pairs of coordinates, LIBSVM's second-order working set
    selection) on the Gram matrix, stopped when the duality gap ``P(w, b) - D(alpha)``, a
    bound on the primal objective's distance to its optimum, is at most ``tol``; b
    minimizes the primal given w. Every 50 iterations the solution is *polished*: the KKT
    equations of the current margin support vectors are solved exactly (a linear system)
    and the result kept when it is feasible with a smaller gap. Once the active set is
    right this gives w, b exact to rounding (what :func:`poison_gradient` differentiates).
    SMO itself converges linearly: with a large C on heavily overlapping classes it needs
    ~1e5 iterations (as LIBSVM does), about 40 microseconds each here.

    Args:
        X: training inputs (n, d), NumPy or torch, any float dtype (float64 inside).
        y: labels (n,) in {-1, +1}, both classes present.
        C: regularization constant > 0 of the mean-hinge primal (scikit-learn's C is C / n).
        tol: duality gap at which to stop, > 0, in units of the primal objective.
        alpha0: a warm start (n,), e.g. the previous solution when one point moved;
            ignored if infeasible.
        max_iter: SMO iterations allowed.

    Returns:
        An :class:`SVMSolution` (NumPy float64).

    Raises:
        ValueError: for bad shapes, labels not in {-1, +1} or a single class, C <= 0, tol <= 0.
        RuntimeError: if ``max_iter`` iterations do not reach ``tol``.
    """
    Xn = _check_X(X, "X")
    yn = _check_y(y, Xn.shape[0], "y", "X")
    C = _check_number(C, "C")
    tol = _check_number(tol, "tol")
    a0 = None if alpha0 is None else _as_numpy(alpha0, "alpha0")
    if a0 is not None and a0.shape != yn.shape:
        raise ValueError(f"alpha0 must have shape {yn.shape}, got {a0.shape}")
    return _fit(Xn, yn, C, tol, a0, max_iter)


def _fit(Xn: np.ndarray, yn: np.ndarray, C: float, tol: float, alpha0: np.ndarray | None,
         max_iter: int = 1_000_000) -> SVMSolution:
    U = C / len(yn)
    alpha, gap, b, it = _smo(Xn @ Xn.T, yn, U, tol, alpha0, max_iter)
    return SVMSolution(w=Xn.T @ (alpha * yn), b=float(b), alpha=alpha, gap=float(gap), iterations=it)


def train_svm(X: Array, y: Array, C: float, *, tol: float = DEFAULT_TOL) -> tuple[Array, float]:
    """Train a linear SVM: minimize ``1/2 ||w||^2 + C * mean_i max(0, 1 - y_i (w . x_i + b))``.

    Solved in the dual by :func:`fit_svm`; the stopping rule is a duality gap <= tol, so
    the returned (w, b) has a primal objective within tol of the optimum. Equivalent to
    scikit-learn's ``SVC(kernel="linear", C=C / n)``.

    Args:
        X: inputs (n, d), NumPy array or torch tensor.
        y: labels (n,) in {-1, +1} (any numeric dtype), both classes present.
        C: regularization constant > 0.
        tol: duality gap at which to stop, > 0.

    Returns:
        ``(w, b)``: w of shape (d,) (a tensor with X's dtype and device if X is a tensor,
        else float64 NumPy), b a Python float.

    Raises:
        ValueError: for bad shapes, labels, C <= 0 or tol <= 0.
    """
    sol = fit_svm(X, y, C, tol=tol)
    return _like(X, sol.w), sol.b


def _check_wbXy(w: Any, b: Any, X: Any, y: Any) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    Xn = _check_X(X, "X")
    wn = _as_numpy(w, "w")
    if wn.shape != (Xn.shape[1],):
        raise ValueError(f"w must have shape ({Xn.shape[1]},) to match X {Xn.shape}, got {wn.shape}")
    if isinstance(b, Tensor):
        if b.numel() != 1:
            raise ValueError(f"b must be a scalar, got shape {tuple(b.shape)}")
        b = b.item()
    if isinstance(b, bool) or not isinstance(b, (int, float, np.floating, np.integer)) or not math.isfinite(b):
        raise ValueError(f"b must be a finite number, got {b!r}")
    yn = _check_y(y, Xn.shape[0], "y", "X", both=False)
    return wn, float(b), Xn, yn


def hinge_loss(w: Array, b: float | Tensor, X: Array, y: Array) -> float | Tensor:
    """Mean hinge loss ``1/n sum_i max(0, 1 - y_i (w . x_i + b))``: the attacker's objective.

    Args:
        w: weights (d,); b: bias (a number or a 0-dim tensor).
        X: inputs (n, d); y: labels (n,) in {-1, +1}.

    Returns:
        A Python float for NumPy inputs; for tensor inputs a 0-dim tensor computed with
        torch operations (differentiable in w, b and X) on X's device.

    Raises:
        ValueError: for mismatched shapes or labels not in {-1, +1}.
    """
    wn, bn, Xn, yn = _check_wbXy(w, b, X, y)
    if isinstance(X, Tensor):
        yt = torch.as_tensor(y, device=X.device).to(X.dtype)
        wt = torch.as_tensor(w, device=X.device).to(X.dtype)
        return torch.clamp(1 - yt * (X @ wt + b), min=0).mean()
    return float(np.maximum(0.0, 1.0 - yn * (Xn @ wn + bn)).mean())


def classification_error(w: Array, b: float | Tensor, X: Array, y: Array) -> float:
    """Fraction of points with ``sign(w . x + b) != y``, where sign(0) counts as +1."""
    wn, bn, Xn, yn = _check_wbXy(w, b, X, y)
    pred = np.where(Xn @ wn + bn >= 0, 1.0, -1.0)
    return float((pred != yn).mean())


def svm_objective(w: Array, b: float | Tensor, X: Array, y: Array, C: float) -> float:
    """The primal ``1/2 ||w||^2 + C * mean hinge`` that :func:`train_svm` minimizes."""
    C = _check_number(C, "C")
    wn, bn, Xn, yn = _check_wbXy(w, b, X, y)
    return float(0.5 * wn @ wn + C * np.maximum(0.0, 1.0 - yn * (Xn @ wn + bn)).mean())


# ----------------------------------------------------------------------------- the attack

@dataclass(frozen=True)
class _State:
    sol: SVMSolution
    loss: float
    error: float
    grad: np.ndarray


def _margin_set(alpha: np.ndarray, U: float) -> np.ndarray:
    thr = 1e-8 * U
    return np.flatnonzero((alpha > thr) & (alpha < U - thr))


def _state(Xtr: np.ndarray, ytr: np.ndarray, Xv: np.ndarray, yv: np.ndarray, xc: np.ndarray, yc: float,
           C: float, tol: float, alpha0: np.ndarray | None) -> _State:
    """Retrain with the poison point (last row) and differentiate the validation loss."""
    X = np.vstack([Xtr, xc[None]])
    y = np.append(ytr, yc)
    sol = _fit(X, y, C, tol, alpha0)
    w, b, alpha = sol.w, sol.b, sol.alpha
    U = C / len(y)
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
    S = _margin_set(alpha, U)
    ac = alpha[c]
    if len(S) == 0:
        # Every alpha is at a bound, so w = sum_s alpha_s y_s x_s moves only through x_c:
        # dw/dx_c = alpha_c y_c I. b is the midpoint of the primal's flat segment in b,
        # b = (b_lo + b_hi) / 2 with b_t = y_t - w . x_t (the kink of point t; lo == hi
        # when the minimum is a single kink), so db/dx_c = -(x_lo + x_hi)^T dw/dx_c / 2
        # - w [t = c] / 2 for each end t that is the poison point itself.
        G = y * (X @ w) - 1.0
        _, _, lo, hi = _optimal_bias(G, y)
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


def _check_attack(X_train: Any, y_train: Any, X_val: Any, y_val: Any, x_poison: Any, y_poison: Any,
                  C: Any, tol: Any):
    Xtr = _check_X(X_train, "X_train")
    ytr = _check_y(y_train, Xtr.shape[0], "y_train", "X_train", both=False)
    Xv = _check_X(X_val, "X_val")
    if Xv.shape[1] != Xtr.shape[1]:
        raise ValueError(f"X_val must have {Xtr.shape[1]} features like X_train, got shape {Xv.shape}")
    yv = _check_y(y_val, Xv.shape[0], "y_val", "X_val", both=False)
    xc = _as_numpy(x_poison, "x_poison")
    if xc.shape != (Xtr.shape[1],):
        raise ValueError(f"x_poison must have shape ({Xtr.shape[1]},), got {xc.shape}")
    if not np.isfinite(xc).all() or xc.min() < 0 or xc.max() > 1:
        raise ValueError("x_poison must lie in the box [0, 1]^d")
    yc = _check_label(y_poison, "y_poison")
    if not ((np.append(ytr, yc) > 0).any() and (np.append(ytr, yc) < 0).any()):
        raise ValueError("y_train with y_poison must contain both classes -1 and +1")
    return Xtr, ytr, Xv, yv, xc, yc, _check_number(C, "C"), _check_number(tol, "tol")


@_one_blas_thread
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
    return _like(x_poison, _state(Xtr, ytr, Xv, yv, xc, yc, C, tol, None).grad)


@_one_blas_thread
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
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    step_size = _check_number(step_size, "step_size")
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
    return _like(x_poison, xc), history


# ----------------------------------------------------------------------------- data

def binary_task(dataset: str, positive: int, negative: int, *, n_train: int, n_val: int,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Two digits of a :func:`course_lib.data.load_dataset` data set as an SVM task.

    The train split's images of the two classes are shuffled (seeded) and the first
    ``n_train`` become the training set, the next ``n_val`` the attacker's validation set;
    the test split's images of the two classes are the test set.

    Args:
        dataset: ``"mnist5k"``, ``"digits"`` or another name :func:`load_dataset` accepts.
        positive, negative: the class indices labelled +1 and -1 (e.g. 7 and 1).
        n_train, n_val: sizes >= 1 whose sum does not exceed the two classes' train images.
        seed: seeds the shuffle.

    Returns:
        A dict of float64 NumPy arrays: ``X_train`` (n_train, d), ``y_train`` (n_train,),
        ``X_val``, ``y_val``, ``X_test``, ``y_test``; images flattened to d pixels in [0, 1],
        labels in {-1, +1}.

    Raises:
        ValueError: for classes the data set does not have, equal classes, or sizes that do not fit.
    """
    from course_lib.data import load_dataset

    if positive == negative:
        raise ValueError(f"positive and negative must differ, got {positive} and {negative}")
    data = load_dataset(dataset)
    for name, c in (("positive", positive), ("negative", negative)):
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < data.num_classes:
            raise ValueError(f"{name} must be a class of {dataset!r}, an integer in [0, {data.num_classes}), got {c!r}")

    def pick(split) -> tuple[np.ndarray, np.ndarray]:
        x, y = split.tensors
        keep = (y == positive) | (y == negative)
        X = x[keep].flatten(1).to(torch.float64).numpy()
        return X, np.where(y[keep].numpy() == positive, 1.0, -1.0)

    X, y = pick(data.train)
    for name, value in (("n_train", n_train), ("n_val", n_val)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if n_train + n_val > len(y):
        raise ValueError(f"n_train + n_val = {n_train + n_val} exceeds the {len(y)} training images "
                         f"of classes {positive} and {negative}")
    n_train, n_val = int(n_train), int(n_val)
    order = np.random.default_rng(seed).permutation(len(y))
    tr, va = order[:n_train], order[n_train:n_train + n_val]
    X_test, y_test = pick(data.test)
    return {"X_train": X[tr], "y_train": y[tr], "X_val": X[va], "y_val": y[va],
            "X_test": X_test, "y_test": y_test}
