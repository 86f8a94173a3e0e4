"""The ladder of tightness on a one-hidden-layer ReLU network (lecture 4).

For a network ``z = W2 relu(W1 x + b1) + b2`` and a specification vector ``c`` (for a targeted
margin, ``c = e_y - e_t`` so that ``c^T z = z_y - z_t``), the *verification problem* is

    ``p* = min c^T z(x)  over  x in [lower, upper]``

and the network is verified when ``p* > 0``. Three answers, from cheap and loose to exact:

1. **IBP** (:func:`ibp_lower_bound`): interval bounds on ``z``, then the worst case of
   ``c^T z`` over that box (``fold=True``: fold ``c`` into the last layer, Gowal et al. 2018).
2. **LP relaxation** (:func:`lp_lower_bound`, Wong and Kolter 2018, "Provable defenses against
   adversarial examples via the convex outer adversarial polytope"): with the pre-activation
   bounds ``l <= W1 x + b1 <= u`` from IBP, an unstable ReLU (``l < 0 < u``) is replaced by its
   convex hull, the triangle ``h >= 0, h >= z, h <= u (z - l) / (u - l)``; stable ReLUs are
   exact (``h = z`` when ``l >= 0``, ``h = 0`` when ``u <= 0``). A linear program
   (``scipy.optimize.linprog``) gives its minimum.
3. **Exact** (:func:`exact_minimum`): the mixed-integer program with a binary ``a_j`` per unstable
   ReLU and the big-M constraints ``h >= z, h >= 0, h <= z - l (1 - a), h <= u a``
   (M from the same bounds; Tjeng et al. 2019), solved by ``scipy.optimize.milp``.

Each is a lower bound on ``p*`` and the next one's feasible set is inside the previous one's, so
``IBP <= LP <= exact = p*``, and ``p* <=`` the margin of every input of the box.

:func:`ladder` climbs every rung on one input, timing each, with the linear-relaxation bounds
of :mod:`course_lib.crown` between IBP and the LP: CROWN's lines are valid on the LP's triangle,
so with the same pre-activation bounds ``CROWN <= LP`` (CROWN is not always above IBP).

The LP and the MILP are float64 numpy; models are accepted as torch modules
``nn.Sequential(Linear, ReLU, Linear)`` (a leading ``Flatten`` is allowed). The interval bounds
(IBP's answer, and the pre-activation bounds the LP and MILP start from) walk the layer table
of :mod:`course_lib.layers` in float64, so :func:`ibp_lower_bound` takes any network of table
layers (a registered type included) on a flat input. The solvers work to
a tolerance of about 1e-9 (HiGHS' defaults are 1e-7 on feasibility): a certificate from the LP or
the MILP with a margin of that size is not a certificate.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from torch import nn

from course_lib import _checks, crown, layers
from course_lib.intervals import input_box
from course_lib.layers import altered_forward


@dataclass(frozen=True)
class OneHiddenLayer:
    """``z = W2 relu(W1 x + b1) + b2`` as float64 arrays: W1 (m, d), b1 (m,), W2 (K, m), b2 (K,)."""

    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits for inputs x (..., d): (..., K)."""
        return np.maximum(x @ self.W1.T + self.b1, 0.0) @ self.W2.T + self.b2


def as_one_hidden_layer(model: nn.Module | OneHiddenLayer) -> OneHiddenLayer:
    """The weights of ``nn.Sequential([Flatten,] Linear, ReLU, Linear)`` as float64 arrays.

    Raises:
        TypeError: for any other architecture.
    """
    if isinstance(model, OneHiddenLayer):
        return model
    for module in model.modules() if isinstance(model, nn.Module) else ():
        why = altered_forward(module)
        if why is not None:  # the weights alone would not describe the model's function
            raise TypeError(f"model's forward pass is not its layers' formulas ({why}); use plain nn.Sequential")
    layers = list(model) if isinstance(model, nn.Sequential) else []
    if layers and isinstance(layers[0], nn.Flatten):
        layers = layers[1:]
    if not (len(layers) == 3 and isinstance(layers[0], nn.Linear) and isinstance(layers[1], nn.ReLU)
            and isinstance(layers[2], nn.Linear)):
        raise TypeError(f"model must be nn.Sequential([Flatten,] Linear, ReLU, Linear), got {model}")

    def arr(t) -> np.ndarray:
        return t.detach().cpu().double().numpy().copy()

    first, last = layers[0], layers[2]
    b1 = arr(first.bias) if first.bias is not None else np.zeros(first.out_features)
    b2 = arr(last.bias) if last.bias is not None else np.zeros(last.out_features)
    return OneHiddenLayer(arr(first.weight), b1, arr(last.weight), b2)


