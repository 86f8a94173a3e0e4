"""Certified training against data poisoning: interval bounds on every parameter through SGD.

Abstract gradient training (Wicker et al., "Certified robustness to data poisoning in
gradient-based training", arXiv:2406.05670; reference code psosnin/AbstractGradientTraining,
whose ``PoisoningGradientAccumulator`` this follows; our code is written anew)
runs training once on boxes instead of numbers: the parameters live in a box
``[theta_L, theta_U]`` that contains the parameters of *every* run on *every* allowed poisoning
of the training data. A test prediction that is the same for every parameter in the final box
cannot be changed by the poisoning: it is certified.

Models: ``nn.Linear(d, K)`` (multinomial logistic regression; binary is ``K = 2`` with labels
in {0, 1}) and ``nn.Sequential(nn.Linear(d, H), nn.ReLU(), nn.Linear(H, K))``, both with biases;
labels int64 in ``[0, K)``; loss: the mean cross-entropy of the batch (``F.cross_entropy``).

The plain run, :func:`sgd_train`: for each epoch a permutation of the examples drawn from
``torch.Generator().manual_seed(seed)``, cut into consecutive batches of ``batch_size`` (the last
one smaller when ``batch_size`` does not divide N); per batch ``theta <- theta - lr * grad``.
:func:`agt_train` visits the same batches in the same order.

Threat model: in each batch up to ``k`` of its examples are replaced by poisoned ones: each
one's features moved anywhere within L-inf distance ``eps`` (no clipping to a data range), and,
with ``label_flip=True``, its label set to any class. Poisoning k examples of the training set
(the same ones in every epoch) puts at most k in any batch, so it is covered.

Theorem (one step; the poisoning descent bound of Wicker et al. in the reference code's form,
``(sum(grad_wp_u) + SEMax_k(grad_iwp_u - grad_wp_u)) / batchsize``). Let ``theta`` lie in
``[theta_L, theta_U]``, let the batch hold examples ``i = 1..n`` and ``k_b = min(k, n)``. Suppose that for every i and every
theta in the box

* the clean gradient ``g_i(theta)`` of example i lies in ``[L_i, U_i]``, and
* every poisoned version of example i (features in its eps-box, any label if flipped) has its
  gradient in ``[P_i, Q_i]``, with ``P_i <= L_i`` and ``Q_i >= U_i`` (we take the hull).

Then for every poisoning of at most k_b examples of the batch, the mean gradient ``G`` obeys,
elementwise,

    (sum_i L_i + sum of the k_b smallest (P_i - L_i)) / n  <=  G  <=
    (sum_i U_i + sum of the k_b largest (Q_i - U_i)) / n,

because with S the poisoned set, ``sum_i g_i <= sum_i U_i + sum_{i in S} (Q_i - U_i)``, and the
differences are >= 0, so no choice of |S| <= k_b beats the k_b largest. The step
``theta' = theta - lr G`` then lies in ``[theta_L - lr G_U, theta_U - lr G_L]``, for lr > 0.
By induction over the steps the final box holds the final parameters of every allowed run.

The hypotheses are met by interval arithmetic over the parameter box and the input box
(:mod:`course_lib.interval_gradients`; the batch's bound in :mod:`course_lib.descent_bounds`,
which takes the clean boxes in centre/radius form so that their sums are matrix products), in
float64 with outward rounding at every step (gradual underflow assumed: no flush-to-zero), so the
box holds the *real-arithmetic* run; :func:`sgd_train`'s float64 run differs from it by rounding
only (the tests find it inside every box, and within 1e-10 of the k = 0 box). No gradient
clipping (the reference code offers it, for poisoned features without bounds): the features move
by at most eps and the softmax lies in [0, 1], so every gradient is bounded. The bounds are returned in float64 whatever the model's dtype; certify float64 models.

Certification: :func:`logit_bounds` runs a test input through the interval parameters;
:func:`certified_predictions` returns the class ``c`` whose lower logit beats every other
class's upper logit (so every parameter in the box predicts c), else -1;
:func:`certified_accuracy` counts those equal to the label. With ``k = 0`` and ``eps = 0`` the
box shrinks to the plain run (widths of rounding size).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import _checks, rounding
from course_lib import interval_gradients as ig
from course_lib.descent_bounds import descent_bounds

Interval = tuple[Tensor, Tensor]
ABSTAIN = -1


# ---------------------------------------------------------------------------
# Checks and the batch order shared by both runs
# ---------------------------------------------------------------------------

def _linears(model: nn.Module) -> list[nn.Linear]:
    """The model's linear layers, checking it is a supported architecture."""
    if isinstance(model, nn.Linear):
        layers = [model]
    elif (isinstance(model, nn.Sequential) and len(model) == 3 and isinstance(model[0], nn.Linear)
          and type(model[1]) is nn.ReLU and isinstance(model[2], nn.Linear)
          and model[0].out_features == model[2].in_features):
        layers = [model[0], model[2]]
    else:
        raise ValueError("model must be nn.Linear(d, K) or nn.Sequential(nn.Linear(d, H), nn.ReLU(), "
                         f"nn.Linear(H, K)), got {type(model).__name__}: {model}")
    if any(type(lin) is not nn.Linear or lin.bias is None for lin in layers):
        raise ValueError("model's linear layers must be plain nn.Linear with bias=True")
    if layers[-1].out_features < 2:
        raise ValueError(f"model must have K >= 2 outputs (classes), got {layers[-1].out_features}")
    return layers


