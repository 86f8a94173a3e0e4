"""The batch losses of certified training: minimize an upper bound on the worst-case loss (lecture 4).

Adversarial training (:mod:`course_lib.losses`) minimizes the loss at an attack's output, a
*lower* bound on the worst case over the eps-ball. Certified training minimizes an *upper*
bound, built from lower bounds ``m_j <= z_y - z_j`` on the margins over the whole clipped
eps-ball (``m_y = 0``): the cross-entropy is ``CE(z, y) = log sum_j exp(-(z_y - z_j))``, which
only grows as a margin shrinks, so at every input of the ball

    ``CE(model(x'), y) <= CE(-m, y)``   (the *robust cross-entropy*, ``-m``: worst-case logits).

Driving ``CE(-m, y)`` down trains a network whose bounds certify it. Two bounds on the margins:

* IBP training (Gowal et al. 2018): :class:`IBPLoss`, :func:`ibp_loss`, margins from interval
  bound propagation (:mod:`course_lib.ibp`), the last layer folded into the margins;
* CROWN-IBP training (Zhang et al. 2020, "Towards stable and efficient training of verifiably
  robust neural networks"): :class:`CROWNIBPLoss`, :func:`crown_ibp_loss`, margins mixing the
  CROWN-IBP bound (:func:`course_lib.crown.crown_bounds` with ``method="crown-ibp"``: IBP for the
  hidden layers, one CROWN backward pass for the margin specification, tighter) and the IBP
  bound, ``m = beta * m_CROWN-IBP + (1 - beta) * m_IBP`` (:func:`crown_ibp_margins`).

Both are batch losses ``(model, x, y) -> (loss, logits)`` for :func:`course_lib.train.train`
(also reachable as ``cl.train.ibp_loss``, ``cl.train.crown_ibp_loss``), with the epsilon ramp of
:class:`course_lib.losses.EpsRamp`.

Examples:
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 2])
    >>> loss, logits = crown_ibp_loss(0.1)(net, x, y)
    >>> loss.shape, logits.shape
    (torch.Size([]), torch.Size([2, 3]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import _checks
from course_lib.losses import EpsRamp

__all__ = ["CROWNIBPLoss", "IBPLoss", "crown_ibp_loss", "crown_ibp_margins", "ibp_loss"]

# ---------------------------------------------------------------------------
# IBP training (lecture 4): minimize an upper bound on the worst-case loss
# ---------------------------------------------------------------------------


class IBPLoss(EpsRamp):
    """The robust loss of IBP training (Gowal et al. 2018), with an epsilon ramp.

    ``loss = gamma * CE(y, model(x)) + (1 - gamma) * CE(y, z_worst)`` where ``z_worst`` are the
    worst-case logits of :func:`course_lib.ibp.worst_case_logits`: minus the IBP lower bounds
    on the margins ``z_y - z_j`` over the clipped eps-box (0 for the true class). Since the
    cross-entropy only grows when the true logit drops and the others rise, ``CE(y, z_worst)``
    upper-bounds the cross-entropy at every input of the box, so driving it down trains a
    network IBP can certify. ``gamma`` weighs the clean fit (Gowal et al.'s kappa, ending at 0.5).

    Epsilon ramp as in :class:`course_lib.losses.AdversarialLoss`: ``eps_t = eps * min(1, t / ramp_batches)``
    at the t-th (0-based) training batch (gradients enabled); under ``torch.no_grad()`` (``evaluate``)
    the full ``eps`` is used and the counter does not move. Without a ramp IBP training at a large
    eps usually collapses: the bounds of a random network are huge.

    Attributes:
        eps, gamma, ramp_batches, fold_last: as given.
        batches: training batches seen so far.
        eps_history: the eps used at each training batch so far.
    """

    def __init__(self, eps: float, *, gamma: float = 0.5, ramp_batches: int = 0, fold_last: bool = True) -> None:
        gamma = _checks.number(gamma, "gamma", ge=0, le=1)
        super().__init__(eps, ramp_batches)
        self.gamma, self.fold_last = gamma, _checks.flag(fold_last, "fold_last")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The robust loss of the batch.

        Args:
            model: an IBP-supported ``nn.Sequential`` mapping x (N, ...) to logits (N, K).
            x: inputs (N, ...) in [0, 1].
            y: int64 labels (N,).

        Returns:
            ``(loss, logits)``: the scalar robust loss and the clean (N, K) logits (accuracy is
            counted on clean inputs).
        """
        from course_lib.ibp import worst_case_logits  # here: train.py is imported by every lecture

        eps = self.current_eps()
        logits = model(x)
        worst = worst_case_logits(model, x, y, eps, fold_last=self.fold_last)
        loss = self.gamma * F.cross_entropy(logits, y) + (1 - self.gamma) * F.cross_entropy(worst, y)
        return loss, logits

    def __repr__(self) -> str:
        return (f"IBPLoss(eps={self.eps:g}, gamma={self.gamma:g}, ramp_batches={self.ramp_batches}, "
                f"fold_last={self.fold_last})")


def ibp_loss(eps: float, *, gamma: float = 0.5, ramp_batches: int = 0, fold_last: bool = True) -> IBPLoss:
    """The batch loss of IBP training: ``train(model, loader, batch_loss=ibp_loss(0.1, ramp_batches=200))``.

    Args:
        eps: target L-inf radius, >= 0, in input units.
        gamma: weight of the clean cross-entropy, in [0, 1]; ``1 - gamma`` weighs the worst case.
        ramp_batches: grow eps linearly from 0 over this many training batches (0: none).
        fold_last: fold the last Linear layer into the margins (tighter bounds).

    Returns:
        An :class:`IBPLoss`; it counts training batches, so use a fresh one per training run.

    Raises:
        ValueError: for eps < 0, gamma outside [0, 1], or ramp_batches not an integer >= 0.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> loss_fn = ibp_loss(0.1, ramp_batches=200)
        >>> loss, logits = loss_fn(net, torch.rand(2, 1, 2, 2), torch.tensor([0, 2]))
        >>> loss.shape, loss_fn.eps_history
        (torch.Size([]), [0.0])
    """
    return IBPLoss(eps, gamma=gamma, ramp_batches=ramp_batches, fold_last=fold_last)


# ---------------------------------------------------------------------------
# CROWN-IBP training ("Beyond IBP"): a tighter bound on the margins, mixed with IBP's
# ---------------------------------------------------------------------------

def _mixed_margins(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, beta: float,
                   num_classes: int) -> tuple[Tensor, Tensor]:
    """``(m, others)``: m (N, K-1) the mixed margin lower bounds on ``z_y - z_j`` for j in others (N, K-1).
    A term of weight 0 is not computed (beta = 0: no CROWN pass; beta = 1: no IBP pass)."""
    from course_lib.crown import crown_bounds  # here: train.py is imported by every lecture
    from course_lib.specification import margin_spec, other_classes
    from course_lib.ibp import worst_case_margins

    spec = margin_spec(y, num_classes)
    others = other_classes(y, num_classes)
    m_crown = m_ibp = None
    if beta > 0:  # one CROWN backward pass with the K-1 margin rows
        m_crown = crown_bounds(model, x, eps, C=spec, method="crown-ibp", lower_only=True)[0]
    if beta < 1:  # IBP with the last layer folded into the margins, as CROWN-IBP's C folds it
        m_ibp = worst_case_margins(model, x, y, eps).gather(1, others)
    if m_ibp is None:
        return m_crown, others
    if m_crown is None:
        return m_ibp, others
    return beta * m_crown + (1 - beta) * m_ibp, others


def crown_ibp_margins(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, *, beta: float = 1.0) -> Tensor:
    """Lower bounds on the margins ``z_y - z_j`` over the clipped eps-ball: ``beta`` CROWN-IBP + ``(1 - beta)`` IBP.

    A convex combination of two lower bounds is a lower bound; ``beta = 1`` is pure CROWN-IBP
    (usually tighter), ``beta = 0`` pure IBP (:func:`course_lib.ibp.worst_case_margins`, folded).

    Args:
        model: an ``nn.Sequential`` of Linear, Conv2d, ReLU and Flatten mapping x (N, ...) to (N, K).
        x: inputs (N, ...) in [0, 1].
        y: int64 labels (N,).
        eps: L-inf radius, a finite number >= 0 (or a tensor (N,) of per-example radii).
        beta: weight of the CROWN-IBP bound, in [0, 1].

    Returns:
        margins (N, K), differentiable: column j (j != y) a lower bound on ``model(x')_y - model(x')_j``
        for every x' of the ball, up to floating-point rounding; the true class's column is +inf
        (as in :func:`course_lib.ibp.worst_case_margins`: ``margins.min(1).values > 0`` certifies).

    Raises:
        ValueError: for eps < 0, beta outside [0, 1], x outside [0, 1] or bad labels (each named).
        TypeError: for a layer the bounds do not support.

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> x, y = torch.rand(4, 2), torch.tensor([0, 1, 2, 0])
        >>> margins = crown_ibp_margins(net, x, y, 0.1, beta=0.5)
        >>> margins.shape, bool(torch.isinf(margins.gather(1, y[:, None])).all())
        (torch.Size([4, 3]), True)
    """
    beta = _checks.number(beta, "beta", ge=0, le=1)
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    m, others = _mixed_margins(model, x, y, eps, beta, num_classes)
    return torch.full((m.shape[0], num_classes), math.inf, dtype=m.dtype, device=m.device).scatter(1, others, m)


def _schedule(value: float | Sequence[float], name: str) -> tuple[float, float]:
    """``(start, end)`` from one number (constant) or a pair, each in [0, 1]."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise _checks.fail(name, "a number in [0, 1] or a pair (start, end) of them", value)
        return _checks.number(value[0], name, ge=0, le=1), _checks.number(value[1], name, ge=0, le=1)
    v = _checks.number(value, name, ge=0, le=1)
    return v, v


def _between(pair: tuple[float, float], p: float) -> float:
    """``start + (end - start) * p`` for ``pair = (start, end)``."""
    start, end = pair
    return start + (end - start) * p


class CROWNIBPLoss(EpsRamp):
    """The robust loss of CROWN-IBP training (Zhang et al. 2020), with its three ramps.

    ``loss = kappa * CE(model(x), y) + (1 - kappa) * CE(-m, y)``, where ``m`` (0 for the true
    class) is :func:`crown_ibp_margins`: ``m = beta * m_CROWN-IBP + (1 - beta) * m_IBP``, lower
    bounds on the margins ``z_y - z_j`` over the clipped eps-ball, so ``CE(-m, y)`` upper-bounds
    the cross-entropy at every input of the ball (module docstring).

    Schedules: at the t-th (0-based) training batch, with ``p_t = min(1, t / ramp_batches)``
    (1 when ``ramp_batches = 0``), ``eps_t = eps * p_t`` (:class:`course_lib.losses.EpsRamp`) and
    ``kappa_t = kappa_start + (kappa_end - kappa_start) * p_t``, likewise ``beta_t``: all three
    move together, as in the authors' code, which sets ``beta = (max_eps - eps * (1.0 - final_beta)) / max_eps``
    and ``kappa`` alike (huanzhang12/CROWN-IBP, ``train.py``), i.e. ``1 -> final`` as eps ramps up.
    Under ``torch.no_grad()`` (``evaluate``) the final values are used and the counter does not move.
    Early in training the IBP bounds of a random network are huge and CROWN-IBP's are tighter and
    steadier; by the end ``beta_end = 0`` trains on IBP bounds alone, the cheap ones.

    Attributes:
        eps, ramp_batches: as given.
        kappa, beta: ``(start, end)`` pairs.
        batches: training batches seen so far.
        eps_history, kappa_history, beta_history: the values used at each training batch so far.
    """

    def __init__(self, eps: float, *, ramp_batches: int = 0, kappa: float | Sequence[float] = (1.0, 0.5),
                 beta: float | Sequence[float] = (1.0, 0.0)) -> None:
        super().__init__(eps, ramp_batches)
        self.kappa, self.beta = _schedule(kappa, "kappa"), _schedule(beta, "beta")
        self.kappa_history: list[float] = []
        self.beta_history: list[float] = []

    def kappa_at(self, batch: int) -> float:
        """The clean loss's weight at training batch ``batch``: ``kappa_start + (kappa_end - kappa_start) * p_t``."""
        return _between(self.kappa, self.progress(batch))

    def beta_at(self, batch: int) -> float:
        """The CROWN-IBP bound's weight at training batch ``batch``: ``beta_start + (beta_end - beta_start) * p_t``."""
        return _between(self.beta, self.progress(batch))

    def current_schedule(self) -> tuple[float, float, float]:
        """``(eps, kappa, beta)`` for the batch being computed; counts it when it is a training batch."""
        if not torch.is_grad_enabled():
            return self.eps, self.kappa[1], self.beta[1]
        t = self.batches
        eps = self.current_eps()
        kappa, beta = self.kappa_at(t), self.beta_at(t)
        self.kappa_history.append(kappa)
        self.beta_history.append(beta)
        return eps, kappa, beta

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The robust loss of the batch.

        Args:
            model: an ``nn.Sequential`` of Linear, Conv2d, ReLU and Flatten mapping x (N, ...) to (N, K).
            x: inputs (N, ...) in [0, 1].
            y: int64 labels (N,).

        Returns:
            ``(loss, logits)``: the scalar robust loss (differentiable in the model's parameters)
            and the clean (N, K) logits (accuracy is counted on clean inputs). A term of weight 0
            is not computed: ``kappa = 1`` is the clean loss alone, ``beta = 0`` skips CROWN.
        """
        eps, kappa, beta = self.current_schedule()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if kappa < 1:
            m, others = _mixed_margins(model, x, y, eps, beta, logits.shape[1])
            worst = torch.zeros_like(logits).scatter(1, others, -m)  # -m, 0 in the true class
            loss = kappa * loss + (1 - kappa) * F.cross_entropy(worst, y)
        return loss, logits

    def __repr__(self) -> str:
        return (f"CROWNIBPLoss(eps={self.eps:g}, ramp_batches={self.ramp_batches}, "
                f"kappa=({self.kappa[0]:g}, {self.kappa[1]:g}), beta=({self.beta[0]:g}, {self.beta[1]:g}))")


def crown_ibp_loss(eps: float, *, ramp_batches: int = 0, kappa: float | Sequence[float] = (1.0, 0.5),
                   beta: float | Sequence[float] = (1.0, 0.0)) -> CROWNIBPLoss:
    """The batch loss of CROWN-IBP training: ``train(model, loader, batch_loss=crown_ibp_loss(0.2, ramp_batches=200))``.

    Defaults, from the authors' PyTorch code (huanzhang12/CROWN-IBP; the paper's text is not what
    was read here): ``defaults.json`` sets ``"final-kappa": 0.5`` and ``"final-beta": 0.0``, and
    ``train.py`` ramps each from 1 to that final value as eps ramps up, so ``kappa = (1.0, 0.5)``
    and ``beta = (1.0, 0.0)``; the MNIST configurations of the large model
    (``config/mnist_dm-large_0.2.json``, ``..._0.4.json``) train with those (``"method":
    "robust_natural"``), while those of the small MNIST models (``config/mnist_crown.json``) use
    ``"method": "robust"``, the robust term alone, i.e. ``kappa = 0``. No default ramp length:
    the configurations give it in epochs (``schedule_length``), which depends on the data set.

    Args:
        eps: target L-inf radius, >= 0, in input units.
        ramp_batches: grow eps linearly from 0 over this many training batches (0: none); kappa
            and beta move from start to end over the same batches.
        kappa: weight of the clean cross-entropy, in [0, 1]: a pair ``(start, end)`` or one number (constant).
        beta: weight of the CROWN-IBP bound against the IBP bound, in [0, 1]: a pair or one number.

    Returns:
        A :class:`CROWNIBPLoss`; it counts training batches, so use a fresh one per training run.

    Raises:
        ValueError: for eps < 0, ramp_batches not an integer >= 0, or kappa or beta outside [0, 1].

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> loss_fn = crown_ibp_loss(0.2, ramp_batches=4)
        >>> for _ in range(3):
        ...     loss, logits = loss_fn(net, torch.rand(2, 1, 2, 2), torch.tensor([0, 2]))
        >>> loss_fn.eps_history, loss_fn.kappa_history, loss_fn.beta_history
        ([0.0, 0.05, 0.1], [1.0, 0.875, 0.75], [1.0, 0.75, 0.5])
    """
    return CROWNIBPLoss(eps, ramp_batches=ramp_batches, kappa=kappa, beta=beta)