def margin_vector(num_classes: int, y: int, t: int) -> np.ndarray:
    """``c = e_y - e_t``, so that ``c^T z = z_y - z_t`` (the margin of y over the target t).

    Examples:
        >>> margin_vector(3, 0, 2).tolist()
        [1.0, 0.0, -1.0]
    """
    num_classes = _checks.integer(num_classes, "num_classes", ge=2)
    y, t = _checks.integer(y, "y"), _checks.integer(t, "t")
    if not (0 <= y < num_classes and 0 <= t < num_classes) or y == t:
        raise ValueError(f"need distinct classes y, t in [0, {num_classes}), got y={y}, t={t}")
    c = np.zeros(num_classes)
    c[y], c[t] = 1.0, -1.0
    return c


def _setup(model, lower, upper, c):
    net = as_one_hidden_layer(model)
    lower = np.asarray(lower, dtype=np.float64).ravel()
    upper = np.asarray(upper, dtype=np.float64).ravel()
    c = np.asarray(c, dtype=np.float64).ravel()
    d, k = net.W1.shape[1], net.W2.shape[0]
    if lower.shape != (d,) or upper.shape != (d,):
        raise ValueError(f"lower and upper must have {d} entries (the input size), got {lower.size}, {upper.size}")
    if np.isnan(lower).any() or np.isnan(upper).any() or (lower > upper).any():
        raise ValueError("need lower <= upper elementwise, without nan")
    if c.shape != (k,):
        raise ValueError(f"c must have {k} entries (one per logit), got {c.size}")
    return net, lower, upper, c


def _table_network(model) -> list[nn.Module]:
    """The model's layers in float64, for the table's interval rules."""
    if isinstance(model, OneHiddenLayer):
        first, last = nn.Linear(*model.W1.shape[::-1]).double(), nn.Linear(*model.W2.shape[::-1]).double()
        with torch.no_grad():
            for layer, W, b in ((first, model.W1, model.b1), (last, model.W2, model.b2)):
                layer.weight.copy_(torch.from_numpy(W)), layer.bias.copy_(torch.from_numpy(b))
        return [first, nn.ReLU(), last]
    layers.layers_of(model)  # refuses a layer outside the table, naming it, before any copy
    return layers.layers_of(copy.deepcopy(model).double())