def _check_data(model: nn.Module, X: Tensor, y: Tensor) -> int:
    """Check X (N, d) and y (N,) against the model; returns the number of classes K."""
    layers = _linears(model)
    d, K = layers[0].in_features, layers[-1].out_features
    if not isinstance(X, Tensor) or not X.is_floating_point() or X.ndim != 2 or X.shape[1] != d or len(X) == 0:
        raise ValueError(f"X must be a non-empty floating-point tensor (N, {d}) for this model, got "
                         f"{tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__}")
    if not torch.isfinite(X).all():
        raise ValueError("X must be finite")
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != (len(X),):
        raise ValueError(f"y must be an int64 tensor of shape ({len(X)},) matching X, got "
                         f"{(y.dtype, tuple(y.shape)) if isinstance(y, Tensor) else type(y).__name__}")
    if (y < 0).any() or (y >= K).any():
        raise ValueError(f"y must hold classes in [0, {K}), got values in [{y.min().item()}, {y.max().item()}]")
    return K


def _check_schedule(n: int, epochs, lr, batch_size, seed) -> tuple[int, float, int, int]:
    epochs = _checks.integer(epochs, "epochs", ge=0)
    lr = _checks.number(lr, "lr", gt=0)
    batch_size = _checks.integer(batch_size, "batch_size", ge=1, le=n)
    seed = _checks.integer(seed, "seed", ge=0)
    return epochs, lr, batch_size, seed


def _batches(n: int, epochs: int, batch_size: int, seed: int) -> list[Tensor]:
    """Index tensors of every batch, in training order (a seeded permutation per epoch)."""
    generator = torch.Generator().manual_seed(seed)
    order = []
    for _ in range(epochs):
        order.extend(torch.randperm(n, generator=generator).split(batch_size))
    return order


# ---------------------------------------------------------------------------
# The plain run
# ---------------------------------------------------------------------------

