"""A linear SVM trained exactly: the victim of lecture 6's poisoning attack.

The SVM minimizes the primal, on labels in {-1, +1},

    P(w, b) = 1/2 ||w||^2 + C * 1/n sum_i max(0, 1 - y_i (w . x_i + b))

(the slides' objective: the *mean* hinge loss; scikit-learn's ``SVC(kernel="linear", C=c)``
minimizes the *sum*, so its ``c`` is our ``C / n``). Its dual is

    max_alpha  sum_i alpha_i - 1/2 ||sum_i alpha_i y_i x_i||^2
    s.t.       0 <= alpha_i <= U = C / n,   sum_i alpha_i y_i = 0,

with ``w = sum_i alpha_i y_i x_i``. Points with ``0 < alpha_i < U`` are *margin* support
vectors (``y_i f(x_i) = 1``), points with ``alpha_i = U`` are *error* vectors (inside the
margin or misclassified), the rest have ``alpha_i = 0`` (:func:`support_sets`).

Inputs may be NumPy arrays or torch tensors (the same kind for every array argument of a
call). The solver runs in float64 NumPy on the CPU: it is a small sequential QP (a few
hundred points), where a GPU gives nothing; results come back as the inputs' kind, and
for tensors with the dtype and on the device of ``X``.

Examples:
    >>> X = np.array([[0.0, 0.0], [0.1, 0.2], [1.0, 1.0], [0.9, 0.8]])
    >>> y = np.array([-1.0, -1.0, 1.0, 1.0])
    >>> w, b = train_svm(X, y, C=100.0)
    >>> classification_error(w, b, X, y)
    0.0
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar, Union

import numpy as np
import torch
from torch import Tensor

from course_lib import _checks

Array = Union[np.ndarray, Tensor]

_F = TypeVar("_F", bound=Callable[..., Any])
_blas = threading.local()


def one_blas_thread(fn: _F) -> _F:
    """Run fn with BLAS limited to one thread (on a few hundred rows threads only spin, tens of
    times slower on a busy 2-core machine); set once by the outermost of nested calls.
    threadpoolctl comes with scikit-learn; without it this is a no-op."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if getattr(_blas, "limited", False):
            return fn(*args, **kwargs)
        with threadpool_limits(1, user_api="blas"):
            _blas.limited = True
            try:
                return fn(*args, **kwargs)
            finally:
                _blas.limited = False

    return wrapper  # type: ignore[return-value]


CHECK_EVERY = 10  # SMO iterations between duality gap checks
POLISH_EVERY = 50  # SMO iterations between exact solves on the active set

DEFAULT_TOL = 1e-8
"""Default stopping tolerance: the duality gap, in units of the primal objective."""


# ----------------------------------------------------------------------------- input checks
# Array checks, shared with course_lib.poisoning (numbers go through course_lib._checks).

def as_numpy(a: Any, name: str) -> np.ndarray:
    """A float64 NumPy copy of a NumPy array or a torch tensor (any device).

    Raises:
        TypeError: for anything else, or a non-numeric array.
    """
    if isinstance(a, Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    if isinstance(a, np.ndarray):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
        return a.astype(np.float64)
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(a).__name__}")


def check_points(X: Any, name: str) -> np.ndarray:
    """``X`` as float64 (n, d) with n, d >= 1, all finite; else a ValueError naming it."""
    Xn = as_numpy(X, name)
    if Xn.ndim != 2 or Xn.shape[0] == 0 or Xn.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n, d) with n, d >= 1, got {Xn.shape}")
    if not np.isfinite(Xn).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return Xn


def check_labels(y: Any, n: int, name: str, xname: str, *, both: bool = True) -> np.ndarray:
    """``y`` as float64 (n,) in {-1, +1} (both classes present if ``both``); else a ValueError."""
    yn = as_numpy(y, name)
    if yn.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match {xname}, got {yn.shape}")
    if not np.isin(yn, (-1.0, 1.0)).all():
        bad = np.unique(yn[~np.isin(yn, (-1.0, 1.0))])[:5]
        raise ValueError(f"{name} must hold labels in {{-1, +1}}, got values such as {bad.tolist()}")
    if both and not ((yn > 0).any() and (yn < 0).any()):
        raise ValueError(f"{name} must contain both classes -1 and +1")
    return yn


def as_kind_of(ref: Any, a: np.ndarray) -> Array:
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


def optimal_bias(G: np.ndarray, y: np.ndarray) -> tuple[float, float, int, int]:
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
    b, hinge_sum, _, _ = optimal_bias(G, y)
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


