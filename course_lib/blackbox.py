"""Black-box attacks: zeroth-order gradient estimates, NES and the Square Attack (lecture 8).

A black-box attacker sees the model's scores and nothing else: no weights, no gradients. Each
row the model scores is one **query**; an attack is judged by its success rate under a
per-example query budget. Nothing here calls autograd: every model call runs under
``torch.no_grad()``, so a model whose backward pass raises is attacked just the same.

=========== ================ =================================================================
math        code             meaning
=========== ================ =================================================================
f           ``loss_fn``      per-example loss: a batch (M, ...) -> losses (M,)
mu          ``mu``           finite-difference step (smoothing radius), input units
q           ``num_queries``  perturbed points queried per gradient estimate, per example
u_i         (drawn inside)   a random direction: N(0, I) or uniform on the unit sphere
d           (computed)       dimension of one example, ``x[0].numel()``
phi(d)      (computed)       1 for Gaussian directions, d for the sphere
epsilon     ``eps``          L-inf radius of the threat model, input units
alpha       ``alpha``        NES step size (a signed step, as in PGD), input units
p           ``p_init``       Square Attack: fraction of the pixels a square covers at first
Q           ``queries``      an attack's budget: model queries per example, all included
=========== ================ =================================================================

Random-direction estimates (:func:`zo_gradient`) are unbiased for the gradient of a *smoothed*
f: for Gaussian u, ``E[(f(x + mu u) - f(x)) u / mu] = grad f_mu(x)`` with
``f_mu(x) = E f(x + mu u)`` (Stein's lemma); for u uniform on the sphere,
``E[d (f(x + mu u) - f(x)) u / mu]`` is the gradient of f averaged over the ball of radius mu.
For a linear or quadratic f both smoothings only add a constant, so the estimate is unbiased
for grad f itself. Its variance falls as d / q: on a linear f, m directions (m = q, or q // 2
antithetic pairs) give the mean squared error ``(d + 1, or d - 1) |grad f|^2 / m`` (Gaussian, or sphere).

Scores are compared by the margin ``z_y - max_{j != y} z_j``: an example counts as broken
(misclassified) once it is < 0, and from then on it is never queried again.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from course_lib import _checks
from course_lib.attack_base import LOSSES, _check_inputs, _per_example_loss

DISTRIBUTIONS = ("gaussian", "sphere", "coordinate")
"""Directions of :func:`zo_gradient`: ``N(0, I)``, uniform on the unit sphere, or coordinate axes."""

Model = Callable[[Tensor], Tensor]
"""An ``nn.Module`` or any callable mapping inputs (N, ...) to scores (N, K)."""

SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
"""Square Attack: iterations (of 10 000) after which the square's area ``p`` halves."""