def sgd_train(model: nn.Module, X: Tensor, y: Tensor, *, epochs: int, lr: float, batch_size: int,
              seed: int = 0) -> nn.Module:
    """Plain minibatch SGD on the mean cross-entropy, from the model's current parameters.

    Args:
        model: ``nn.Linear(d, K)`` or ``nn.Sequential(nn.Linear(d, H), nn.ReLU(), nn.Linear(H, K))``.
        X: features (N, d) in the model's dtype and device; y: int64 labels (N,) in ``[0, K)``.
        epochs: passes over the data, >= 0. lr: step size > 0.
        batch_size: in [1, N]; ``N`` is full-batch gradient descent.
        seed: fixes the batch order (see the module docstring), >= 0.

    Returns:
        A trained deep copy of ``model``; ``model`` itself is left unchanged.

    Raises:
        ValueError: for an unsupported model, mismatched X and y, or a bad count.
    """
    _check_data(model, X, y)
    epochs, lr, batch_size, seed = _check_schedule(len(y), epochs, lr, batch_size, seed)
    trained = copy.deepcopy(model)
    params = list(trained.parameters())
    for idx in _batches(len(y), epochs, batch_size, seed):
        idx = idx.to(X.device)
        loss = F.cross_entropy(trained(X[idx]), y[idx])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(lr * g)
    return trained


# ---------------------------------------------------------------------------
# The bounded run
# ---------------------------------------------------------------------------

def agt_step(params: list[Interval], X: Tensor, y: Tensor, *, k: int, eps: float, lr: float,
             label_flip: bool = False, num_classes: int) -> list[Interval]:
    """One bounded SGD step on one batch: the new parameter box (see the module's theorem).

    Args:
        params: the parameter box, ``(lower, upper)`` float64 per parameter, model order.
        X: the batch (n, d) float64; y: its int64 labels (n,).
        k: poisoned examples in this batch, >= 0 (min(k, n) used); eps: their L-inf radius >= 0.
        lr: step size > 0. label_flip: poisoned labels may be any class. num_classes: K.

    Returns:
        The parameter box after the step, same layout as ``params``.
    """
    lr = _checks.number(lr, "lr", gt=0)
    grads = descent_bounds(params, X, y, k=k, eps=eps, label_flip=label_flip, num_classes=num_classes)
    new = []
    for (p_lo, p_hi), (g_lo, g_hi) in zip(params, grads):
        new.append((ig.down(p_lo - ig.up(lr * g_hi)), ig.up(p_hi - ig.down(lr * g_lo))))
    return new


def agt_train(model: nn.Module, X: Tensor, y: Tensor, *, k: int, eps: float, epochs: int, lr: float,
              batch_size: int, seed: int = 0, label_flip: bool = False) -> tuple[list[Tensor], list[Tensor]]:
    """Bounds on every parameter of :func:`sgd_train` over all poisonings of k examples per batch.

    Args:
        model, X, y, epochs, lr, batch_size, seed: as for :func:`sgd_train` (same batches, same order).
        k: poisoned examples per batch, in [0, batch_size].
        eps: L-inf radius of the feature poisoning, >= 0 (0: features untouched).
        label_flip: also let the poisoned examples carry any label.

    Returns:
        ``(param_lower, param_upper)``: lists of float64 tensors in ``model.parameters()`` order,
        on the model's device. Every allowed poisoning's real-arithmetic run of
        :func:`sgd_train` ends inside them.

    Raises:
        ValueError: for k < 0 or k > batch_size, eps < 0, mismatched shapes, an unsupported
            model, or bounds that overflowed float64.
    """
    K = _check_data(model, X, y)
    epochs, lr, batch_size, seed = _check_schedule(len(y), epochs, lr, batch_size, seed)
    k = _checks.integer(k, "k", ge=0)
    if k > batch_size:
        raise _checks.fail("k", f"an integer in [0, batch_size = {batch_size}]", k)
    eps = _checks.number(eps, "eps", ge=0)
    label_flip = _checks.flag(label_flip, "label_flip")
    X64 = X.detach().to(torch.float64)
    params = [(p.detach().to(torch.float64).clone(),) * 2 for p in model.parameters()]
    with rounding.exact_kernels(X.device), torch.no_grad():
        for step, idx in enumerate(_batches(len(y), epochs, batch_size, seed)):
            idx = idx.to(X.device)
            params = agt_step(params, X64[idx], y[idx], k=k, eps=eps, lr=lr, label_flip=label_flip,
                              num_classes=K)
            if not all(torch.isfinite(lo).all() and torch.isfinite(hi).all() for lo, hi in params):
                raise ValueError(f"the parameter bounds overflowed float64 at step {step}; "
                                 "use a smaller lr, k or eps, or fewer epochs")
    return [lo for lo, _ in params], [hi for _, hi in params]