@one_blas_thread
def fit_svm(X: Array, y: Array, C: float, *, tol: float = DEFAULT_TOL, alpha0: Array | None = None,
            max_iter: int = 1_000_000) -> SVMSolution:
    """Solve the linear SVM's dual to a duality gap <= tol; w, b and the dual variables.

    The dual QP is solved by SMO (pairs of coordinates, LIBSVM's second-order working set
    selection) on the Gram matrix, stopped when the duality gap ``P(w, b) - D(alpha)``, a
    bound on the primal objective's distance to its optimum, is at most ``tol``; b
    minimizes the primal given w. Every 50 iterations the solution is *polished*: the KKT
    equations of the current margin support vectors are solved exactly (a linear system)
    and the result kept when it is feasible with a smaller gap. Once the active set is right
    this gives w, b exact to rounding (what :func:`course_lib.poisoning.poison_gradient` uses).
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
    Xn = check_points(X, "X")
    yn = check_labels(y, Xn.shape[0], "y", "X")
    C = _checks.number(C, "C", gt=0)
    tol = _checks.number(tol, "tol", gt=0)
    max_iter = _checks.integer(max_iter, "max_iter", ge=0)
    a0 = None if alpha0 is None else as_numpy(alpha0, "alpha0")
    if a0 is not None and a0.shape != yn.shape:
        raise ValueError(f"alpha0 must have shape {yn.shape}, got {a0.shape}")
    U = C / len(yn)
    alpha, gap, b, it = _smo(Xn @ Xn.T, yn, U, tol, a0, max_iter)
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
    return as_kind_of(X, sol.w), sol.b


def _check_wbXy(w: Any, b: Any, X: Any, y: Any) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    Xn = check_points(X, "X")
    wn = as_numpy(w, "w")
    if wn.shape != (Xn.shape[1],):
        raise ValueError(f"w must have shape ({Xn.shape[1]},) to match X {Xn.shape}, got {wn.shape}")
    if isinstance(b, Tensor):
        if b.numel() != 1:
            raise ValueError(f"b must be a scalar, got shape {tuple(b.shape)}")
        b = b.item()
    b = _checks.number(b, "b")
    yn = check_labels(y, Xn.shape[0], "y", "X", both=False)
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
    C = _checks.number(C, "C", gt=0)
    wn, bn, Xn, yn = _check_wbXy(w, b, X, y)
    return float(0.5 * wn @ wn + C * np.maximum(0.0, 1.0 - yn * (Xn @ wn + bn)).mean())




# ----------------------------------------------------------------------------- support vectors

class SupportSets(NamedTuple):
    """The training points by their dual variable (index arrays, ascending).

    Attributes:
        margin: ``0 < alpha_i < U``: margin support vectors, ``y_i f(x_i) = 1``.
        error: ``alpha_i = U``: error vectors, inside the margin or misclassified.
        rest: ``alpha_i = 0``: outside the margin; they do not touch the solution.
    """

    margin: np.ndarray
    error: np.ndarray
    rest: np.ndarray


MARGIN_RTOL = 1e-8
"""An alpha within ``MARGIN_RTOL * U`` of 0 or of U counts as at that bound."""


def support_sets(alpha: Array, C: float) -> SupportSets:
    """Split the training points into margin SVs, error vectors and the rest by their alpha.

    Args:
        alpha: dual variables (n,) of an SVM trained with constant ``C`` on n points, e.g.
            ``fit_svm(X, y, C).alpha``; the bound is ``U = C / n``.
        C: the regularization constant > 0 the SVM was trained with.

    Returns:
        A :class:`SupportSets` of index arrays; an alpha within ``MARGIN_RTOL * U`` of a
        bound counts as at that bound.

    Examples:
        >>> X = np.array([[0.0, 0.0], [0.1, 0.2], [1.0, 1.0], [0.9, 0.8]])
        >>> y = np.array([-1.0, -1.0, 1.0, 1.0])
        >>> sets = support_sets(fit_svm(X, y, 100.0).alpha, 100.0)
        >>> sets.margin.tolist(), sets.error.tolist(), sets.rest.tolist()
        ([1, 3], [], [0, 2])
    """
    a = as_numpy(alpha, "alpha")
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"alpha must have shape (n,) with n >= 1, got {a.shape}")
    U = _checks.number(C, "C", gt=0) / a.size
    thr = MARGIN_RTOL * U
    return SupportSets(np.flatnonzero((a > thr) & (a < U - thr)), np.flatnonzero(a >= U - thr),
                       np.flatnonzero(a <= thr))
