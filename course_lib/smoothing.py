"""Randomized smoothing (Cohen, Rosenfeld and Kolter 2019): Monte Carlo PREDICT and CERTIFY.

A base classifier ``f`` (any network mapping inputs to logits) defines the *smoothed*
classifier ``g(x) = argmax_c P(f(x + noise) = c)``, ``noise ~ N(0, sigma^2 I)``. If the top
class A has probability ``p_A`` and ``p_lower <= p_A`` with ``p_lower > 1/2``, then ``g``
predicts A on the whole L2 ball of radius ``sigma * Phi^-1(p_lower)`` around x (Cohen et
al., Theorem 1 in its binary form). The probabilities are estimated by sampling, so the
certificate holds with probability at least ``1 - alpha`` over the sampling.

Names (as in the course's style guide):

=================  ==============  ======================================================
math               code            meaning
=================  ==============  ======================================================
sigma              ``sigma``       standard deviation of the Gaussian noise, input units
eta                ``noise``       one noise sample, the shape of x
alpha              ``alpha``       failure probability of a certificate (not a step size)
underline{p_A}     ``p_lower``     one-sided Clopper-Pearson lower bound on p_A
n0, n              ``n0``, ``n``   selection and estimation sample counts
=================  ==============  ======================================================

Abstention is the class :data:`ABSTAIN` ``= -1``.

Speed: noise is drawn on the input's device into one reused buffer (on an accelerator, for
several batches per kernel launch), the base classifier runs on batches of ``batch_size``,
its argmax is counted on the device with a scatter-add, and the counts reach the host once
per call, so sampling costs little more than the base classifier's own forward passes
(``benchmarks/smoothing.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import scipy.stats
import torch
from torch import Tensor, nn

ABSTAIN = -1
"""The class returned when the smoothed classifier declines to answer."""

NOISE_CHUNK_ELEMENTS = 1 << 24
"""On an accelerator, noise for several batches is drawn at once, up to this many numbers (64 MB in float32)."""


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, Tensor) and value.ndim == 0 and not value.is_floating_point() and value.dtype != torch.bool:
        value = int(value)  # a count read off a tensor of counts, e.g. counts[c]
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    return float(alpha)


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower confidence bound on a binomial proportion.

    With ``k`` successes in ``n`` independent trials of success probability ``p``, the bound
    ``p_lower`` satisfies ``P(p_lower <= p) >= 1 - alpha`` for every ``p``. It is the
    ``alpha`` quantile of ``Beta(k, n - k + 1)``, and 0 when ``k == 0``. (Cohen et al. call
    ``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]``, the same number.)

    Args:
        k: successes, an integer in [0, n].
        n: trials, an integer >= 1.
        alpha: failure probability, in (0, 1).

    Returns:
        ``p_lower`` in [0, 1): 0 for k = 0, ``alpha ** (1 / n)`` for k = n.

    Raises:
        ValueError: if k, n are not integers with 0 <= k <= n, n >= 1, or alpha is not in (0, 1).
    """
    n = _check_int(n, "n", 1)
    k = _check_int(k, "k", 0)
    if k > n:
        raise ValueError(f"k must be at most n={n}, got k={k}")
    alpha = _check_alpha(alpha)
    if k == 0:
        return 0.0
    # the exact bound is < 1, but with alpha near 1 and k = n it can round to 1.0: the largest
    # float below 1 is then the (still valid, lower) bound
    return min(float(scipy.stats.beta.ppf(alpha, k, n - k + 1)), math.nextafter(1.0, 0.0))


