"""Defences that mask gradients, and the tools that see through them (lecture 8).

A defence *masks* gradients when it makes a gradient-based attack fail without making the
model robust: the attack's gradient is zero, useless or random, while a point of the ball that
the model gets wrong is still there to be found (Papernot et al. 2017; Athalye, Carlini and
Wagner 2018 call the three kinds *shattered*, *stochastic* and *vanishing/exploding* gradients).
This module holds one defence of each kind, all wrapping a trained model as an ``nn.Module``:

======================= ================================================= ==========================
defence                 what it does                                      masked how
======================= ================================================= ==========================
:class:`QuantizedInput`  rounds every pixel to one of ``levels`` values     shattered: the gradient
                         before the model                                   of rounding is 0
:class:`ScaledLogits`    divides the logits by a tiny ``temperature``       vanishing: the float32
                                                                            softmax saturates
:class:`RandomNoiseInput` adds fresh Gaussian noise to every input           stochastic: each
                                                                            gradient is one draw's
======================= ================================================= ==========================

and the two tools of Athalye et al. that break them:

* :func:`bpda` (Backward Pass Differentiable Approximation): run the defence's preprocessing
  ``g`` forward, but differentiate as if it were the identity (``g(x) ~ x``), so the gradient is
  the model's own gradient at the preprocessed point, ``grad f(g(x))``;
* :func:`eot` (Expectation over Transformation): average the logits over ``num_samples`` draws of
  the defence's randomness, so that an attack follows the gradient of the expected logits,
  ``E_t grad f(t(x))``, instead of one draw's.

(A saturated softmax needs neither: a loss on the logits, such as the margin or DLR loss of
:mod:`course_lib.attacks`, is unaffected by it.) Each defence predicts what its base model
predicts on the preprocessed input; :class:`ScaledLogits` predicts exactly what the base model
does. Inputs are images (N, C, H, W) or any batch (N, ...) with values in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from course_lib import _checks

__all__ = ["Preprocessed", "QuantizedInput", "RandomNoiseInput", "ScaledLogits", "bpda", "eot", "quantize"]


def quantize(x: Tensor, levels: int) -> Tensor:
    """Round every value of x in [0, 1] to the nearest of ``levels`` evenly spaced values.

    ``round(x * (levels - 1)) / (levels - 1)``: for ``levels = 2`` a threshold at 0.5
    (binarization), for ``levels = 256`` the 8-bit grid. Ties round to even (``torch.round``).

    Args:
        x: any tensor, values in [0, 1].
        levels: number of grey levels >= 2.

    Returns:
        A tensor of x's shape, dtype and device, with values in ``{0, 1/(levels-1), ..., 1}``.
        Its autograd gradient is 0 everywhere (``torch.round``'s derivative), which is the point.

    Examples:
        >>> quantize(torch.tensor([0.0, 0.2, 0.26, 0.5, 0.9]), 5)
        tensor([0.0000, 0.2500, 0.2500, 0.5000, 1.0000])
    """
    levels = _checks.integer(levels, "levels", ge=2)
    return torch.round(x * (levels - 1)) / (levels - 1)


class Preprocessed(nn.Module):
    """A defence of the form ``model(preprocess(x))``: the base of the input-transforming defences.

    Subclasses implement :meth:`preprocess`; :func:`bpda` replaces its backward pass by the
    identity's, and :func:`eot` averages over its randomness.

    Attributes:
        model: the base classifier, inputs (N, ...) to logits (N, K); a registered submodule,
            so ``.eval()`` and ``.to(device)`` reach it.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be a callable nn.Module, got {type(model).__name__}")
        self.model = model

    def preprocess(self, x: Tensor) -> Tensor:
        """The input transformation g(x), shape of x (subclasses)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``model(preprocess(x))``, shape (N, K)."""
        return self.model(self.preprocess(x))


class QuantizedInput(Preprocessed):
    """Input quantization (as in bit-depth reduction, Xu et al. 2018): ``model(quantize(x, levels))``.

    Rounding is piecewise constant, so the gradient of anything computed from its output is
    exactly 0 with respect to x: a gradient attack sees a flat loss and does not move
    (sign(0) = 0). The quantizer removes perturbations smaller than half a level
    ``1 / (2 (levels - 1))`` per pixel and no others: an attack of radius above that can still
    move a pixel to another level, and :func:`bpda` finds which.

    Args:
        model: the base classifier (N, C, H, W) -> (N, K).
        levels: grey levels kept, >= 2.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> defended = QuantizedInput(net, levels=4)
        >>> x = torch.rand(2, 1, 2, 2, requires_grad=True)
        >>> (grad,) = torch.autograd.grad(defended(x).sum(), x)
        >>> bool((grad == 0).all())
        True
    """

    def __init__(self, model: nn.Module, levels: int = 4) -> None:
        super().__init__(model)
        self.levels = _checks.integer(levels, "levels", ge=2)

    def preprocess(self, x: Tensor) -> Tensor:
        """``quantize(x, levels)``, shape of x."""
        return quantize(x, self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


class RandomNoiseInput(Preprocessed):
    """A randomized defence: ``model(x + sigma * noise)``, fresh Gaussian noise at every call.

    Each forward pass draws new noise (from ``generator``), so the defended classifier is a
    random function and each gradient an attack takes is the gradient for one draw. The noise
    is not clipped to [0, 1], so the transformation is differentiable everywhere and :func:`eot`
    alone averages it away.

    Args:
        model: the base classifier (N, ...) -> (N, K).
        sigma: the noise's standard deviation > 0, in input units.
        generator: draws the noise (on the generator's device); default the global RNG.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> noisy = RandomNoiseInput(net, sigma=0.5, generator=torch.Generator().manual_seed(0))
        >>> x = torch.rand(2, 1, 2, 2)
        >>> bool(torch.equal(noisy(x), noisy(x)))  # two calls, two draws
        False
    """

    def __init__(self, model: nn.Module, sigma: float, *, generator: torch.Generator | None = None) -> None:
        super().__init__(model)
        self.sigma = _checks.number(sigma, "sigma", gt=0)
        self.generator = _checks.optional_generator(generator)

    def preprocess(self, x: Tensor) -> Tensor:
        """``x + sigma * noise``, noise ~ N(0, I) drawn anew, shape of x."""
        device = self.generator.device if self.generator is not None else x.device
        noise = torch.randn(x.shape, generator=self.generator, device=device, dtype=x.dtype).to(x.device)
        return x + self.sigma * noise

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}"


class ScaledLogits(nn.Module):
    """A saturated softmax: logits ``model(x) / temperature`` with a tiny temperature.

    The predictions are the base model's (dividing by T > 0 keeps the argmax), so the defence
    changes nothing a user sees; but the logit margins grow by 1/T. The cross-entropy's
    gradient with respect to the logits is ``softmax(z) - onehot(y)``, and in float32 every
    ``softmax(z)_j = exp(z_j - z_y) / ...`` of a wrong class underflows to exactly 0 once the
    margin ``z_y - z_j`` passes about 104 (float32's smallest number is ``2**-149``, ``e**-103.3``).
    With T = 1e-3 that is a margin of 0.104 in the base model's units: on every confidently
    classified input the cross-entropy's input gradient is exactly 0 and PGD on it does not
    move. (Defensive distillation, Papernot et al. 2016, masks gradients the same way; Carlini
    and Wagner 2016 broke it with a loss on the logits.)

    Args:
        model: the base classifier (N, ...) -> (N, K).
        temperature: T > 0; the logits are divided by it.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x = torch.rand(5, 1, 2, 2)
        >>> bool(torch.equal(ScaledLogits(net, 1e-3)(x).argmax(1), net(x).argmax(1)))
        True
    """

    def __init__(self, model: nn.Module, temperature: float = 1e-3) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be a callable nn.Module, got {type(model).__name__}")
        self.model = model
        self.temperature = _checks.number(temperature, "temperature", gt=0)

    def forward(self, x: Tensor) -> Tensor:
        """The base model's logits divided by the temperature, shape (N, K)."""
        return self.model(x) / self.temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"


class _StraightThrough(torch.autograd.Function):
    """Forward: the preprocessed value g(x), exactly. Backward: the identity's Jacobian."""

    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor) -> Tensor:  # noqa: ARG004 (x only routes the gradient)
        return value.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class BPDA(nn.Module):
    """A :class:`Preprocessed` defence whose preprocessing is differentiated as the identity.

    The forward pass is the defence's own: ``model(g(x))``, value for value. The backward pass
    treats ``g`` as ``g(x) ~ x``, so ``d/dx loss(model(g(x)))`` becomes ``(grad loss o model)(g(x))``:
    the base model's gradient, taken at the preprocessed point (Athalye et al. 2018).
    Build it with :func:`bpda`.
    """

    def __init__(self, defence: Preprocessed) -> None:
        super().__init__()
        self.defence = defence

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``model(g(x))`` (N, K); the gradient with respect to x skips g."""
        with torch.no_grad():
            value = self.defence.preprocess(x)
        return self.defence.model(_StraightThrough.apply(x, value))


def bpda(defence: Preprocessed) -> BPDA:
    """The defence with the straight-through (identity) backward pass for its preprocessing.

    Athalye, Carlini and Wagner (2018): when ``g`` is not differentiable but ``g(x) ~ x`` (a
    quantizer, a denoiser), attack ``f o g`` with the gradient ``grad f`` evaluated at ``g(x)``.
    Any attack of :mod:`course_lib.attacks` can then run on the result unchanged.

    Args:
        defence: a :class:`Preprocessed` defence (:class:`QuantizedInput`, :class:`RandomNoiseInput`,
            or your own subclass).

    Returns:
        A :class:`BPDA` module: the same logits as ``defence`` (the same draw, for a random
        one), a gradient that is the base model's at ``g(x)``.

    Raises:
        TypeError: if ``defence`` is not a :class:`Preprocessed`.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> defended = QuantizedInput(net, levels=4)
        >>> x = torch.rand(2, 1, 2, 2, requires_grad=True)
        >>> (grad,) = torch.autograd.grad(bpda(defended)(x)[:, 0].sum(), x)
        >>> torch.allclose(grad.flatten(1), net[1].weight[0].expand(2, 4))  # a linear model's gradient
        True
    """
    if not isinstance(defence, Preprocessed):
        raise TypeError(f"defence must be a Preprocessed defence (model(g(x))), got {type(defence).__name__}")
    return BPDA(defence)


class EOT(nn.Module):
    """The logits of a random classifier, averaged over ``num_samples`` independent draws.

    ``forward(x) = (1/S) sum_s model(x)`` with the draws made in one batched call on S copies
    of x; since the average is linear, its gradient is the average of the S draws' gradients.
    Build it with :func:`eot`.
    """

    def __init__(self, model: nn.Module, num_samples: int) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be a callable nn.Module, got {type(model).__name__}")
        self.model = model
        self.num_samples = _checks.integer(num_samples, "num_samples", ge=1)

    def forward(self, x: Tensor) -> Tensor:
        """Mean logits over ``num_samples`` draws, shape (N, K)."""
        n = x.shape[0]
        copies = x.repeat(self.num_samples, *([1] * (x.ndim - 1)))  # draw s of example i at row s * n + i
        logits = self.model(copies)
        return logits.view(self.num_samples, n, *logits.shape[1:]).mean(0)

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}"


def eot(model: nn.Module, num_samples: int) -> EOT:
    """Expectation over Transformation: average a random model's logits over its draws.

    Athalye, Carlini and Wagner (2018): against a randomized defence ``f(t(x))``,
    ``t`` random, attack ``E_t f(t(x))``, whose gradient ``E_t grad f(t(x))`` the average over
    ``num_samples`` draws estimates without bias (its variance falls like 1 / num_samples).
    We average the logits, not the loss: then every attack of :mod:`course_lib.attacks` runs
    unchanged on the result. For a loss linear in the logits the two agree; for the margin or
    the cross-entropy, both convex in the logits, the loss of the average is at most the average
    loss. Compose with :func:`bpda` for a random, non-differentiable defence:
    ``eot(bpda(defence), 16)``.

    Args:
        model: a random classifier (N, ...) -> (N, K), e.g. :class:`RandomNoiseInput`; a
            deterministic one gives back its own logits.
        num_samples: draws per call, >= 1 (one batched call of num_samples * N inputs).

    Returns:
        An :class:`EOT` module.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x = torch.rand(2, 1, 2, 2)
        >>> torch.allclose(eot(net, 8)(x), net(x), atol=1e-6)  # no randomness: the same logits
        True
    """
    return EOT(model, num_samples)