def _walk(sequence: list[nn.Module], lower: np.ndarray, upper: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and radius after ``sequence`` on the box (one flat input), by the table's rules."""
    lo, hi = torch.from_numpy(lower)[None], torch.from_numpy(upper)[None]
    mu, r = torch.lerp(lo, hi, 0.5), (hi - lo) / 2
    with torch.no_grad():
        for layer in sequence:
            mu, r = layers.interval_step(layer, mu, r)
    return mu, r


def preactivation_bounds(model, lower, upper) -> tuple[np.ndarray, np.ndarray]:
    """IBP bounds ``l <= W1 x + b1 <= u`` over the box (exact for this first affine layer).

    Examples:
        >>> net = OneHiddenLayer(np.array([[1.0, -1.0]]), np.zeros(1), np.ones((2, 1)), np.zeros(2))
        >>> [v.tolist() for v in preactivation_bounds(net, [0.0, 0.0], [1.0, 1.0])]
        [[-1.0], [1.0]]
    """
    net = as_one_hidden_layer(model)
    net, lower, upper, _ = _setup(net, lower, upper, np.zeros(net.W2.shape[0]))
    mu, r = _walk(_table_network(net)[:1], lower, upper)
    return (mu - r)[0].numpy(), (mu + r)[0].numpy()


def ibp_lower_bound(model, lower, upper, c, *, fold: bool = False) -> float:
    """IBP's lower bound on ``min c^T z`` over the box.

    ``fold=False``: bounds ``[zl, zu]`` on every logit, then ``sum_k min(c_k zl_k, c_k zu_k)``
    (``zl_y - zu_t`` for a margin). ``fold=True``: the exact minimum of ``(W2^T c)^T h + c^T b2``
    over IBP's box of h (Gowal et al.'s folded specification), never lower. ``model``: a
    one-hidden-layer network, or any ``nn.Sequential`` of the table's layers on flat inputs.

    Examples:
        >>> net = OneHiddenLayer(np.eye(2), np.zeros(2), np.eye(2), np.zeros(2))
        >>> ibp_lower_bound(net, [0.5, 0.0], [1.0, 0.25], margin_vector(2, 0, 1))
        0.25
    """
    try:
        net, lower, upper, c = _setup(model, lower, upper, c)
        sequence = _table_network(net)
    except TypeError:  # another network of table layers: IBP alone applies
        sequence = _table_network(model)
        lower, upper = (np.asarray(v, dtype=np.float64).ravel() for v in (lower, upper))
        c = np.asarray(c, dtype=np.float64).ravel()
        if lower.shape != upper.shape or np.isnan(lower).any() or np.isnan(upper).any() or (lower > upper).any():
            raise ValueError("need lower <= upper elementwise, of one shape, without nan") from None
    last = sequence[-1]
    if fold and isinstance(last, nn.Linear):
        if c.shape != (last.out_features,):
            raise ValueError(f"c must have {last.out_features} entries (one per logit), got {c.size}")
        mu, r = _walk(sequence[:-1], lower, upper)
        spec = torch.from_numpy(c)
        C = (spec @ last.weight.detach())[None, None]
        d = None if last.bias is None else (spec @ last.bias.detach())[None, None]
        return float(layers.folded_bound(C, d, mu, r)[0, 0])
    mu, r = _walk(sequence, lower, upper)
    zl, zu = (mu - r)[0].numpy(), (mu + r)[0].numpy()
    if c.shape != zl.shape:
        raise ValueError(f"c must have {zl.size} entries (one per logit), got {c.size}")
    return float(np.minimum(c * zl, c * zu).sum())


def _relu_constraints(l: np.ndarray, u: np.ndarray, d: int, m: int, integer: bool):
    """Rows over variables [x (d), z (m), h (m), a (m if integer)] encoding h = relu(z) or its relaxation.

    Returns (A, lo, hi, var_lo, var_hi) for the ReLU part; z = W1 x + b1 is added by the caller.
    """
    n = d + 2 * m + (m if integer else 0)
    rows, lo, hi = [], [], []
    h_lo, h_hi = np.zeros(m), np.maximum(u, 0)
    for j in range(m):
        zj, hj = d + j, d + m + j
        if u[j] <= 0:  # stably inactive: h = 0
            h_hi[j] = 0.0
        elif l[j] >= 0:  # stably active: h = z
            row = np.zeros(n)
            row[hj], row[zj] = 1.0, -1.0
            rows.append(row), lo.append(0.0), hi.append(0.0)
        else:
            row = np.zeros(n)  # h >= z
            row[hj], row[zj] = 1.0, -1.0
            rows.append(row), lo.append(0.0), hi.append(np.inf)
            if integer:  # big-M with the bounds: h <= z - l (1 - a), h <= u a
                aj = d + 2 * m + j
                row = np.zeros(n)
                row[hj], row[zj], row[aj] = 1.0, -1.0, -l[j]
                rows.append(row), lo.append(-np.inf), hi.append(-l[j])
                row = np.zeros(n)
                row[hj], row[aj] = 1.0, -u[j]
                rows.append(row), lo.append(-np.inf), hi.append(0.0)
            else:  # the triangle's upper side: h <= u (z - l) / (u - l)
                s = u[j] / (u[j] - l[j])
                row = np.zeros(n)
                row[hj], row[zj] = 1.0, -s
                rows.append(row), lo.append(-np.inf), hi.append(-s * l[j])
    return rows, lo, hi, h_lo, h_hi


def _program(net: OneHiddenLayer, lower, upper, c, integer: bool):
    d, m = net.W1.shape[1], net.W1.shape[0]
    l, u = preactivation_bounds(net, lower, upper)
    n = d + 2 * m + (m if integer else 0)
    rows, lo, hi, h_lo, h_hi = _relu_constraints(l, u, d, m, integer)
    affine = np.zeros((m, n))  # z - W1 x = b1
    affine[:, :d] = -net.W1
    affine[:, d:d + m] = np.eye(m)
    A = np.vstack([affine] + rows) if rows else affine
    b_lo = np.concatenate([net.b1, lo])
    b_hi = np.concatenate([net.b1, hi])
    var_lo = np.concatenate([lower, l, h_lo] + ([np.zeros(m)] if integer else []))
    var_hi = np.concatenate([upper, u, h_hi] + ([np.ones(m)] if integer else []))
    cost = np.zeros(n)
    cost[d + m:d + 2 * m] = net.W2.T @ c  # c^T z = (W2^T c)^T h + c^T b2
    return cost, A, b_lo, b_hi, var_lo, var_hi, float(c @ net.b2)


def lp_lower_bound(model, lower, upper, c) -> float:
    """The LP relaxation's minimum of ``c^T z`` over the box (Wong and Kolter 2018's triangle).

    Args:
        model: ``nn.Sequential([Flatten,] Linear, ReLU, Linear)`` or a :class:`OneHiddenLayer`.
        lower, upper: the input box, d entries each (flattened), ``lower <= upper``.
        c: the specification, one entry per logit (e.g. :func:`margin_vector`).

    Returns:
        A lower bound on ``min c^T z(x)`` over the box, >= IBP's (to solver tolerance ~1e-9).

    Raises:
        RuntimeError: if the solver fails (it should not: the program is feasible and bounded).
    """
    net, lower, upper, c = _setup(model, lower, upper, c)
    cost, A, b_lo, b_hi, var_lo, var_hi, const = _program(net, lower, upper, c, integer=False)
    # linprog takes equalities and <= rows: split the two-sided rows
    eq = b_lo == b_hi
    upper_rows = ~eq & np.isfinite(b_hi)
    lower_rows = ~eq & np.isfinite(b_lo)
    A_ub = np.vstack([A[upper_rows], -A[lower_rows]])
    b_ub = np.concatenate([b_hi[upper_rows], -b_lo[lower_rows]])
    res = linprog(cost, A_ub=A_ub if len(b_ub) else None, b_ub=b_ub if len(b_ub) else None,
                  A_eq=A[eq], b_eq=b_lo[eq], bounds=np.column_stack([var_lo, var_hi]), method="highs",
                  options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10})
    if res.status != 0:
        raise RuntimeError(f"linprog failed: {res.message}")
    return float(res.fun + const)