# ---------------------------------------------------------------------------
# Certified predictions from the final box
# ---------------------------------------------------------------------------

def _check_box(model: nn.Module, param_lower: list[Tensor], param_upper: list[Tensor]) -> list[Interval]:
    _linears(model)
    shapes = [p.shape for p in model.parameters()]
    if (not isinstance(param_lower, (list, tuple)) or not isinstance(param_upper, (list, tuple))
            or [t.shape for t in param_lower] != shapes or [t.shape for t in param_upper] != shapes):
        raise ValueError(f"param_lower and param_upper must be lists of tensors shaped like model.parameters(): "
                         f"{[tuple(s) for s in shapes]}")
    box = []
    for lo, hi in zip(param_lower, param_upper):
        lo, hi = lo.detach().to(torch.float64), hi.detach().to(torch.float64)
        if not (lo <= hi).all():  # also refuses nan
            raise ValueError("param_lower must be <= param_upper elementwise (and not nan)")
        box.append((lo, hi))
    return box


def logit_bounds(model: nn.Module, param_lower: list[Tensor], param_upper: list[Tensor],
                 X: Tensor) -> Interval:
    """Sound bounds on the logits (N, K) of inputs X (N, d) for every parameter in the box (float64)."""
    box = _check_box(model, param_lower, param_upper)
    d = box[0][0].shape[1]
    if not isinstance(X, Tensor) or not X.is_floating_point() or X.ndim != 2 or X.shape[1] != d:
        raise ValueError(f"X must be a floating-point tensor (N, {d}), got "
                         f"{tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__}")
    X64 = X.detach().to(torch.float64)
    with rounding.exact_kernels(X.device), torch.no_grad():
        z, _ = ig.forward(box, (X64, X64))
    return z


def certified_predictions(model: nn.Module, param_lower: list[Tensor], param_upper: list[Tensor],
                          X: Tensor) -> Tensor:
    """The class every parameter in the box predicts for each input, or ``ABSTAIN`` (-1).

    Class c is returned when its lower logit bound exceeds every other class's upper bound
    (a lower bound on the margin z_c - z_j over the whole box that is > 0).

    Returns:
        int64 tensor (N,) on X's device, entries in ``[0, K)`` or -1.
    """
    lower, upper = logit_bounds(model, param_lower, param_upper, X)
    K = lower.shape[1]
    best = upper.unsqueeze(1).expand(-1, K, -1).masked_fill(torch.eye(K, dtype=torch.bool, device=X.device),
                                                             -torch.inf).amax(-1)  # max_{j != c} z_j^U
    sure = lower > best  # at most one class per row can hold
    return torch.where(sure.any(1), sure.to(torch.int64).argmax(1), torch.full_like(sure[:, 0], ABSTAIN,
                                                                                     dtype=torch.int64))


def certified_accuracy(model: nn.Module, param_lower: list[Tensor], param_upper: list[Tensor],
                       X: Tensor, y: Tensor) -> float:
    """The fraction of test points (X (N, d), int64 labels y (N,)) whose certified class is y."""
    if not isinstance(y, Tensor) or y.shape != (len(X),):
        raise ValueError(f"y must be a tensor of shape ({len(X)},) matching X")
    pred = certified_predictions(model, param_lower, param_upper, X)
    return (pred == y.to(pred.device)).double().mean().item()