class QueryCounter:
    """A model (or any scoring function) that counts its queries: one per row it scores.

    Attributes: ``calls``, the number of calls; ``queries``, the rows scored over all calls;
    ``rows_per_call``, the rows of each call, in order.

    Examples:
        >>> counter = QueryCounter(torch.nn.Linear(3, 2))
        >>> _ = counter(torch.rand(5, 3)); _ = counter(torch.rand(2, 3))
        >>> counter.calls, counter.queries, counter.rows_per_call
        (2, 7, [5, 2])
    """

    def __init__(self, model: Model) -> None:
        if not callable(model):
            raise _checks.ArgumentError(f"model must be callable, got {type(model).__name__}")
        self.model = model
        self.reset()

    def reset(self) -> None:
        """Set every count back to zero."""
        self.calls, self.queries, self.rows_per_call = 0, 0, []

    def __call__(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.queries += x.shape[0]
        self.rows_per_call.append(x.shape[0])
        return self.model(x)


def _scores(model: Model, x: Tensor) -> Tensor:
    """The model's scores (N, K), K >= 2, computed without autograd."""
    with torch.no_grad():
        scores = model(x)
    if not isinstance(scores, Tensor) or scores.ndim != 2 or scores.shape[0] != x.shape[0] or scores.shape[1] < 2:
        raise ValueError(f"model must map a batch of {x.shape[0]} to scores ({x.shape[0]}, K), K >= 2; "
                         f"got {tuple(getattr(scores, 'shape', ()))}")
    return scores


def _margin(scores: Tensor, y: Tensor) -> Tensor:
    """``z_y - max_{j != y} z_j`` per row: >= 0 while correct, < 0 once misclassified."""
    true = scores.gather(1, y[:, None]).squeeze(1)
    return true - scores.scatter(1, y[:, None], float("-inf")).amax(1)


def _attack_loss(scores: Tensor, y: Tensor, loss: str) -> Tensor:
    """The loss an attack ascends, per row: one of :data:`course_lib.attack_base.LOSSES`."""
    return _per_example_loss(scores, y, loss)


def query_loss(model: Model, y: Tensor, *, loss: str = "margin") -> Callable[[Tensor], Tensor]:
    """The attack loss of ``model`` as a ``loss_fn`` for :func:`zo_gradient`: it queries the model.

    Args:
        model: maps x (M, ...) to scores (M, K).
        y: int64 labels (N,) of the batch x that :func:`zo_gradient` perturbs.
        loss: ``"margin"`` (``max_{j != y} z_j - z_y``, > 0 once misclassified), ``"ce"`` or ``"dlr"``.

    Returns:
        ``loss_fn(batch) -> (M,)``, for a batch of ``M = k * N`` rows made of k stacked copies
        of x's batch (as :func:`zo_gradient` calls it): row ``j * N + n`` gets label ``y[n]``.
    """
    loss = _checks.choice(loss, "loss", LOSSES)

    def loss_fn(batch: Tensor) -> Tensor:
        if batch.shape[0] % y.shape[0]:
            raise ValueError(f"a batch of {batch.shape[0]} rows is not copies of {y.shape[0]} examples")
        return _attack_loss(_scores(model, batch), y.repeat(batch.shape[0] // y.shape[0]), loss)

    return loss_fn


def _evaluate(loss_fn: Callable[[Tensor], Tensor], points: Tensor, copies: int) -> Tensor:
    """``loss_fn`` on (copies, N, ...) stacked points, as (copies, N), without autograd."""
    with torch.no_grad():
        values = loss_fn(points.flatten(0, 1))
    rows = points.shape[0] * points.shape[1]
    if not isinstance(values, Tensor) or values.shape != (rows,):
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"loss_fn must map a batch of {rows} rows to losses ({rows},), got {got}")
    return values.to(points.dtype).view(copies, -1)


def _draw(shape: tuple[int, ...], x: Tensor, generator: torch.Generator | None, kind: str = "randn") -> Tensor:
    """Random numbers of x's dtype drawn on the generator's device, then moved to x's (as in attacks)."""
    device = generator.device if generator is not None else x.device
    draw = torch.randn if kind == "randn" else torch.rand
    return draw(shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _check_estimate(num_queries, mu, distribution, antithetic, generator, chunk_size) -> tuple:
    """The arguments of one gradient estimate, checked (central differences need num_queries >= 2)."""
    num_queries = _checks.integer(num_queries, "num_queries", ge=1)
    distribution = _checks.choice(distribution, "distribution", DISTRIBUTIONS)
    antithetic = _checks.flag(antithetic, "antithetic")
    if (antithetic or distribution == "coordinate") and num_queries < 2:
        raise _checks.fail("num_queries", "an integer >= 2 for central differences (antithetic or coordinate)",
                           num_queries)
    return (num_queries, _checks.number(mu, "mu", gt=0), distribution, antithetic,
            _checks.optional_generator(generator), _checks.integer(chunk_size, "chunk_size", ge=1))


def zo_gradient(loss_fn: Callable[[Tensor], Tensor], x: Tensor, *, num_queries: int, mu: float,
                distribution: str = "gaussian", antithetic: bool = False,
                generator: torch.Generator | None = None, fx: Tensor | None = None,
                chunk_size: int = 4096) -> tuple[Tensor, int]:
    """A zeroth-order estimate of each example's gradient of ``loss_fn``, from loss values only.

    With q = ``num_queries``, directions ``u_i`` and ``phi = 1`` (Gaussian) or ``d`` (sphere):

    * forward differences (default): ``phi / (q mu) * sum_{i<=q} [f(x + mu u_i) - f(x)] u_i``;
      q + 1 queries (q, when ``fx`` = f(x) is given).
    * ``antithetic=True`` (NES, Ilyas et al. 2018): m = q // 2 pairs,
      ``phi / (2 m mu) * sum_{i<=m} [f(x + mu u_i) - f(x - mu u_i)] u_i``; 2m queries.
    * ``distribution="coordinate"`` (ZOO, Chen et al. 2017): central differences
      ``[f(x + mu e_j) - f(x - mu e_j)] / (2 mu)`` along m = min(q // 2, d) coordinates; 2m
      queries. With m < d the coordinates are a uniform random subset (per example) and the
      differences are scaled by d / m, so the estimate is unbiased for the vector of all d
      central differences; with q >= 2d it is that vector, exact for a quadratic f.

    The random estimates are unbiased for the gradient of the smoothed f (module docstring);
    their mean squared error falls as d / q. Each example gets its own directions. The perturbed
    points are not clipped to [0, 1] (clipping would bias the estimate).

    Args:
        loss_fn: maps a batch (M, ...) to losses (M,); called under ``torch.no_grad()`` on k
            stacked copies of x's batch (M = k N, row ``j N + n`` perturbs example n);
            :func:`query_loss` makes one from a model and labels.
        x: points (N, ...), floating point, any range.
        num_queries: q >= 1, the perturbed points per example (>= 2 when antithetic or coordinate).
        mu: step > 0, in x's units; too small a step loses the differences to float rounding.
        distribution: ``"gaussian"``, ``"sphere"`` or ``"coordinate"``.
        antithetic: pair each direction with its opposite (random directions; coordinate always is).
        generator: seeds the directions, drawn on its device (default: the global RNG); when one
            call holds them all, they are ``torch.randn(m, *x.shape)`` (then normalized for the sphere).
        fx: ``loss_fn(x)`` (N,) if already known: forward differences then skip that query.
        chunk_size: rows per ``loss_fn`` call >= 1 (at least one copy of the batch per call),
            bounding memory.

    Returns:
        ``(grad, queries)``: grad of x's shape, dtype and device; queries, an int, the loss
        evaluations spent on each example (the same for all).

    Raises:
        ValueError: for num_queries < 1 (< 2 for central differences), mu <= 0, an unknown
            distribution, a non-float or empty x, or a ``loss_fn`` output that is not (M,).

    Examples:
        >>> b = torch.tensor([[1.0, -2.0, 3.0]])
        >>> loss_fn = lambda z: z @ b[0]  # linear: every estimate is unbiased for b
        >>> g, q = zo_gradient(loss_fn, torch.zeros(1, 3), num_queries=6, mu=0.1, distribution="coordinate")
        >>> g, q
        (tensor([[ 1., -2.,  3.]]), 6)
        >>> g, q = zo_gradient(loss_fn, torch.zeros(1, 3), num_queries=100, mu=0.1,
        ...                    generator=torch.Generator().manual_seed(0))
        >>> q, bool((g - b).norm() < 2)
        (101, True)
    """
    num_queries, mu, distribution, antithetic, generator, chunk_size = _check_estimate(
        num_queries, mu, distribution, antithetic, generator, chunk_size)
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty floating-point batch (N, ...), got "
                         f"{getattr(x, 'dtype', type(x).__name__)} of shape {tuple(getattr(x, 'shape', ()))}")
    x, n, d = x.detach(), x.shape[0], x[0].numel()
    if distribution == "coordinate":
        return _coordinate_estimate(loss_fn, x, min(num_queries // 2, d), mu, generator, chunk_size)
    directions, spent = (num_queries // 2, num_queries // 2 * 2) if antithetic else (num_queries, num_queries)
    if not antithetic:
        if fx is None:
            fx, spent = _evaluate(loss_fn, x[None], 1)[0], spent + 1
        elif not isinstance(fx, Tensor) or fx.shape != (n,):
            raise ValueError(f"fx must be the losses at x, shape ({n},), got {tuple(getattr(fx, 'shape', ()))}")
    grad = torch.zeros_like(x)
    per_call = max(1, chunk_size // (n * (2 if antithetic else 1)))
    unsqueeze = (slice(None), slice(None)) + (None,) * (x.ndim - 1)
    for start in range(0, directions, per_call):
        k = min(per_call, directions - start)
        u = _draw((k, *x.shape), x, generator)
        if distribution == "sphere":
            u = u / u.flatten(2).norm(dim=2)[unsqueeze]
        if antithetic:
            values = _evaluate(loss_fn, torch.cat([x + mu * u, x - mu * u]), 2 * k)
            diff = values[:k] - values[k:]
        else:
            diff = _evaluate(loss_fn, x + mu * u, k) - fx.to(x.dtype)
        grad += (diff[unsqueeze] * u).sum(0)
    phi = d if distribution == "sphere" else 1
    return grad * (phi / (mu * directions * (2 if antithetic else 1))), spent


def _coordinate_estimate(loss_fn, x: Tensor, m: int, mu: float, generator, chunk_size: int) -> tuple[Tensor, int]:
    """ZOO's central differences along m coordinates per example, scaled by d / m."""
    n, d = x.shape[0], x[0].numel()
    flat = x.reshape(n, d)
    if m == d:  # every coordinate: nothing random, nothing to rescale
        coords = torch.arange(d, device=x.device).expand(n, d)
    else:
        coords = _draw((n, d), x, generator, "rand").argsort(dim=1)[:, :m]
    grad = torch.zeros_like(flat)
    per_call = max(1, chunk_size // (2 * n))
    for start in range(0, m, per_call):
        cols = coords[:, start:start + per_call]  # (n, k)
        k = cols.shape[1]
        step = torch.zeros(k, n, d, dtype=x.dtype, device=x.device)
        step.scatter_(2, cols.T[..., None], mu)
        points = torch.cat([flat + step, flat - step]).view(2 * k, n, *x.shape[1:])
        values = _evaluate(loss_fn, points, 2 * k)
        grad.scatter_(1, cols, ((values[:k] - values[k:]) / (2 * mu)).T * (d / m))
    return grad.view_as(x), 2 * m


def _check_attack(x: Tensor, y: Tensor, eps, queries) -> tuple[float, int]:
    _check_inputs(x, y)
    return _checks.number(eps, "eps", ge=0), _checks.integer(queries, "queries", ge=1)


def nes_attack(model: Model, x: Tensor, y: Tensor, eps: float, *, queries: int, alpha: float | None = None,
               num_queries: int = 20, mu: float = 1e-3, loss: str = "margin", distribution: str = "gaussian",
               antithetic: bool = True, generator: torch.Generator | None = None,
               chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """L-inf PGD on a zeroth-order gradient (the NES attack of Ilyas et al. 2018), under a query budget.

    Each round queries every still-correct example once at its current point (the check; an
    example misclassified there stops), then estimates its gradient with :func:`zo_gradient`
    and takes the step ``x <- clip(x + alpha sign(g))`` onto the eps-ball around the clean
    input intersected with [0, 1]. A round costs 1 + q queries for forward differences (the
    check's loss is reused as f(x)) and 1 + 2 (q // 2) at most for antithetic or coordinate ones.
    A step is taken only if the budget still pays for its estimate and for the check after it:
    the last estimate may use fewer points, and every point returned has been checked. The
    estimate's points ``x + mu u`` are queried unclipped, up to a few mu outside the ball and [0, 1].

    Args:
        model: an ``nn.Module`` or callable mapping x (N, ...) to scores (N, K); only queried.
        x: clean inputs (N, ...) in [0, 1]. y: int64 labels (N,).
        eps: L-inf radius >= 0, input units.
        queries: budget >= 1, model queries per example, the first check included.
        alpha: step size > 0, input units; default eps / 4.
        num_queries, mu, distribution, antithetic, chunk_size: of each estimate, as in
            :func:`zo_gradient`; by default 10 antithetic Gaussian pairs, 21 queries a round.
        loss: the loss the estimate ascends: ``"margin"`` or ``"ce"``.
        generator: seeds the directions; default the global RNG.

    Returns:
        ``(x_adv, queries_used)``: x_adv of x's shape, dtype and device, within eps of x (up to
        rounding, as in :mod:`course_lib.attacks`) and in [0, 1]; queries_used, int64 (N,) on x's
        device, each <= ``queries``, the exact number of rows of each example the model scored.

    Raises:
        ValueError: eps < 0, queries < 1, alpha <= 0, num_queries < 1, mu <= 0, unknown loss or
            distribution, x outside [0, 1], or y not int64 (N,).

    Examples:
        >>> model = QueryCounter(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)))
        >>> x, y = torch.rand(5, 1, 2, 2), torch.randint(3, (5,))
        >>> x_adv, used = nes_attack(model, x, y, 0.1, queries=50, generator=torch.Generator().manual_seed(0))
        >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6), bool((used <= 50).all()), int(used.sum()) == model.queries
        (True, True, True)
    """
    eps, queries = _check_attack(x, y, eps, queries)
    alpha = eps / 4 if alpha is None else _checks.number(alpha, "alpha", gt=0)
    loss = _checks.choice(loss, "loss", LOSSES)
    num_queries, mu, distribution, antithetic, generator, chunk_size = _check_estimate(
        num_queries, mu, distribution, antithetic, generator, chunk_size)
    central = antithetic or distribution == "coordinate"
    x = x.detach()
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    x_adv, used = x.clone(), torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    active, spent = torch.arange(x.shape[0], device=x.device), 0  # every active example has spent as much
    while active.numel() > 0 and spent < queries:
        scores = _scores(model, x_adv[active])  # the check
        spent += 1
        used[active] = spent
        correct = _margin(scores, y[active]) >= 0
        active, scores = active[correct], scores[correct]
        # the largest estimate the budget pays for, the check after the step included
        q = min(num_queries, queries - spent - 1)
        if active.numel() == 0 or eps == 0 or q < (2 if central else 1):
            break
        fx = None if central else _attack_loss(scores, y[active], loss)
        grad, cost = zo_gradient(query_loss(model, y[active], loss=loss), x_adv[active], num_queries=q, mu=mu,
                                 distribution=distribution, antithetic=antithetic, generator=generator,
                                 fx=fx, chunk_size=chunk_size)
        spent += cost
        used[active] = spent
        # the ball intersected with [0, 1] is a box: projecting onto it is one clamp
        x_adv[active] = torch.minimum(torch.maximum(x_adv[active] + alpha * grad.sign(), lo[active]), hi[active])
    return x_adv, used


def _p_selection(p_init: float, iteration: int, budget: int) -> float:
    """Square Attack's square area: p_init halved at each of :data:`SCHEDULE`, rescaled to ``budget``."""
    it = int(iteration / budget * 10000)
    return p_init / 2 ** sum(it > t for t in SCHEDULE)


def _try_square(best: Tensor, lo: Tensor, hi: Tensor, side: int, generator) -> tuple[tuple, Tensor, Tensor]:
    """Moves one random square per example of ``best`` in place (only the squares are touched) by
    +-2 eps per channel, clipped to the box ``[lo, hi]``: as ``hi - lo <= 2 eps``, onto hi or lo.
    Returns the squares' index (broadcasting to (n, c, side, side)), old and new values.

    A sign pattern that would change nothing is replaced by one drawn uniformly from the others,
    as the reference code's redrawing does: at most one pattern per example is a no-op (for
    eps > 0), so flipping a uniformly random nonempty set of its channels' signs draws exactly that.
    """
    (n, c, h, w), at = best.shape, torch.arange(side, device=best.device)
    first = [(_draw((n,), best, generator, "rand") * (size - side + 1)).long().clamp(max=size - side)
             for size in (h, w)]
    index = (torch.arange(n, device=at.device)[:, None, None, None], torch.arange(c, device=at.device)[:, None, None],
             (first[0][:, None] + at)[:, None, :, None], (first[1][:, None] + at)[:, None, None, :])
    old, lo, hi = best[index], lo[index], hi[index]
    # a channel's sign changes nothing if its square already lies all on that sign's face
    at_hi, at_lo = ((old == face).flatten(2).all(2) for face in (hi, lo))  # (n, c)
    up = _draw((n, c), best, generator, "rand") < 0.5
    same = torch.where(up, at_hi, at_lo).all(1)
    if same.any():  # the bits of r in [1, 2^c) pick the channels to flip (past the 62nd: none)
        device = generator.device if generator is not None else at.device  # drawn as in _draw
        r = torch.randint(1, 2 ** min(c, 62), (n,), generator=generator, device=device).to(at.device)
        up ^= same[:, None] & (r[:, None] >> torch.arange(c, device=at.device).clamp(max=62) & 1).bool()
    best[index] = new = torch.where(up[:, :, None, None], hi, lo)
    return index, old, new


def square_attack(model: Model, x: Tensor, y: Tensor, eps: float, *, queries: int, p_init: float = 0.05,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The L-inf Square Attack (Andriushchenko et al. 2020): random search over vertices of the ball.

    Query 1 checks the clean x (examples misclassified there stop with x_adv = x). Query 2 is
    the vertical-stripe start: every column of every channel moved by +eps or -eps (one sign per
    column), clipped to [0, 1]. Each later query tries, per example, one random square of side
    ``round(sqrt(p h w))`` (at least 1, at most the image) in which each channel moves by +-2 eps,
    clipped back into the ball and [0, 1] (so every point queried is a vertex of that box); the
    change is kept only if it lowers the margin ``z_y - max_{j != y} z_j``, and an example stops
    once that margin is < 0. The area p starts at ``p_init`` and halves after iterations 10, 50,
    200, 500, 1000, 2000, 4000, 6000 and 8000 of 10 000, rescaled to the budget (the reference
    code's ``p_selection``). A proposal equal to the current point is never queried (signs redrawn).

    Args:
        model: an ``nn.Module`` or callable mapping x (N, C, H, W) to scores (N, K); only queried.
        x: clean images (N, C, H, W) in [0, 1]. y: int64 labels (N,).
        eps: L-inf radius >= 0, input units.
        queries: budget >= 1, model queries per example, the clean check included.
        p_init: the first squares' fraction of the H W pixel positions, in (0, 1]; 0.05 is the
            reference code's default for L-inf, squares of 2x2 pixels at first on 8x8 digits.
        generator: seeds the stripes, squares and signs; default the global RNG.

    Returns:
        ``(x_adv, queries_used)``: x_adv of x's shape, dtype and device, within eps of x and in
        [0, 1]; queries_used, int64 (N,) on x's device, each <= ``queries``, exact.

    Raises:
        ValueError: eps < 0, queries < 1, p_init outside (0, 1], x not (N, C, H, W) in [0, 1],
            y not int64 (N,).

    Examples:
        >>> model = QueryCounter(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)))
        >>> x, y = torch.rand(5, 1, 4, 4), torch.randint(3, (5,))
        >>> x_adv, used = square_attack(model, x, y, 0.1, queries=30, generator=torch.Generator().manual_seed(0))
        >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6), bool((used <= 30).all()), int(used.sum()) == model.queries
        (True, True, True)
    """
    eps, queries = _check_attack(x, y, eps, queries)
    p_init = _checks.number(p_init, "p_init", gt=0, le=1)
    generator = _checks.optional_generator(generator)
    if x.ndim != 4:
        raise ValueError(f"x must be images (N, C, H, W), got shape {tuple(x.shape)}")
    x, (n, c, h, w) = x.detach(), x.shape
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    used = torch.ones(n, dtype=torch.int64, device=x.device)
    margin, x_best = _margin(_scores(model, x), y), x.clone()  # query 1: the clean input
    active = (margin >= 0).nonzero().squeeze(1)
    if eps == 0 or queries < 2 or active.numel() == 0:
        return x_best, used
    # the vertical stripes: one sign per column and channel, shared by the column's rows
    start = torch.where(_draw((active.numel(), c, 1, w), x, generator, "rand") < 0.5, hi[active], lo[active])
    x_best[active], margin = start, _margin(_scores(model, start), y[active])
    used[active] = 2  # from here on, every active example has spent as much: 2 + the squares tried
    # the still-correct examples, compacted (gathered again only when one breaks); best moves in place
    best, lo, hi, y_active = x_best[active], lo[active], hi[active], y[active]
    for iteration in range(queries - 2):
        if (margin < 0).any():  # broken: its best point is final, and it is queried no more
            keep = margin >= 0
            x_best[active[~keep]], used[active[~keep]] = best[~keep], 2 + iteration
            active, best, lo, hi, y_active, margin = (t[keep] for t in (active, best, lo, hi, y_active, margin))
        if active.numel() == 0:
            break
        side = round(math.sqrt(_p_selection(p_init, iteration, queries) * h * w))
        index, old, new = _try_square(best, lo, hi, min(max(side, 1), h, w), generator)
        new_margin = _margin(_scores(model, best.clone()), y_active)  # a copy: the model may keep what it sees
        worse = ~(new_margin < margin)  # a change is kept only if it lowers the margin: undo the others
        best[index] = torch.where(worse[:, None, None, None], old, new)
        margin = torch.where(worse, margin, new_margin)
    x_best[active], used[active] = best, queries
    return x_best, used
