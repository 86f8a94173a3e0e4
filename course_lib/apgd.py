"""APGD: auto-PGD, PGD without a step size to tune (Croce and Hein, ICML 2020; lecture 8).

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (Algorithm 1). PGD with a fixed step size either stalls (too small) or
oscillates (too large); APGD starts large and halves the step when progress stops:

=============== ============ ===============================================================
math            code         meaning
=============== ============ ===============================================================
eta             ``eta``      step size per example, ``2 eps`` at the start
alpha           ``MOMENTUM`` 0.75: weight of the new step against the last move (1 at step 1)
w_j             checkpoints  iterations at which the step size may halve (:func:`checkpoints`)
rho             ``RHO``      0.75: halve if fewer than rho (w_j - w_{j-1}) steps raised the loss
=============== ============ ===============================================================

Each iteration (one forward and one backward pass) does::

    z       = P(x_k + eta * sign(grad f(x_k)))                       (L2: grad / ||grad||)
    x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha) (x_k - x_{k-1}))

with P the projection onto the eps-ball intersected with [0, 1]. At a checkpoint w_j an
example's step size halves, and its iterate restarts from its best point so far, when

1. fewer than ``rho (w_j - w_{j-1})`` of the steps since w_{j-1} increased the loss, or
2. its step size was not halved at w_{j-1} and its best loss has not grown since then (from
   the second checkpoint on, as in the authors' code).

The checkpoints are ``w_j = ceil(p_j * steps)`` with ``p_0 = 0``, ``p_1 = 0.22`` and
``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, computed in exact (integer hundredth)
arithmetic: 0, 22, 41, 57, 70, 80, 87, 93, 99 for 100 steps, as the authors' code has it (in
float arithmetic ``ceil(0.57 * 100)`` would round up to 58).

Differences from the authors' code (``autoattack/autopgd_base.py``), written from the paper:
condition 1 is the paper's strict ``<`` (the code has ``<=``) and its first window compares the
first step with the starting point; checkpoints are ``ceil(p_j N)`` as in the paper (the code
floors the window lengths, the same for N a multiple of 100); one run, no restarts; every
example is attacked (the authors' code skips those already misclassified).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from course_lib import _checks
from course_lib.attack_base import LOSSES, _check_inputs, _per_example_loss, _per_example_norm

__all__ = ["MOMENTUM", "RHO", "apgd", "checkpoints"]

NORMS = ("linf", "l2")
MOMENTUM = 0.75
"""alpha: ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha) (x_k - x_{k-1}))`` (alpha = 1 at the first step)."""
RHO = 0.75
"""Halve the step size when fewer than this fraction of the steps since the last checkpoint raised the loss."""


def checkpoints(steps: int) -> list[int]:
    """The iterations ``0 = w_0 < w_1 < ... <= steps`` at which APGD may halve its step size.

    ``w_j = ceil(p_j * steps)``, ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``,
    in exact arithmetic; repeated values (few steps) are kept once.

    Examples:
        >>> checkpoints(100)
        [0, 22, 41, 57, 70, 80, 87, 93, 99]
        >>> checkpoints(10)
        [0, 3, 5, 6, 7, 8, 9, 10]
    """
    steps = _checks.integer(steps, "steps", ge=1)
    previous, p = 0, 22  # p_j in hundredths: exact integers
    found = [0]
    while (w := -(-p * steps // 100)) <= steps:  # ceil(p * steps / 100)
        if w > found[-1]:
            found.append(w)
        previous, p = p, p + max(p - previous - 3, 6)
    return found


def _start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """The random start of the authors' code: a perturbation of norm exactly eps (before clipping).

    L-inf: ``eps * u / max|u|`` with u uniform in [-1, 1]^d; L2: ``eps * g / ||g||`` with g Gaussian.
    """
    device = generator.device if generator is not None else x.device
    if norm == "linf":
        t = 2 * torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype) - 1
        scale = t.flatten(1).abs().amax(1).view(-1, *([1] * (x.ndim - 1)))
    else:
        t = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
        scale = _per_example_norm(t)
    return (eps * t / scale.clamp_min(1e-12)).to(x.device)


def _loss_and_gradient(model: nn.Module, x_adv: Tensor, y: Tensor, loss: str) -> tuple[Tensor, Tensor, Tensor]:
    """One forward and one backward pass: per-example loss (N,), input gradient, misclassified (N,) bool."""
    with torch.enable_grad():  # attacks also run inside torch.no_grad() evaluation loops
        x_adv = x_adv.detach().requires_grad_(True)
        logits = model(x_adv)
        losses = _per_example_loss(logits, y, loss)
        (grad,) = torch.autograd.grad(losses.sum(), x_adv)
    return losses.detach(), grad, logits.detach().argmax(1) != y


def apgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, *, loss: str = "ce",
         norm: str = "linf", generator: torch.Generator | None = None) -> Tensor:
    """Auto-PGD (Croce and Hein 2020): PGD with momentum and a self-adapting step size.

    No step size to choose: it starts at ``2 eps`` and halves per example at the checkpoints
    (:func:`checkpoints`) when the loss stops rising, restarting from that example's best point.
    One random start (as in the authors' code: a point at distance exactly eps, then clipped to
    [0, 1]); ``steps`` iterations of one forward and one backward pass each, plus one at the start.

    Args:
        model: maps x (N, C, H, W) to logits (N, K); its train/eval mode is left as it is.
        x: clean inputs, values in [0, 1].
        y: int64 labels (N,).
        eps: radius of the ball >= 0, in input units.
        steps: number of iterations >= 1 (the paper uses 100).
        loss: ``"ce"`` (cross-entropy), ``"dlr"`` (difference of logits ratio,
            :func:`course_lib.attack_base.dlr_loss`: invariant to the logits' scale, K >= 3) or
            ``"margin"``.
        norm: ``"linf"`` or ``"l2"``.
        generator: seeds the random start (on the generator's device); default the global RNG.

    Returns:
        x_adv: shape, dtype and device of x; inside the eps-ball of ``norm`` around x (up to one
        rounding, see :mod:`course_lib.attacks`), in [0, 1]. Per example, the visited point of
        highest loss, except where that point is classified correctly but some visited point was
        misclassified: then the last misclassified point visited. So an example is returned
        misclassified whenever APGD found a misclassified point for it.

    Raises:
        ValueError: for eps < 0, steps < 1, an unknown norm or loss, x outside [0, 1], labels that
            are not int64 of shape (N,), or loss ``"dlr"`` with fewer than 3 classes.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, y = torch.rand(5, 1, 2, 2), torch.randint(3, (5,))
        >>> x_adv = apgd(model, x, y, eps=0.1, steps=10, generator=torch.Generator().manual_seed(0))
        >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6), bool(x_adv.min() >= 0 and x_adv.max() <= 1)
        (True, True)
        >>> x_l2 = apgd(model, x, y, eps=0.5, steps=10, loss="dlr", norm="l2")
        >>> bool((x_l2 - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-6)
        True
    """
    eps = _checks.number(eps, "eps", ge=0)
    steps = _checks.integer(steps, "steps", ge=1)
    loss = _checks.choice(loss, "loss", LOSSES)
    norm = _checks.choice(norm, "norm", NORMS)
    generator = _checks.optional_generator(generator)
    _check_inputs(x, y)
    x = x.detach()
    shape = (-1, *([1] * (x.ndim - 1)))  # per-example values broadcast against x

    if norm == "linf":
        # the L-inf ball intersected with the box [0, 1] is a box: one clamp projects onto both
        lo, hi = (x - eps).clamp_(min=0), (x + eps).clamp_(max=1)

        def project(t: Tensor) -> Tensor:
            return t.clamp_(lo, hi)

        def ascent(g: Tensor) -> Tensor:
            return g.sign()
    else:
        def project(t: Tensor) -> Tensor:
            # onto the ball, then the box (clipping moves each pixel toward x, staying in the ball)
            delta = t.sub_(x)
            delta.mul_((eps / _per_example_norm(delta).clamp_min(1e-12)).clamp_(max=1.0))
            return delta.add_(x).clamp_(0, 1)

        def ascent(g: Tensor) -> Tensor:
            return g / _per_example_norm(g).clamp_min(1e-12)

    x_adv = project(x + _start(x, eps, norm, generator))
    loss_now, grad, wrong = _loss_and_gradient(model, x_adv, y, loss)
    x_best, loss_best, grad_best, best_wrong = x_adv.clone(), loss_now.clone(), grad.clone(), wrong.clone()
    x_wrong, found_wrong = x_adv.clone(), wrong.clone()
    eta = torch.full((x.shape[0],), 2 * eps, dtype=x.dtype, device=x.device)
    x_prev = x_adv
    check = set(checkpoints(steps)[1:])
    last_check = 0
    raised = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)  # steps that raised the loss
    halved_last = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)  # condition 2 waits a window
    loss_best_last = loss_best.clone()
    for k in range(1, steps + 1):
        a = 1.0 if k == 1 else MOMENTUM
        z = project(torch.addcmul(x_adv, eta.view(shape), ascent(grad)))
        if a == 1.0:
            x_new = z
        else:  # x_k + a (z - x_k) + (1 - a) (x_k - x_{k-1})
            x_new = project(z.sub_(x_adv).mul_(a).add_(x_adv).add_(x_adv - x_prev, alpha=1 - a))
        x_prev, x_adv = x_adv, x_new
        loss_prev = loss_now
        loss_now, grad, wrong = _loss_and_gradient(model, x_adv, y, loss)
        raised += loss_now > loss_prev
        better = loss_now > loss_best
        x_best = torch.where(better.view(shape), x_adv, x_best)
        grad_best = torch.where(better.view(shape), grad, grad_best)
        loss_best = torch.where(better, loss_now, loss_best)
        best_wrong = torch.where(better, wrong, best_wrong)
        if wrong.any():
            x_wrong = torch.where(wrong.view(shape), x_adv, x_wrong)
            found_wrong |= wrong
        if k in check:
            stalled = raised < RHO * (k - last_check)  # condition 1
            stuck = ~halved_last & (loss_best <= loss_best_last)  # condition 2
            halve = stalled | stuck
            if halve.any():
                eta = torch.where(halve, eta / 2, eta)
                x_adv = torch.where(halve.view(shape), x_best, x_adv)
                grad = torch.where(halve.view(shape), grad_best, grad)
                loss_now = torch.where(halve, loss_best, loss_now)
            halved_last, loss_best_last, last_check = halve, loss_best.clone(), k
            raised.zero_()
    return torch.where((found_wrong & ~best_wrong).view(shape), x_wrong, x_best)