@contextlib.contextmanager
def _solver_output_discarded():
    """HiGHS' MIP solver can print a debugging line straight to file descriptor 1, past Python's
    sys.stdout (it showed up in a lecture's output); send that descriptor to the null device while
    it runs. Its answer and status come back through ``milp``'s result either way."""
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved), os.close(null)


def exact_minimum(model, lower, upper, c) -> tuple[float, np.ndarray]:
    """The exact ``min c^T z(x)`` over the box, by a mixed-integer program with big-M ReLUs.

    Args:
        model, lower, upper, c: as in :func:`lp_lower_bound`.

    Returns:
        ``(p_star, x_star)``: the minimum and an input (d,) of the box attaining it
        (``c @ net(x_star) == p_star`` up to solver tolerance).

    Raises:
        RuntimeError: if the solver fails.
    """
    net, lower, upper, c = _setup(model, lower, upper, c)
    cost, A, b_lo, b_hi, var_lo, var_hi, const = _program(net, lower, upper, c, integer=True)
    d, m = net.W1.shape[1], net.W1.shape[0]
    integrality = np.concatenate([np.zeros(d + 2 * m), np.ones(m)])
    with _solver_output_discarded():
        res = milp(cost, constraints=LinearConstraint(A, b_lo, b_hi), integrality=integrality,
                   bounds=Bounds(var_lo, var_hi), options={"mip_rel_gap": 0.0})
    if res.status != 0:
        raise RuntimeError(f"milp failed: {res.message}")
    x_star = np.clip(res.x[:d], lower, upper)
    return float(res.fun + const), x_star


def enumerate_minimum(model, lower, upper, c) -> float:
    """The exact minimum by brute force: one LP per activation pattern of the hidden ReLUs.

    Within a pattern ``s`` the network is affine, so ``min c^T z`` over ``{x in box: sign of
    W1 x + b1 matches s}`` is a linear program; the minimum over all ``2^m`` patterns is ``p*``.
    For tiny networks only (m <= 12); an independent check of :func:`exact_minimum`.
    """
    net, lower, upper, c = _setup(model, lower, upper, c)
    m = net.W1.shape[0]
    if m > 12:
        raise ValueError(f"enumeration is for tiny networks (at most 12 hidden units), got {m}")
    best = np.inf
    w_out = net.W2.T @ c
    for pattern in itertools.product((0.0, 1.0), repeat=m):
        s = np.array(pattern)
        # active units: W1 x + b1 >= 0; inactive: W1 x + b1 <= 0
        sign = np.where(s > 0, -1.0, 1.0)
        A_ub, b_ub = sign[:, None] * net.W1, -sign * net.b1
        cost = (w_out * s) @ net.W1
        res = linprog(cost, A_ub=A_ub, b_ub=b_ub, bounds=np.column_stack([lower, upper]), method="highs")
        if res.status == 0:
            best = min(best, float(res.fun + (w_out * s) @ net.b1 + c @ net.b2))
    return best


