"""Randomized smoothing (Cohen, Rosenfeld and Kolter 2019): Monte Carlo PREDICT and CERTIFY.

A base classifier ``f`` (any network mapping inputs to logits) defines the *smoothed*
classifier ``g(x) = argmax_c P(f(x + noise) = c)``, ``noise ~ N(0, sigma^2 I)``. If the top
class A has probability ``p_A`` and ``p_lower <= p_A`` with ``p_lower > 1/2``, then ``g``
predicts A on the whole L2 ball of radius ``sigma * Phi^-1(p_lower)`` around x (Cohen et
al., Theorem 1 in its binary form). The probabilities are estimated by sampling, so the
certificate holds with probability at least ``1 - alpha`` over the sampling.

Names (lecture 5's notation and the code's):

=================  ==============  ======================================================
math               code            meaning
=================  ==============  ======================================================
sigma              ``sigma``       standard deviation of the Gaussian noise, input units
eta                ``noise``       one noise sample, the shape of x
alpha              ``alpha``       failure probability of a certificate (not a step size)
underline{p_A}     ``p_lower``     one-sided Clopper-Pearson lower bound on p_A
n0, n              ``n0``, ``n``   selection and estimation sample counts
=================  ==============  ======================================================

Abstention is the class :data:`ABSTAIN` ``= -1``. :meth:`Smooth.predict` and :meth:`Smooth.certify`
follow Cohen et al.'s pseudocode; all the sampling is in one helper, ``Smooth._sample_noise``.

Speed: noise is drawn on the input's device into one reused buffer (on an accelerator, for
several batches per kernel launch), the base classifier runs on batches of ``batch_size``,
its argmax is counted on the device with a scatter-add, and the counts reach the host once
per call, so sampling costs little more than the base classifier's own forward passes
(``benchmarks/certify.py``).
The computations behind lecture 5's pictures are in :mod:`course_lib.smoothing_2d`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.stats
import torch
from torch import Tensor, nn

from course_lib import _checks
from course_lib.models import evaluating

ABSTAIN = -1
"""The class returned when the smoothed classifier declines to answer."""

NOISE_CHUNK_ELEMENTS = 1 << 24
"""On an accelerator, noise for several batches is drawn at once, up to this many numbers (64 MB in float32)."""


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower confidence bound on a binomial proportion.

    With ``k`` successes in ``n`` independent trials of success probability ``p``, the bound
    ``p_lower`` satisfies ``P(p_lower <= p) >= 1 - alpha`` for every ``p``. It is the
    ``alpha`` quantile of ``Beta(k, n - k + 1)``, and 0 when ``k == 0``. (Cohen et al. call
    ``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]``, the same number.)

    Args:
        k: successes, an integer in [0, n]; a 0-d integer tensor such as ``counts[c]`` too.
        n: trials, an integer >= 1.
        alpha: failure probability, in (0, 1).

    Returns:
        ``p_lower`` in [0, 1): 0 for k = 0, ``alpha ** (1 / n)`` for k = n.

    Raises:
        ArgumentError (a ValueError): if k, n are not integers with 0 <= k <= n, n >= 1, or
            alpha is not in (0, 1).

    Examples:
        >>> round(lower_confidence_bound(990, 1000, 0.001), 4)  # 99% of 1000 samples hit
        0.976
        >>> lower_confidence_bound(10, 10, 0.001) == 0.001 ** (1 / 10)
        True
    """
    n = _checks.integer(n, "n", ge=1)
    k = _checks.integer(k, "k", ge=0, le=n)
    alpha = _checks.probability(alpha, "alpha")
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
        ArgumentError (a ValueError): if p_lower is not in [0, 1) or sigma is not > 0.

    Examples:
        >>> round(certified_radius(0.99, sigma=0.5), 4)  # 0.5 * Phi^-1(0.99)
        1.1632
        >>> certified_radius(0.5, sigma=0.5)
        0.0
    """
    p_lower = _checks.number(p_lower, "p_lower", ge=0, lt=1)
    sigma = _checks.number(sigma, "sigma", gt=0)
    if p_lower <= 0.5:
        return 0.0
    return float(sigma * scipy.stats.norm.ppf(p_lower))


def certified_accuracy_at(classes: Tensor, radii: Tensor, labels: Tensor,
                          radius: float | Sequence[float]) -> float | list[float]:
    """Certified accuracy at radius r: the share of inputs certified for their label with radius >= r.

    The curve of Cohen et al.'s figures: an input counts at r when CERTIFY returned its
    true label (not ``ABSTAIN``, not another class) with a radius of at least r.

    Args:
        classes: int64 (N,), the certified classes (``ABSTAIN`` where it abstained), as
            :meth:`Smooth.certify_batch` returns them.
        radii: (N,), the certified radii.
        labels: int64 (N,), the true labels.
        radius: one radius r >= 0, or a sequence (a list, a 1-D array or tensor) of them.

    Returns:
        A float in [0, 1] for one radius; a list of them, one per radius, for a sequence.

    Raises:
        ArgumentError (a ValueError): for tensors of other shapes or a negative radius.

    Examples:
        >>> classes, radii = torch.tensor([3, ABSTAIN, 1, 7]), torch.tensor([0.4, 0.0, 0.9, 1.2])
        >>> certified_accuracy_at(classes, radii, torch.tensor([3, 3, 1, 2]), [0.0, 0.5, 1.0])
        [0.5, 0.25, 0.0]
    """
    for name, t in (("classes", classes), ("radii", radii), ("labels", labels)):
        if not isinstance(t, Tensor) or t.ndim != 1 or t.shape != classes.shape:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise _checks.fail(name, f"a 1-D tensor with one entry per input, like classes {tuple(classes.shape)}",
                               shape)
    correct = classes == labels  # an abstention (-1) is never a label
    one = isinstance(radius, str) or not isinstance(radius, (Sequence, Tensor, np.ndarray)) or getattr(radius, "ndim", 1) == 0
    grid = [radius] if one else list(radius)
    accuracy = [float((correct & (radii >= _checks.number(r, "radius", ge=0))).double().mean()) for r in grid]
    return accuracy[0] if one else accuracy


def _sample_sizes(**counts: object) -> tuple[int, ...]:
    """Each named count (n0, n, batch_size, ...) as an int >= 1, in the order given."""
    return tuple(_checks.integer(v, name, ge=1) for name, v in counts.items())


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

    Examples:
        >>> f = lambda z: torch.stack([-z[:, 0], z[:, 0]], 1)  # class 1 where z_0 > 0
        >>> smooth = Smooth(f, num_classes=2, sigma=0.5)
        >>> x = torch.tensor([1.0, 0.0])  # at L2 distance 1 from f's boundary
        >>> c, r = smooth.certify(x, n0=100, n=1000, alpha=0.001, batch_size=500,
        ...                       generator=torch.Generator().manual_seed(0))
        >>> c, 0.8 < r <= 1.0  # g is a half-plane too: its exact radius is 1
        (1, True)
        >>> smooth.predict(x, n=1000, alpha=0.001, batch_size=500)
        1
    """

    def __init__(self, base_classifier: nn.Module, num_classes: int, sigma: float, *,
                 input_shape: Sequence[int] | None = None) -> None:
        if not callable(base_classifier):
            raise TypeError(f"base_classifier must be callable on a batch, got {type(base_classifier).__name__}")
        self.base_classifier = base_classifier
        self.num_classes = _checks.integer(num_classes, "num_classes", ge=2)
        self.sigma = _checks.number(sigma, "sigma", gt=0)
        if input_shape is not None:
            try:
                input_shape = tuple(_checks.integer(s, "input_shape", ge=1) for s in input_shape)
            except (TypeError, ValueError):
                raise _checks.fail("input_shape", "a sequence of positive integers", input_shape) from None
        self.input_shape = input_shape

    def __repr__(self) -> str:
        return f"Smooth(num_classes={self.num_classes}, sigma={self.sigma:g})"

    # -- PREDICT and CERTIFY (Cohen et al., section 3.2) ---------------------------------

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
        n, batch_size = _sample_sizes(n=n, batch_size=batch_size)
        alpha = _checks.probability(alpha, "alpha")
        self._check_generator(generator, x)
        counts = self._sample_noise(x[None], n, batch_size, generator)[0].cpu()
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
        Unless ``p_lower > 1/2`` it abstains, else it returns ``(c_A, sigma * Phi^-1(p_lower))``.
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
        n0, n, alpha, batch_size = self._check_certify_args(n0, n, alpha, batch_size, generator, x)
        counts0 = self._sample_noise(x[None], n0, batch_size, generator)[0]  # n0 selection samples
        c_a = int(counts0.argmax())  # the guess at the top class (the first among ties)
        counts = self._sample_noise(x[None], n, batch_size, generator)[0]  # n fresh estimation samples
        p_lower = lower_confidence_bound(counts[c_a], n, alpha)
        # Cohen et al. abstain if p_lower < 1/2; at p_lower = 1/2 the radius would be 0, so we abstain too
        if p_lower <= 0.5:
            return ABSTAIN, 0.0
        return c_a, certified_radius(p_lower, self.sigma)  # sigma * Phi^-1(p_lower)

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

        Examples:
            >>> smooth = Smooth(lambda z: torch.stack([-z[:, 0], z[:, 0]], 1), 2, sigma=0.5)
            >>> classes, radii = smooth.certify_batch(torch.tensor([[2.0, 0.0], [-2.0, 1.0], [0.0, 0.0]]),
            ...                                       n0=100, n=1000, alpha=0.001, batch_size=1000)
            >>> classes.tolist()  # the last point lies on f's boundary: p_A = 1/2
            [1, 0, -1]
        """
        xs = self._check_x(xs, "xs", batched=True)
        n0, n, alpha, batch_size = self._check_certify_args(n0, n, alpha, batch_size, generator, xs)
        counts0 = self._sample_noise(xs, n0, batch_size, generator)  # (N, K) selection counts
        c_a = counts0.argmax(1)
        counts = self._sample_noise(xs, n, batch_size, generator)  # (N, K) estimation counts
        n_a = counts.gather(1, c_a[:, None])[:, 0]
        classes, radii = [], []
        for c, k in torch.stack([c_a, n_a], 1).tolist():  # one host transfer for the whole batch
            p_lower = lower_confidence_bound(k, n, alpha)
            classes.append(c if p_lower > 0.5 else ABSTAIN)
            radii.append(certified_radius(p_lower, self.sigma))  # 0.0 where p_lower <= 1/2
        return (torch.tensor(classes, dtype=torch.int64, device=xs.device),
                torch.tensor(radii, dtype=torch.float64, device=xs.device))

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

        Examples:
            >>> smooth = Smooth(lambda z: torch.stack([-z[:, 0], z[:, 0]], 1), 2, sigma=0.5)
            >>> smooth.sample_counts(torch.tensor([5.0, 0.0]), num=100, batch_size=50)
            tensor([  0, 100])
        """
        x = self._check_x(x, "x", batched=False)
        num, batch_size = _sample_sizes(num=num, batch_size=batch_size)
        self._check_generator(generator, x)
        return self._sample_noise(x[None], num, batch_size, generator)[0]

    # -- sampling: the one place that draws noise and runs f -----------------------------

    def _sample_noise(self, xs: Tensor, num: int, batch_size: int,
                      generator: torch.Generator | None) -> Tensor:
        """How often f predicts each class on ``num`` noisy copies of each input.

        Cohen et al.'s ``_sample_noise``, for N inputs at once: noise ``N(0, sigma^2 I)`` is
        drawn into one reused buffer, ``x`` added, f run on batches of at most ``batch_size``
        and its argmax counted on the device. When ``num >= batch_size`` (or N = 1) the inputs
        are sampled one after the other; else a batch runs over (input, sample) pairs in order.

        Args:
            xs: inputs (N, *input_shape).
            num: noise samples per input, >= 1.
            batch_size: noisy inputs per forward pass, >= 1.
            generator: seeds the noise; on xs's device.

        Returns:
            counts: int64 (N, num_classes) on xs's device, rows summing to ``num``.
        """
        n_inputs, shape, device = xs.shape[0], tuple(xs.shape[1:]), xs.device
        k = self.num_classes
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
        # argmax puts every nan row in class 0: a diverged model would get a confident vote. Checked
        # on the device, read once at the end (no synchronization per batch on an accelerator)
        nan_seen = torch.zeros((), dtype=torch.bool, device=device)

        def vote(m: int) -> Tensor:
            """f's classes on the first m noisy inputs of the buffer, in batches of ``size``."""
            for s in range(0, m, size):
                b = min(size, m - s)
                logits = self._logits(buffer[s:s + b], xs)
                nan_seen.logical_or_(torch.isnan(logits).any())
                torch.argmax(logits, 1, out=preds[s:s + b])
            return preds[:m]

        with evaluating(self.base_classifier, grad=False):
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
        if nan_seen:
            raise ValueError("the base classifier returned nan logits on noisy inputs (a diverged model?): "
                             "its votes, and any prediction or certificate from them, would be meaningless")
        return counts

    def _logits(self, noisy: Tensor, xs: Tensor) -> Tensor:
        """f on one batch of noisy inputs, with errors that say what went wrong."""
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

    # -- checks --------------------------------------------------------------------------

    def _check_certify_args(self, n0: object, n: object, alpha: object, batch_size: object,
                            generator: object, x: Tensor) -> tuple[int, int, float, int]:
        n0, n, batch_size = _sample_sizes(n0=n0, n=n, batch_size=batch_size)
        alpha = _checks.probability(alpha, "alpha")
        self._check_generator(generator, x)
        return n0, n, alpha, batch_size

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
        if _checks.optional_generator(generator) is not None and generator.device.type != x.device.type:
            raise ValueError(f"generator must live on x's device ({x.device}), got one on {generator.device}")
