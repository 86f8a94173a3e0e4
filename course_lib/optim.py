"""Gradient descent and stochastic gradient descent, written from scratch (lecture 1).

Notation (one name per symbol):

=========== ========== ====================================================
math        code       meaning
=========== ========== ====================================================
w           ``w``      parameters, any shape
eta         ``lr``     step size (learning rate), > 0
mu          ``momentum`` heavy-ball coefficient in [0, 1)
v           ``velocity`` running sum of past gradients, shape of w
B           ``batch_size`` examples per stochastic gradient
=========== ========== ====================================================

GD:        ``w <- w - lr * grad F(w)``
Momentum:  ``v <- momentum * v + g;  w <- w - lr * v``  (PyTorch's convention)
SGD:       ``g`` is the gradient of the mean loss over a minibatch drawn uniformly
           without replacement, an unbiased estimate of ``grad F(w)``.

Two forms: functions on plain tensors (:func:`gd_step`, :func:`sgd_path`, ...) for
the lecture's pictures, and :class:`SGD`, a ``torch.optim.Optimizer`` for the
parameters of an ``nn.Module``. Full-batch gradient descent is :class:`SGD` fed
the gradient of the whole training loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from course_lib import _checks

GradFn = Callable[[Tensor, "Tensor | None"], Tensor]
"""``grad_fn(w, idx)``: gradient of the mean loss over examples ``idx`` (int64 (B,)),
or over all examples when ``idx`` is None; same shape as ``w``."""


def _check_lr(lr: float, *, zero_ok: bool = False) -> float:
    """``zero_ok``: the optimizer class, like torch.optim.SGD, takes lr = 0 (a warm-up starts there)."""
    return _checks.number(lr, "lr", ge=0) if zero_ok else _checks.number(lr, "lr", gt=0)


def _check_momentum(momentum: float) -> float:
    return _checks.number(momentum, "momentum", ge=0, lt=1)


def _check_grad(w: Tensor, grad: Tensor) -> None:
    if not isinstance(w, Tensor) or not isinstance(grad, Tensor):
        raise TypeError(f"w and grad must be tensors, got {type(w).__name__} and {type(grad).__name__}")
    if grad.shape != w.shape:
        raise ValueError(f"grad must have the shape of w {tuple(w.shape)}, got {tuple(grad.shape)}")


def gd_step(w: Tensor, grad: Tensor, lr: float) -> Tensor:
    """One gradient descent step, ``w - lr * grad``; ``w`` is not modified.

    Args:
        w: parameters, any shape.
        grad: gradient of the objective at ``w``, shape of ``w``.
        lr: step size > 0.

    Returns:
        The new parameters, a new tensor of ``w``'s shape, dtype and device.

    Raises:
        ValueError: if ``lr <= 0`` or the shapes differ.

    Examples:
        >>> gd_step(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 4.0]), lr=0.25)
        tensor([ 0.8750, -3.0000])
    """
    lr = _check_lr(lr)
    _check_grad(w, grad)
    return w - lr * grad


def momentum_step(w: Tensor, velocity: Tensor, grad: Tensor, lr: float,
                  momentum: float) -> tuple[Tensor, Tensor]:
    """One heavy-ball step: ``v = momentum * v + grad``, ``w = w - lr * v``.

    Returns:
        ``(w_new, velocity_new)``, new tensors; the inputs are not modified.

    Examples:
        >>> w, v = momentum_step(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([1.0]), lr=0.1, momentum=0.5)
        >>> w, v
        (tensor([0.8000]), tensor([2.]))
    """
    lr, momentum = _check_lr(lr), _check_momentum(momentum)
    _check_grad(w, grad)
    _check_grad(w, velocity)
    velocity = momentum * velocity + grad
    return w - lr * velocity, velocity


def sample_minibatch(n: int, batch_size: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> Tensor:
    """``batch_size`` distinct indices drawn uniformly from ``range(n)``; int64 (B,).

    Each index is included with probability ``batch_size / n``, which is what makes
    the minibatch gradient an unbiased estimate of the full gradient.

    Examples:
        >>> idx = sample_minibatch(10, 4, torch.Generator().manual_seed(0))
        >>> idx.shape, idx.unique().numel()
        (torch.Size([4]), 4)
    """
    n = _checks.integer(n, "n", ge=1)
    batch_size = _checks.integer(batch_size, "batch_size", ge=1, le=n)
    return torch.randperm(n, generator=generator)[:batch_size].to(device or "cpu")


def sgd_path(grad_fn: GradFn, w0: Tensor, lr: float, steps: int, *, n: int | None = None,
             batch_size: int | None = None, momentum: float = 0.0,
             generator: torch.Generator | None = None) -> Tensor:
    """Run (stochastic) gradient descent and return every iterate.

    Args:
        grad_fn: ``grad_fn(w, idx)`` is the gradient of the mean loss over the
            examples ``idx`` (``None``: all of them), shape of ``w``.
        w0: starting point, any shape.
        lr: step size > 0.
        steps: number of updates >= 0.
        n: number of examples; required when ``batch_size`` is given.
        batch_size: examples per stochastic gradient; ``None`` means the full
            gradient, i.e. plain gradient descent.
        momentum: heavy-ball coefficient in [0, 1); 0 is plain (S)GD.
        generator: seeds the minibatch draws.

    Returns:
        Iterates of shape (steps + 1, *w0.shape), ``path[0] == w0``, on w0's device.
        A diverging run is returned as it is (values may grow to inf or nan).

    Examples:
        >>> from course_lib.objectives import make_regression_2d
        >>> problem = make_regression_2d(n=50)
        >>> path = sgd_path(problem.grad, torch.zeros(2), lr=0.5, steps=20, n=50, batch_size=5,
        ...                 generator=torch.Generator().manual_seed(0))
        >>> path.shape, bool(problem.loss(path[-1]) < problem.loss(path[0]))
        (torch.Size([21, 2]), True)
    """
    lr, momentum = _check_lr(lr), _check_momentum(momentum)
    steps = _checks.integer(steps, "steps", ge=0)
    if not isinstance(w0, Tensor):
        raise TypeError(f"w0 must be a tensor, got {type(w0).__name__}")
    if batch_size is not None and n is None:
        raise ValueError("n (the number of examples) is required when batch_size is given")
    if batch_size is not None:
        sample_minibatch(n, batch_size)  # validates n and batch_size before any step
    w = w0.detach().clone()
    velocity = torch.zeros_like(w)
    path = [w]
    for _ in range(steps):
        idx = None if batch_size is None else sample_minibatch(n, batch_size, generator, w.device)
        grad = grad_fn(w, idx)
        _check_grad(w, grad)
        if momentum:
            w, velocity = momentum_step(w, velocity, grad, lr, momentum)
        else:
            w = gd_step(w, grad, lr)
        path.append(w)
    return torch.stack(path)


def gd_path(grad_fn: GradFn, w0: Tensor, lr: float, steps: int, *,
            momentum: float = 0.0) -> Tensor:
    """Full-batch gradient descent: :func:`sgd_path` with ``batch_size=None``.

    Examples:
        >>> gd_path(lambda w, idx: 2 * w, torch.tensor([1.0]), lr=0.25, steps=2)  # F(w) = w^2
        tensor([[1.0000],
                [0.5000],
                [0.2500]])
    """
    return sgd_path(grad_fn, w0, lr, steps, momentum=momentum)


class SGD(torch.optim.Optimizer):
    """(Stochastic) gradient descent with optional heavy-ball momentum, from scratch.

    The update for each parameter ``p`` with gradient ``g = p.grad``::

        v = momentum * v + g      (v starts at g; skipped when momentum == 0)
        p = p - lr * v

    This matches ``torch.optim.SGD(lr=lr, momentum=momentum)`` (no dampening, no
    Nesterov, no weight decay). It is gradient descent when the gradients come
    from the whole training set, SGD when they come from a minibatch.

    Args:
        params: an iterable of tensors or parameter-group dicts, e.g. ``model.parameters()``.
        lr: step size > 0.
        momentum: in [0, 1).

    Examples:
        >>> layer = torch.nn.Linear(2, 1)
        >>> opt = SGD(layer.parameters(), lr=0.1, momentum=0.9)
        >>> layer(torch.ones(1, 2)).sum().backward()
        >>> opt.step()
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float,
                 momentum: float = 0.0) -> None:
        super().__init__(params, {"lr": _check_lr(lr, zero_ok=True), "momentum": _check_momentum(momentum)})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """Apply one update to every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = _check_lr(group["lr"], zero_ok=True), _check_momentum(group["momentum"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                direction = p.grad
                if momentum:
                    state = self.state[p]
                    if "velocity" not in state:
                        state["velocity"] = direction.clone()
                    else:
                        state["velocity"].mul_(momentum).add_(direction)
                    direction = state["velocity"]
                p.add_(direction, alpha=-lr)
        return loss
