"""Clean-label poisoning by feature collision: Poison Frogs (Shafahi et al. 2018) (lecture 10).

The attacker wants one *target* test image t misclassified as a *base* class. It takes a base
image b of that class and changes it, in the input space, until its features collide with the
target's, while it still looks like b:

    p* = argmin over p in [0, 1]^d of  ||f(p) - f(t)||^2 + (beta / 2) ||p - b||^2,

with f the victim's feature extractor (in transfer learning: the frozen network under the
retrained last layer). p is then published *with its correct label* (the base class); a model
retrained on it learns "the region of f(t) is the base class", and t goes with it.

Shafahi et al.'s Algorithm 1 minimizes it by forward-backward splitting: a gradient step on
the feature term (the forward step), then the proximal map of the penalty (the backward step),
which has a closed form. With the box [0, 1]^d added to the penalty (one pixel at a time, a
strongly convex quadratic on an interval: its minimizer is the clip of the unconstrained one):

    x     = p - lr * grad_p ||f(p) - f(t)||^2                     (forward)
    p_new = clip((x + lr * beta * b) / (1 + lr * beta), 0, 1)     (backward)

and p_new = argmin over p in [0, 1]^d of ||p - x||^2 / (2 lr) + (beta / 2) ||p - b||^2 exactly.

=============== ================= ================================================================
math            code              meaning
=============== ================= ================================================================
f               ``extractor``     maps images (N, C, H, W) to features (N, F); frozen
t, b, p         ``target``,       target, base and poison images (N, C, H, W) in [0, 1], one row per
                ``base``          (target, base) pair
beta            ``beta``          weight of the closeness to the base, >= 0 (see below)
lr              ``lr``            step length lambda of both half steps, > 0
gamma           ``watermark``     opacity of the target blended into the base, in [0, 1)
=============== ================= ================================================================

**What beta means here.** ``beta`` enters the backward step exactly as in Algorithm 1 (and the
issue's formula), unscaled, so the fixed points of the iteration are the stationary points of
``||f(p) - f(t)||^2 + (beta / 2) ||p - b||^2`` on the box (the paper writes the penalty as
``beta ||p - b||^2``; its own backward step is the proximal map of half of that). The authors' code
(ashafahi/inceptionv3-transferLearn-poison, ``do_optimization``) does not use the beta it is given
directly: it sets ``beta = beta0 * (2048 / D)^2``, with 2048 the dimension of InceptionV3's features
and D the number of input pixel values, on pixels in [0, 255] and with the *unsquared* feature
distance. Those units are not ours, so their ``beta0`` does not carry over; pass the beta you mean.
On digits the trade-off is stark: with :mod:`course_lib.transfer_poisoning`'s extractor (1568
features, squared feature distances of about 500 between an 8 and a 9) and lr = 0.01, 300 steps,
beta = 0.1 collides (distance below 1) but moves the poison 8.7 from its base in L2, close to the
9.8 between a typical 8 and 9: the poison looks much like the target; beta = 1 keeps it nearer
(7.5) but stops at a distance of about 5.

**Watermarking** (the paper's opacity trick, for end-to-end training and several poisons): the
base is first replaced by ``(1 - gamma) b + gamma t``, which is both the starting point and the
anchor of the penalty.

Nothing here changes the extractor: it is run in eval mode (its mode restored after), gradients are
taken with respect to the images only (``torch.autograd.grad``), so no ``.grad`` is left on its
parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from course_lib import _checks
from course_lib.models import evaluating

__all__ = ["backward_step", "feature_collision", "feature_distance", "forward_backward_step", "watermarked"]


def _check_images(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if not (x.min() >= 0 and x.max() <= 1):  # also catches nan
        raise ValueError(f"{name} must lie in [0, 1] (got values in [{x.min().item():.3g}, "
                         f"{x.max().item():.3g}]); undo normalization first")


def _check_pair(target: Tensor, base: Tensor) -> None:
    _check_images(target, "target")
    _check_images(base, "base")
    if target.shape != base.shape:
        raise ValueError(f"target and base must have the same shape (one row per pair), got "
                         f"target {tuple(target.shape)} and base {tuple(base.shape)}")


def _check_extractor(extractor: nn.Module) -> None:
    if not callable(extractor):
        raise TypeError(f"extractor must be an nn.Module (or a callable) mapping images to features, "
                        f"got {type(extractor).__name__}")


def watermarked(base: Tensor, target: Tensor, watermark: float) -> Tensor:
    """The base with the target blended in at opacity gamma: ``(1 - gamma) b + gamma t``.

    Args:
        base, target: images (N, C, H, W) in [0, 1], one row per pair.
        watermark: the opacity gamma in [0, 1); 0 returns a copy of ``base``.

    Returns:
        New images of ``base``'s shape, in [0, 1].

    Examples:
        >>> watermarked(torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2), 0.3)
        tensor([[[[0.3000, 0.3000]]]])
    """
    gamma = _checks.number(watermark, "watermark", ge=0, lt=1)
    _check_pair(target, base)
    if gamma == 0:
        return base.detach().clone()
    return ((1 - gamma) * base.detach() + gamma * target.detach()).clamp_(0, 1)


def backward_step(x: Tensor, base: Tensor, *, beta: float, lr: float) -> Tensor:
    """The backward (proximal) half step: ``clip((x + lr beta b) / (1 + lr beta), 0, 1)``.

    It is ``argmin over p in [0, 1]^d of ||p - x||^2 / (2 lr) + (beta / 2) ||p - b||^2``: setting the
    gradient to zero gives ``(p - x) / lr + beta (p - b) = 0``, i.e. the fraction; the problem splits
    into one strictly convex quadratic per pixel, whose minimizer on [0, 1] is the clipped one.

    Args:
        x: the result of the forward step, any shape; may lie outside [0, 1].
        base: the base images, x's shape.
        beta: weight of the penalty, >= 0 (0: only the clip).
        lr: the step length, > 0.

    Returns:
        The new poison, x's shape, in [0, 1].

    Examples:
        >>> backward_step(torch.tensor([1.0]), torch.tensor([0.0]), beta=1.0, lr=1.0)
        tensor([0.5000])
    """
    beta = _checks.number(beta, "beta", ge=0)
    lr = _checks.number(lr, "lr", gt=0)
    if not isinstance(x, Tensor) or not isinstance(base, Tensor) or x.shape != base.shape:
        raise ValueError(f"x and base must be tensors of the same shape, got {getattr(x, 'shape', type(x))} "
                         f"and {getattr(base, 'shape', type(base))}")
    return ((x + (lr * beta) * base) / (1 + lr * beta)).clamp_(0, 1)


def feature_distance(extractor: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """``||f(x_i) - f(t_i)||^2`` for each row: shape (N,), no gradient; the extractor in eval mode.

    Examples:
        >>> f = nn.Flatten()
        >>> feature_distance(f, torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
        tensor([4.])
    """
    _check_extractor(extractor)
    with evaluating(extractor, grad=False):
        return (extractor(x) - extractor(target)).flatten(1).pow(2).sum(1)


def _forward(extractor: nn.Module, poison: Tensor, target_features: Tensor, lr: float) -> Tensor:
    """The forward half step on sum_i ||f(p_i) - f(t_i)||^2 (the rows do not interact)."""
    with torch.enable_grad():  # also inside a caller's torch.no_grad()
        p = poison.detach().requires_grad_(True)
        loss = (extractor(p) - target_features).pow(2).sum()
        (grad,) = torch.autograd.grad(loss, p)
    return poison.detach() - lr * grad


def forward_backward_step(extractor: nn.Module, poison: Tensor, target_features: Tensor, base: Tensor, *,
                          beta: float, lr: float) -> Tensor:
    """One iteration of Algorithm 1: a gradient step on the feature distance, then :func:`backward_step`.

    Args:
        extractor: maps (N, C, H, W) to features (N, F); called as it is (put it in eval mode).
        poison: the current poisons (N, C, H, W) in [0, 1].
        target_features: f(target), shape (N, F), computed once by the caller.
        base: the (watermarked) base images, poison's shape.
        beta, lr: as in :func:`feature_collision`.

    Returns:
        The next poisons, poison's shape, in [0, 1].
    """
    beta = _checks.number(beta, "beta", ge=0)
    lr = _checks.number(lr, "lr", gt=0)
    return backward_step(_forward(extractor, poison, target_features, lr), base, beta=beta, lr=lr)


def feature_collision(extractor: nn.Module, target: Tensor, base: Tensor, *, beta: float, steps: int, lr: float,
                      watermark: float = 0.0) -> Tensor:
    """Poisons that look like the bases and sit on the targets in feature space (Algorithm 1).

    Starting from the (watermarked) base, ``steps`` forward-backward iterations of
    ``x = p - lr * grad ||f(p) - f(t)||^2`` and ``p = clip((x + lr beta b) / (1 + lr beta), 0, 1)``;
    see the module docstring for what ``beta`` means. Rows are independent: a batch of N pairs gives
    the N poisons that N separate runs would (the loss is a sum over rows).

    Args:
        extractor: an ``nn.Module`` mapping images (N, C, H, W) to features (N, F) (any trailing
            shape is flattened); run in eval mode, its mode restored; its parameters are not touched.
        target: the target images (N, C, H, W) in [0, 1].
        base: the base images, target's shape, in [0, 1]; row i is poisoned towards target row i.
        beta: weight of the closeness to the base, >= 0.
        steps: number of iterations, >= 0 (0 returns the watermarked base).
        lr: the step length of both half steps, > 0.
        watermark: opacity gamma in [0, 1) of the target blended into the base first.

    Returns:
        poison: (N, C, H, W), base's dtype and device, values in [0, 1].

    Raises:
        ValueError: for images outside [0, 1] or of mismatched shapes, beta < 0, steps < 0, lr <= 0,
            a watermark outside [0, 1), or an extractor whose outputs are not one row per image.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> f = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> t, b = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
        >>> p = feature_collision(f, t, b, beta=0.1, steps=20, lr=0.1)
        >>> bool((feature_distance(f, p, t) < feature_distance(f, b, t)).all()), p.shape
        (True, torch.Size([2, 1, 4, 4]))
    """
    _check_extractor(extractor)
    _check_pair(target, base)
    beta = _checks.number(beta, "beta", ge=0)
    steps = _checks.integer(steps, "steps", ge=0)
    lr = _checks.number(lr, "lr", gt=0)
    anchor = watermarked(base, target, watermark)
    poison = anchor.clone()
    with evaluating(extractor):
        with torch.no_grad():
            target_features = extractor(target.detach())
        if target_features.ndim < 2 or target_features.shape[0] != target.shape[0]:
            raise ValueError(f"extractor must map N images to N feature rows (N, F); for {target.shape[0]} "
                             f"images it gave shape {tuple(target_features.shape)}")
        for _ in range(steps):
            x = _forward(extractor, poison, target_features, lr)
            poison = ((x + (lr * beta) * anchor) / (1 + lr * beta)).clamp_(0, 1)  # backward_step, checked once
    return poison