def certified_radius(p_lower: float, sigma: float) -> float:
    """The L2 radius ``sigma * Phi^-1(p_lower)`` certified by ``p_lower > 1/2``; 0 otherwise.

    Args:
        p_lower: a lower bound on the top class's probability under noise, in [0, 1).
        sigma: the noise standard deviation, > 0.

    Returns:
        The radius, in the units of x; 0.0 when ``p_lower <= 1/2`` (nothing is certified).

    Raises:
        ValueError: if p_lower is not in [0, 1) or sigma is not > 0.
    """
    if isinstance(p_lower, bool) or not isinstance(p_lower, Real) or not 0 <= p_lower < 1:
        raise ValueError(f"p_lower must be a number in [0, 1), got {p_lower!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, Real) or not 0 < sigma < math.inf:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if p_lower <= 0.5:
        return 0.0
    return float(sigma * scipy.stats.norm.ppf(p_lower))


class Smooth:
    """The smoothed classifier ``g(x) = argmax_c P(f(x + noise) = c)``, noise ``~ N(0, sigma^2 I)``.

    Args:
        base_classifier: ``f``, maps a batch (B, *input_shape) to logits (B, num_classes).
            It is run in eval mode under ``torch.no_grad()``; its train/eval mode is restored.
        num_classes: K >= 2, the number of logits.
        sigma: noise standard deviation > 0, in input units (pixels in [0, 1]: 0.25 = a
            quarter of the range). The noise is not clipped to [0, 1] (as in Cohen et al.):
            the theorem is about Gaussian noise, and clipping would change its distribution.
        input_shape: optional shape of ONE input, e.g. (1, 28, 28); when given, ``predict`` and
            ``certify`` reject any other shape (such as a batch (1, 1, 28, 28)). Without it, a
            batch dimension is caught only when the base classifier cannot take it.

    Methods take one input ``x`` of shape ``input_shape`` (any shape the base classifier
    accepts with a batch dimension in front, e.g. (C, H, W)), or a batch ``xs`` (N, *input_shape)
    for :meth:`certify_batch`. Noise is drawn on x's device in x's dtype, from ``generator``
    (a ``torch.Generator`` on that device) when one is given, else from PyTorch's global one.
    """

    def __init__(self, base_classifier: nn.Module, num_classes: int, sigma: float, *,
                 input_shape: Sequence[int] | None = None) -> None:
        if not callable(base_classifier):
            raise TypeError(f"base_classifier must be callable on a batch, got {type(base_classifier).__name__}")
        self.base_classifier = base_classifier
        self.num_classes = _check_int(num_classes, "num_classes", 2)
        if isinstance(sigma, bool) or not isinstance(sigma, Real) or not 0 < sigma < math.inf:
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        self.sigma = float(sigma)
        if input_shape is not None:
            input_shape = tuple(input_shape)
            if not all(isinstance(s, Integral) and s > 0 for s in input_shape):
                raise ValueError(f"input_shape must hold positive integers, got {input_shape!r}")
        self.input_shape = input_shape

    def __repr__(self) -> str:
        return f"Smooth(num_classes={self.num_classes}, sigma={self.sigma:g})"

    # -- checks --------------------------------------------------------------------------

    def _check_x(self, x: object, name: str, batched: bool) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating point tensor, got dtype {x.dtype}")
        one = tuple(x.shape[1:]) if batched else tuple(x.shape)
        if batched and x.ndim < 2:
            raise ValueError(f"{name} must be a batch (N, *input_shape), got shape {tuple(x.shape)}")
        if self.input_shape is not None and one != self.input_shape:
            what = "(N, *input_shape)" if batched else "one input of shape input_shape, without a batch dimension"
            raise ValueError(f"{name} must be {what}, input_shape={self.input_shape}; got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} must be finite, got nan or inf values")
        return x.detach()

    @staticmethod
    def _check_generator(generator: torch.Generator | None, x: Tensor) -> None:
        if generator is None:
            return
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != x.device.type:
            raise ValueError(f"generator must live on x's device ({x.device}), got one on {generator.device}")

    # -- sampling ------------------------------------------------------------------------

    def _sample_counts(self, xs: Tensor, num: int, batch_size: int,
                       generator: torch.Generator | None) -> Tensor:
        """How often f predicts each class on ``num`` noisy copies of each input.

        Args:
            xs: inputs (N, *input_shape).
            num: noise samples per input, >= 1.
            batch_size: noisy inputs per forward pass, >= 1.
            generator: seeds the noise; on xs's device.

        Returns:
            counts: int64 (N, num_classes) on xs's device, rows summing to ``num``.
        """
        n_inputs, shape = xs.shape[0], tuple(xs.shape[1:])
        k, device = self.num_classes, xs.device
        counts = torch.zeros((n_inputs, k), dtype=torch.int64, device=device)
        size = min(batch_size, n_inputs * num)
        per_input = num >= size or n_inputs == 1  # else a batch spans several inputs
        # the noise of several batches is drawn at once on an accelerator, where a tiny network's
        # forward pass costs about as much as launching a kernel; on a CPU one batch at a time
        group = 1
        if device.type != "cpu":
            group = max(1, min(math.ceil((num if per_input else n_inputs * num) / size),
                               NOISE_CHUNK_ELEMENTS // max(1, size * math.prod(shape))))
        chunk = group * size
        buffer = torch.empty((chunk, *shape), dtype=xs.dtype, device=device)  # reused: no allocation per batch
        preds = torch.empty(chunk, dtype=torch.int64, device=device)
        ones = torch.ones(chunk, dtype=torch.int64, device=device)
        model = self.base_classifier
        was_training = getattr(model, "training", None)
        if isinstance(model, nn.Module):
            model.eval()

        # argmax puts every nan row in class 0: a diverged model would get a confident vote. Checked
        # on the device, read once at the end (no synchronization per batch on an accelerator)
        nan_seen = torch.zeros((), dtype=torch.bool, device=device)

        def vote(m: int) -> Tensor:
            """f's classes on the first m noisy inputs of the buffer, in batches of ``size``."""
            for s in range(0, m, size):
                b = min(size, m - s)
                logits = self._forward(buffer[s:s + b], xs)
                nan_seen.logical_or_(torch.isnan(logits).any())
                torch.argmax(logits, 1, out=preds[s:s + b])
            return preds[:m]

        try:
            with torch.no_grad():
                if per_input:
                    for i in range(n_inputs):
                        for start in range(0, num, chunk):
                            m = min(chunk, num - start)
                            buffer[:m].normal_(0.0, self.sigma, generator=generator).add_(xs[i])
                            # index_add_ rather than bincount: on CUDA bincount reads max() back to the host
                            counts[i].index_add_(0, vote(m), ones[:m])
                else:  # few samples per input: the buffer runs over (input, sample) pairs in order
                    flat = counts.view(-1)
                    for start in range(0, n_inputs * num, chunk):
                        m = min(chunk, n_inputs * num - start)
                        owner = torch.arange(start, start + m, device=device) // num
                        buffer[:m].normal_(0.0, self.sigma, generator=generator).add_(xs.index_select(0, owner))
                        flat.index_add_(0, owner * k + vote(m), ones[:m])
        finally:
            if isinstance(model, nn.Module) and was_training:
                model.train()
        if nan_seen:
            raise ValueError("the base classifier returned nan logits on noisy inputs (a diverged model?): "
                             "its votes, and any prediction or certificate from them, would be meaningless")
        return counts

    def _forward(self, noisy: Tensor, xs: Tensor) -> Tensor:
        try:
            logits = self.base_classifier(noisy)
        except RuntimeError as err:
            raise ValueError(f"the base classifier failed on noisy inputs of shape {tuple(noisy.shape)} and dtype "
                             f"{noisy.dtype} (inputs of shape {tuple(xs.shape[1:])} with a batch in front): {err}. "
                             "Check x's dtype and device against the model's; predict/certify take ONE input, "
                             "certify_batch a batch") from err
        if not isinstance(logits, Tensor) or logits.shape != (noisy.shape[0], self.num_classes):
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"the base classifier must return logits ({noisy.shape[0]}, num_classes="
                             f"{self.num_classes}) for a batch of {noisy.shape[0]} inputs of shape "
                             f"{tuple(xs.shape[1:])}, got {got}; did x carry a batch dimension?")
        return logits

    def sample_counts(self, x: Tensor, num: int, batch_size: int, *,
                      generator: torch.Generator | None = None) -> Tensor:
        """Class counts of the base classifier on ``num`` noisy copies ``x + noise`` of one input.

        Args:
            x: one input (*input_shape), e.g. (C, H, W); floating point.
            num: number of noise samples, >= 1.
            batch_size: noisy inputs per forward pass, >= 1.
            generator: seeds the noise; a ``torch.Generator`` on x's device.

        Returns:
            int64 (num_classes,) on x's device, summing to ``num``.
        """
        x = self._check_x(x, "x", batched=False)
        num = _check_int(num, "num", 1)
        batch_size = _check_int(batch_size, "batch_size", 1)
        self._check_generator(generator, x)
        return self._sample_counts(x.unsqueeze(0), num, batch_size, generator)[0]

    # -- PREDICT and CERTIFY -------------------------------------------------------------

    def predict(self, x: Tensor, n: int, alpha: float, batch_size: int, *,
                generator: torch.Generator | None = None) -> int:
        """Monte Carlo PREDICT: g(x), or abstain when the top two classes are too close to call.

        Counts f's predictions on ``n`` noisy copies of x; with ``n_A``, ``n_B`` the two largest
        counts, returns the top class when the two-sided binomial test of ``n_A`` successes in
        ``n_A + n_B`` trials against ``p = 1/2`` has p-value ``<= alpha``, else :data:`ABSTAIN`.
        The answer differs from g(x) (a wrong class, not an abstention) with probability at
        most ``alpha`` (Hung et al. 2019, as corrected in Cohen et al.).

        Args:
            x: one input (*input_shape), e.g. (C, H, W); no batch dimension.
            n: noise samples, >= 1.
            alpha: failure probability in (0, 1).
            batch_size: noisy inputs per forward pass, >= 1.
            generator: seeds the noise; on x's device.

        Returns:
            A class index in [0, num_classes), or ``ABSTAIN`` (-1).

        Raises:
            ValueError: for bad arguments or an x the base classifier cannot take with a batch in front.
        """
        x = self._check_x(x, "x", batched=False)
        n = _check_int(n, "n", 1)
        alpha = _check_alpha(alpha)
        batch_size = _check_int(batch_size, "batch_size", 1)
        self._check_generator(generator, x)
        counts = self._sample_counts(x.unsqueeze(0), n, batch_size, generator)[0].cpu()
        top2 = torch.topk(counts, 2)
        n_a, n_b = int(top2.values[0]), int(top2.values[1])
        if scipy.stats.binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2.indices[0])

    def certify(self, x: Tensor, n0: int, n: int, alpha: float, batch_size: int, *,
                generator: torch.Generator | None = None) -> tuple[int, float]:
        """Monte Carlo CERTIFY: a class and an L2 radius on which g is certified to predict it.

        ``n0`` selection samples pick ``c_A``, the most frequent class; ``n`` fresh estimation
        samples count ``n_A`` hits of ``c_A``; ``p_lower = lower_confidence_bound(n_A, n, alpha)``.
        If ``p_lower < 1/2`` it abstains, else it returns ``(c_A, sigma * Phi^-1(p_lower))``.
        With probability at least ``1 - alpha`` over the noise, a returned class is g's
        prediction at every x' with ``||x' - x||_2 < radius``. The largest radius ``n``
        samples can certify is ``sigma * Phi^-1(alpha ** (1 / n))``.

        Args:
            x: one input (*input_shape), e.g. (C, H, W); no batch dimension.
            n0: selection samples, >= 1 (Cohen et al.: 100).
            n: estimation samples, >= 1 (Cohen et al.: 100,000).
            alpha: failure probability in (0, 1) (Cohen et al.: 0.001).
            batch_size: noisy inputs per forward pass, >= 1.
            generator: seeds the noise; on x's device.

        Returns:
            ``(class, radius)``: ``(c_A, radius > 0)`` or ``(ABSTAIN, 0.0)``; Python int and float.

        Raises:
            ValueError: for bad arguments or an x the base classifier cannot take with a batch in front.
        """
        x = self._check_x(x, "x", batched=False)
        classes, radii = self._certify(x.unsqueeze(0), n0, n, alpha, batch_size, generator)
        return classes[0], radii[0]

    def certify_batch(self, xs: Tensor, n0: int, n: int, alpha: float, batch_size: int, *,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`certify` for each of N inputs, with forward passes shared across inputs.

        Each input gets its own ``n0`` selection and ``n`` estimation samples, as in
        :meth:`certify`, so each certificate fails with probability at most ``alpha``;
        when ``n0`` or ``n`` is below ``batch_size``, one forward pass holds the samples of
        several inputs, which keeps the device busy. For one input (N = 1) it draws the same
        noise as :meth:`certify`.

        Args:
            xs: inputs (N, *input_shape).
            n0, n, alpha, batch_size, generator: as in :meth:`certify`.

        Returns:
            ``(classes, radii)``: int64 (N,) with ``ABSTAIN`` for abstentions, and float64
            (N,) radii (0 where abstaining), both on xs's device.
        """
        xs = self._check_x(xs, "xs", batched=True)
        classes, radii = self._certify(xs, n0, n, alpha, batch_size, generator)
        return (torch.tensor(classes, dtype=torch.int64, device=xs.device),
                torch.tensor(radii, dtype=torch.float64, device=xs.device))

    def _certify(self, xs: Tensor, n0: int, n: int, alpha: float, batch_size: int,
                 generator: torch.Generator | None) -> tuple[list[int], list[float]]:
        n0 = _check_int(n0, "n0", 1)
        n = _check_int(n, "n", 1)
        alpha = _check_alpha(alpha)
        batch_size = _check_int(batch_size, "batch_size", 1)
        self._check_generator(generator, xs)
        selection = self._sample_counts(xs, n0, batch_size, generator)
        c_a = selection.argmax(1)  # the first class among ties
        estimation = self._sample_counts(xs, n, batch_size, generator)
        n_a = estimation.gather(1, c_a[:, None])[:, 0]
        classes, radii = [], []
        for c, k in torch.stack([c_a, n_a], 1).tolist():  # one host transfer for the whole batch
            p_lower = lower_confidence_bound(k, n, alpha)
            if p_lower <= 0.5:  # CERTIFY returns c_A only when p_lower > 1/2 (a radius > 0)
                classes.append(ABSTAIN)
                radii.append(0.0)
            else:
                classes.append(c)
                radii.append(certified_radius(p_lower, self.sigma))
        return classes, radii