RUNGS = ("IBP", "CROWN-IBP", "CROWN", "LP", "exact")


@dataclass(frozen=True)
class Rung:
    """One rung of :func:`ladder`: a lower bound on ``min c^T z`` and the seconds it took."""

    name: str
    bound: float
    seconds: float


def ladder(model: nn.Module, x: torch.Tensor, eps: float, c, *, rungs: tuple[str, ...] = RUNGS) -> list[Rung]:
    """Every rung's lower bound on ``min c^T z(x')`` over the eps-ball around x clipped to [0, 1].

    The rungs, cheapest and loosest first: ``"IBP"`` (the folded margin, :func:`ibp_lower_bound`),
    ``"CROWN-IBP"`` and ``"CROWN"`` (:func:`course_lib.crown.crown_bounds`, in float64),
    ``"LP"`` (:func:`lp_lower_bound`) and ``"exact"`` (:func:`exact_minimum`). With one hidden
    layer all of them start from the same pre-activation bounds (IBP's are exact for the first
    affine layer), so ``CROWN-IBP == CROWN <= LP <= exact`` and ``IBP (folded) <= LP``; IBP and
    CROWN are not ordered.

    Args:
        model: ``nn.Sequential([Flatten,] Linear, ReLU, Linear)``.
        x: one input, of the model's input shape, with or without a batch axis of 1; values in [0, 1].
        eps: L-inf radius, a finite number >= 0.
        c: the specification, one entry per logit (e.g. :func:`margin_vector`).
        rungs: which rungs to climb, a subset of :data:`RUNGS` (the exact MILP can take seconds
            to minutes on a wide layer with many unstable ReLUs).

    Returns:
        One :class:`Rung` per requested rung, in the order of :data:`RUNGS`.

    Examples:
        >>> net = OneHiddenLayer(np.array([[1.0, 1.0], [1.0, -1.0]]), np.zeros(2),
        ...                      np.array([[1.0, -2.0], [-1.0, 1.0]]), np.array([1.5, 0.0]))
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).double()
        >>> with torch.no_grad():
        ...     for layer, W, b in ((model[0], net.W1, net.b1), (model[2], net.W2, net.b2)):
        ...         _ = layer.weight.copy_(torch.from_numpy(W)), layer.bias.copy_(torch.from_numpy(b))
        >>> steps = ladder(model, torch.tensor([0.5, 0.5]), 0.5, margin_vector(2, 0, 1))
        >>> [(r.name, round(r.bound, 3) + 0.0) for r in steps]  # the 2-2-2 network of lecture 4
        [('IBP', -1.5), ('CROWN-IBP', 0.0), ('CROWN', 0.0), ('LP', 0.0), ('exact', 0.5)]
    """
    if not isinstance(rungs, (tuple, list)) or not rungs or any(r not in RUNGS for r in rungs):
        raise ValueError(f"rungs must be a non-empty subset of {RUNGS}, got {rungs!r}")
    net = as_one_hidden_layer(model)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor (one input), got {type(x).__name__}")
    x64 = x.detach().double().cpu()
    x64 = x64 if x64.shape[:1] == (1,) and x64.numel() != 1 else x64[None]
    if not ((x64 >= 0) & (x64 <= 1)).all():
        raise ValueError(f"x must lie in [0, 1] (an image), got values in [{x64.min():.3g}, {x64.max():.3g}]")
    lo, hi = (t.flatten().numpy() for t in input_box(x64, eps))
    net, lo, hi, c = _setup(net, lo, hi, c)
    model64 = nn.Sequential(*_table_network(net))
    flat = x64.flatten(1)
    if flat.shape[1] != net.W1.shape[1]:
        raise ValueError(f"x must have {net.W1.shape[1]} entries (the model's input), got {flat.shape[1]}")
    spec = torch.from_numpy(c)[None, None]
    solve = {"IBP": lambda: ibp_lower_bound(net, lo, hi, c, fold=True),
             "CROWN-IBP": lambda: float(crown.crown_bounds(model64, flat, eps, C=spec, method="crown-ibp")[0]),
             "CROWN": lambda: float(crown.crown_bounds(model64, flat, eps, C=spec, method="crown")[0]),
             "LP": lambda: lp_lower_bound(net, lo, hi, c),
             "exact": lambda: exact_minimum(net, lo, hi, c)[0]}
    out = []
    for name in (r for r in RUNGS if r in rungs):
        start = time.perf_counter()
        with torch.no_grad():
            bound = solve[name]()
        out.append(Rung(name, bound, time.perf_counter() - start))
    return out
