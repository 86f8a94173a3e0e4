"""course_lib.smoothing (randomized smoothing) and course_lib.train's Gaussian noise training.

References are independent of the code under test: scipy's ``binomtest(...).proportion_ci``
for the Clopper-Pearson bound, exact binomial sums for its coverage, ``statistics.NormalDist``
for Phi^-1, and the closed form of a smoothed *linear* classifier: for f(x) = [w.x + b > 0]
and noise N(0, sigma^2 I), w.(x + noise) + b ~ N(w.x + b, sigma^2 ||w||^2), so g(x) = f(x),
p_A = Phi(|w.x + b| / (sigma ||w||)) and the exact robust radius of g is |w.x + b| / ||w||.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import smoothing, train
from course_lib.smoothing import ABSTAIN, Smooth, lower_confidence_bound

pytestmark = pytest.mark.certify

PHI_INV = NormalDist().inv_cdf
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --- the Clopper-Pearson lower bound ---------------------------------------------------

def test_lower_bound_matches_scipy_exact_interval_on_many_cases():
    rng = np.random.default_rng(0)
    cases = [(0, 1, 0.05), (1, 1, 0.05), (0, 10, 0.001), (10, 10, 0.001), (5, 10, 0.5)]
    for _ in range(300):
        n = int(rng.integers(1, 3000))
        k = int(rng.integers(0, n + 1))
        alpha = float(10 ** rng.uniform(-4, -0.5))
        cases.append((k, n, alpha))
    for k, n, alpha in cases:
        ref = scipy.stats.binomtest(k, n, alternative="greater").proportion_ci(
            confidence_level=1 - alpha, method="exact").low
        got = lower_confidence_bound(k, n, alpha)
        assert isinstance(got, float)
        assert got == pytest.approx(ref, rel=1e-9, abs=1e-12), (k, n, alpha)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 100_000])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_lower_bound_closed_forms_at_the_ends(n, alpha):
    assert lower_confidence_bound(0, n, alpha) == 0.0
    # k = n: P(Bin(n, p) >= n) = p^n = alpha at the bound
    assert lower_confidence_bound(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-10)


def test_lower_bound_is_monotone_in_k_and_alpha():
    n = 50
    bounds = [lower_confidence_bound(k, n, 0.01) for k in range(n + 1)]
    assert all(a < b for a, b in zip(bounds, bounds[1:]))
    assert all(b <= k / n for k, b in zip(range(n + 1), bounds))  # below the point estimate
    assert lower_confidence_bound(30, n, 0.001) < lower_confidence_bound(30, n, 0.1)


@pytest.mark.parametrize("n", [10, 100, 1000])
@pytest.mark.parametrize("alpha", [0.01, 0.1])
def test_lower_bound_covers_p_with_probability_at_least_1_minus_alpha(n, alpha):
    rng = np.random.default_rng(n)
    bound_of_k = np.array([lower_confidence_bound(k, n, alpha) for k in range(n + 1)])
    for p in [0.02, 0.3, 0.5, 0.77, 0.95, 0.999, *rng.uniform(0, 1, 5)]:
        # exact coverage, summing the binomial pmf over the k whose bound lies below p
        exact = scipy.stats.binom.pmf(np.arange(n + 1), n, p)[bound_of_k <= p].sum()
        assert exact >= 1 - alpha - 1e-12, (p, exact)
        # and simulated, 200,000 binomial trials at once
        k = rng.binomial(n, p, size=200_000)
        covered = (bound_of_k[k] <= p).mean()
        assert covered >= 1 - alpha - 4 * math.sqrt(alpha * (1 - alpha) / k.size), (p, covered)


@pytest.mark.parametrize("args, name", [
    ((3, 2, 0.1), "k"), ((-1, 5, 0.1), "k"), ((1, 0, 0.1), "n"), ((1.0, 5, 0.1), "k"),
    ((1, 5.0, 0.1), "n"), ((True, 5, 0.1), "k"), ((1, 5, 0.0), "alpha"), ((1, 5, 1.0), "alpha"),
    ((1, 5, -0.5), "alpha"), ((1, 5, "0.1"), "alpha"),
])
def test_lower_bound_rejects_bad_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        lower_confidence_bound(*args)


def test_certified_radius_formula():
    for p in np.linspace(0.51, 0.999, 20):
        assert smoothing.certified_radius(float(p), 0.3) == pytest.approx(0.3 * PHI_INV(float(p)))
    assert smoothing.certified_radius(0.5, 0.3) == 0.0
    assert smoothing.certified_radius(0.2, 0.3) == 0.0
    with pytest.raises(ValueError, match="p_lower"):
        smoothing.certified_radius(1.0, 0.3)
    with pytest.raises(ValueError, match="sigma"):
        smoothing.certified_radius(0.9, 0.0)


# --- base classifiers with known smoothed behaviour ------------------------------------

class Constant(nn.Module):
    """Always class ``c`` of K; records what it was called with."""

    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.c, self.k = c, k
        self.seen: list[torch.Tensor] = []
        self.modes: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append(x.clone())
        self.modes.append((self.training, torch.is_grad_enabled()))
        logits = torch.zeros(x.shape[0], self.k, dtype=x.dtype, device=x.device)
        logits[:, self.c] = 1.0
        return logits


class Alternating(nn.Module):
    """Classes 0, 1, 0, 1, ... down the batch, whatever the input: an exact 50/50 split."""

    def forward(self, x):
        cls = torch.arange(x.shape[0], device=x.device) % 2
        return F.one_hot(cls, 3).to(x.dtype)


class LinearBinary(nn.Module):
    """f(x) = [w.x + b > 0] as two logits (0, w.x + b); x of shape (1, d) or any with d entries."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x):
        z = x.flatten(1) @ self.w.to(x.dtype) + self.b
        return torch.stack([torch.zeros_like(z), z], 1)

    def margin(self, x):  # (N, ...) -> signed distance to the boundary
        return (x.flatten(1) @ self.w + self.b) / self.w.norm()


@pytest.mark.parametrize("n", [1, 10, 1000])
@pytest.mark.parametrize("sigma", [0.12, 0.5])
def test_constant_classifier_gets_the_closed_form_radius(n, sigma):
    base = Constant(2, 4)
    smooth = Smooth(base, 4, sigma)
    x = torch.rand(1, 5, 5)
    c, radius = smooth.certify(x, n0=3, n=n, alpha=0.001, batch_size=64)
    p_lower = 0.001 ** (1 / n)  # all n samples vote for c
    if p_lower < 0.5:
        assert (c, radius) == (ABSTAIN, 0.0)
    else:
        assert c == 2
        assert radius == pytest.approx(sigma * PHI_INV(p_lower), rel=1e-9)
    assert smooth.predict(x, n=n, alpha=0.001, batch_size=64) == (2 if 2 * 0.5 ** n <= 0.001 else ABSTAIN)


def test_exact_ties_abstain():
    smooth = Smooth(Alternating(), 3, 0.25)
    x = torch.rand(2, 3)
    for n, batch_size in [(100, 10), (1000, 1000), (2, 2)]:
        assert smooth.predict(x, n=n, alpha=0.05, batch_size=batch_size) == ABSTAIN
        assert smooth.certify(x, n0=10, n=n, alpha=0.05, batch_size=batch_size) == (ABSTAIN, 0.0)


def test_a_lower_bound_of_exactly_one_half_abstains():
    """One sample, alpha = 1/2: the bound for k = n = 1 is alpha ** (1/n) = 1/2 exactly, which
    certifies nothing (radius 0): CERTIFY abstains unless p_lower > 1/2."""
    assert lower_confidence_bound(1, 1, 0.5) == 0.5
    assert Smooth(Constant(1, 3), 3, 0.25).certify(torch.zeros(2), n0=1, n=1, alpha=0.5, batch_size=1) == (ABSTAIN, 0.0)
    assert Smooth(Constant(1, 3), 3, 0.25).certify(torch.zeros(2), n0=1, n=2, alpha=0.5, batch_size=1)[0] == 1


def test_the_lower_bound_stays_below_one_when_alpha_nears_one():
    p = lower_confidence_bound(10**6, 10**6, 1 - 1e-12)
    assert p < 1 and p > 1 - 1e-15
    assert smoothing.certified_radius(p, 1.0) > 0


def test_a_classifier_split_50_50_by_the_noise_abstains():
    # x on the boundary of a linear classifier: p_A = 1/2 exactly; certify abstains unless the
    # bound errs (probability <= alpha), predict abstains unless its test errs (<= alpha)
    base = LinearBinary(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), 0.0)
    smooth = Smooth(base, 2, 0.5)
    x = torch.zeros(3, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    certs = [smooth.certify(x, 20, 500, 0.01, 250, generator=gen) for _ in range(40)]
    preds = [smooth.predict(x, 500, 0.01, 250, generator=gen) for _ in range(40)]
    assert sum(c != ABSTAIN for c, _ in certs) <= 1
    assert sum(p != ABSTAIN for p in preds) <= 1


def _random_linear(d, seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    return LinearBinary(w, float(torch.randn((), generator=gen, dtype=torch.float64))), gen


@pytest.mark.parametrize("sigma", [0.25, 1.0])
def test_certified_radius_never_exceeds_the_true_radius_beyond_alpha(sigma):
    d, alpha, trials = 10, 0.01, 0
    failures, ratios = 0, []
    for seed in range(5):
        base, gen = _random_linear(d, seed)
        # points at signed distance t from the boundary, t / sigma uniform in [-3, 3]
        z = torch.randn(200, d, generator=gen, dtype=torch.float64)
        t = sigma * (6 * torch.rand(200, 1, generator=gen, dtype=torch.float64) - 3)
        unit = base.w / base.w.norm()
        xs = z - base.margin(z)[:, None] * unit + t * unit
        torch.testing.assert_close(base.margin(xs), t[:, 0])
        smooth = Smooth(base, 2, sigma, input_shape=(d,))
        classes, radii = smooth.certify_batch(xs, n0=20, n=1000, alpha=alpha, batch_size=4096, generator=gen)
        margin = base.margin(xs)
        truth = (margin > 0).long()
        true_radius = margin.abs()
        certified = classes != ABSTAIN
        failures += int((certified & ((classes != truth) | (radii > true_radius))).sum())
        trials += int(certified.sum())
        # not vacuous: where p_A is clearly above 1/2 the radius comes close to the truth
        p_a = torch.tensor([NormalDist().cdf(float(m) / sigma) for m in true_radius])
        clear = (p_a > 0.8) & (p_a < 0.99)
        ratios += (radii[clear] / true_radius[clear]).tolist()
    # each certificate fails with probability <= alpha: a failure count this high has probability < 1e-6
    assert failures <= scipy.stats.binom.ppf(1 - 1e-6, trials, alpha), (failures, trials)
    assert trials > 500
    assert len(ratios) > 100 and np.median(ratios) > 0.8


def test_single_certify_is_sound_on_a_linear_classifier_and_matches_certify_batch():
    base, gen = _random_linear(4, 11)
    smooth = Smooth(base, 2, 0.5)
    xs = torch.randn(30, 4, generator=gen, dtype=torch.float64) * 0.5
    for i, x in enumerate(xs):
        c, r = smooth.certify(x, 10, 300, 0.001, 128, generator=torch.Generator().manual_seed(i))
        assert isinstance(c, int) and isinstance(r, float)
        if c != ABSTAIN:
            assert c == int(base.margin(x[None])[0] > 0) and r <= float(base.margin(x[None]).abs()[0])
        cb, rb = smooth.certify_batch(x[None], 10, 300, 0.001, 128, generator=torch.Generator().manual_seed(i))
        assert (int(cb[0]), float(rb[0])) == (c, r)  # one input: the same noise as certify


def test_predict_agrees_with_the_closed_form_away_from_the_boundary():
    sigma = 0.5
    for seed in range(3):
        base, gen = _random_linear(8, seed)
        xs = torch.randn(60, 8, generator=gen, dtype=torch.float64)
        margin = base.margin(xs)
        far = margin.abs() > 0.6 * sigma  # p_A > Phi(0.6) = 0.73: 1000 samples decide
        smooth = Smooth(base, 2, sigma)
        for x, m in zip(xs[far], margin[far]):
            assert smooth.predict(x, n=1000, alpha=0.001, batch_size=500, generator=gen) == int(m > 0)


# --- noise, devices, modes --------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_lives_on_the_input_device_and_dtype(device, dtype):
    base = Constant(0, 3).to(device)
    smooth = Smooth(base, 3, 0.3)
    x = torch.rand(1, 4, 4, dtype=dtype, device=device)
    counts = smooth.sample_counts(x, 5000, 1000, generator=torch.Generator(device).manual_seed(0))
    assert counts.device.type == device and counts.tolist() == [5000, 0, 0]
    noise = torch.cat(base.seen) - x
    assert noise.shape == (5000, 1, 4, 4)
    assert noise.dtype == dtype and noise.device.type == device
    assert abs(float(noise.mean())) < 4 * 0.3 / math.sqrt(noise.numel())
    assert float(noise.std()) == pytest.approx(0.3, rel=0.02)
    assert noise.min() < -x.max() and (x + noise).max() > 1  # not clipped to [0, 1]
    assert len(base.seen) == 5  # batches of 1000
    classes, radii = smooth.certify_batch(x.expand(3, 1, 4, 4), 2, 10, 0.1, 7)
    assert classes.device.type == device and radii.device.type == device


def test_the_base_classifier_runs_in_eval_mode_without_gradients_and_its_mode_is_restored():
    base = Constant(1, 2)
    smooth = Smooth(base, 2, 0.1)
    base.train()
    smooth.certify(torch.zeros(3), 5, 5, 0.1, 4)
    assert base.training
    base.eval()
    smooth.predict(torch.zeros(3), 5, 0.1, 4)
    assert not base.training
    assert base.modes and all(mode == (False, False) for mode in base.modes)


def test_the_generator_makes_runs_reproducible():
    base, gen = _random_linear(6, 3)
    smooth = Smooth(base, 2, 1.0)
    xs = torch.randn(5, 6, generator=gen, dtype=torch.float64) * 0.3
    a = smooth.certify_batch(xs, 10, 200, 0.01, 64, generator=torch.Generator().manual_seed(7))
    b = smooth.certify_batch(xs, 10, 200, 0.01, 64, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = smooth.certify_batch(xs, 10, 200, 0.01, 64, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(a[1], c[1])


def test_certify_batch_counts_each_input_separately():
    # a classifier whose vote depends on the input: each input must get its own counts
    class ByFirstCoordinate(nn.Module):
        def forward(self, x):
            return F.one_hot((x[:, 0] > 0).long() + (x[:, 0] > 5).long(), 3).to(x.dtype)

    smooth = Smooth(ByFirstCoordinate(), 3, 0.01)
    xs = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [9.0, 0.0], [1.0, 3.0]])
    for batch_size in (1, 7, 100, 10_000):
        classes, radii = smooth.certify_batch(xs, 5, 50, 0.01, batch_size)
        assert classes.tolist() == [0, 1, 2, 1]
        expected = 0.01 * PHI_INV(0.01 ** (1 / 50))
        torch.testing.assert_close(radii, torch.full((4,), expected, dtype=torch.float64))


# --- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    ({"sigma": 0.0}, "sigma"), ({"sigma": -1.0}, "sigma"), ({"sigma": math.inf}, "sigma"),
    ({"num_classes": 1}, "num_classes"), ({"num_classes": 2.0}, "num_classes"),
    ({"input_shape": (0, 3)}, "input_shape"),
])
def test_smooth_rejects_bad_construction(kwargs, name):
    args = {"base_classifier": Constant(0, 2), "num_classes": 2, "sigma": 0.5, **kwargs}
    with pytest.raises(ValueError, match=name):
        Smooth(**args)


@pytest.mark.parametrize("kwargs, name", [
    ({"n0": 0}, "n0"), ({"n": 0}, "n"), ({"n": 10.0}, "n"), ({"alpha": 0.0}, "alpha"),
    ({"alpha": 1.0}, "alpha"), ({"batch_size": 0}, "batch_size"),
])
def test_certify_rejects_bad_arguments(kwargs, name):
    smooth = Smooth(Constant(0, 2), 2, 0.5)
    args = {"n0": 5, "n": 10, "alpha": 0.01, "batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=name):
        smooth.certify(torch.zeros(3), **args)
    with pytest.raises(ValueError, match=name):
        smooth.certify_batch(torch.zeros(2, 3), **args)
    if "n0" not in kwargs:
        args.pop("n0")
        with pytest.raises(ValueError, match=name):
            smooth.predict(torch.zeros(3), **args)


def test_a_batch_dimension_is_rejected_where_one_input_is_expected():
    mnist_like = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))
    smooth = Smooth(mnist_like, 10, 0.25, input_shape=(1, 28, 28))
    one = torch.rand(1, 28, 28)
    assert smooth.certify(one, 2, 2, 0.1, 2)[0] in (ABSTAIN, *range(10))
    for method in (lambda x: smooth.certify(x, 2, 2, 0.1, 2), lambda x: smooth.predict(x, 2, 0.1, 2)):
        with pytest.raises(ValueError, match="batch dimension"):
            method(one[None])
    with pytest.raises(ValueError, match="xs"):
        smooth.certify_batch(one, 2, 2, 0.1, 2)
    # without input_shape, a batch the base classifier cannot take is still a ValueError naming it
    loose = Smooth(mnist_like, 10, 0.25)
    with pytest.raises(ValueError, match="ONE input"):
        loose.certify(torch.rand(4, 1, 28, 28), 2, 2, 0.1, 2)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(ValueError, match="batch"):
        Smooth(mlp, 10, 0.25).predict(torch.rand(4, 1, 28, 28), 2, 0.1, 2)


def test_wrong_logit_count_integer_inputs_and_generators_are_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        Smooth(Constant(0, 3), 2, 0.5).certify(torch.zeros(3), 2, 2, 0.1, 2)
    with pytest.raises(ValueError, match="floating"):
        Smooth(Constant(0, 2), 2, 0.5).certify(torch.zeros(3, dtype=torch.int64), 2, 2, 0.1, 2)
    with pytest.raises(TypeError, match="generator"):
        Smooth(Constant(0, 2), 2, 0.5).certify(torch.zeros(3), 2, 2, 0.1, 2, generator=0)
    with pytest.raises(TypeError, match="tensor"):
        Smooth(Constant(0, 2), 2, 0.5).certify([0.0, 0.0], 2, 2, 0.1, 2)
    float32_model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="dtype torch.float64.*dtype and device"):  # not a shape problem
        Smooth(float32_model, 2, 0.5).certify(torch.zeros(1, 2, 2, dtype=torch.float64), 2, 2, 0.1, 2)


def test_nan_logits_and_non_finite_inputs_are_errors_not_certificates():
    """argmax sends a nan row to class 0: a diverged model would otherwise be 'certified' for
    class 0 at the largest radius n samples allow (a review found (0, 0.616) at n = 1000)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(1, 2, 2)
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    smooth = Smooth(model, 3, 0.25)
    for call in (lambda: smooth.certify(x, 10, 100, 0.001, 32), lambda: smooth.predict(x, 100, 0.001, 32),
                 lambda: smooth.certify_batch(x.expand(3, 1, 2, 2), 10, 100, 0.001, 32)):
        with pytest.raises(ValueError, match="nan logits"):
            call()

    class HalfNan(nn.Module):  # nan on some noisy inputs only: still an error
        def forward(self, z):
            logits = torch.zeros(z.shape[0], 3)
            logits[z.flatten(1)[:, 0] > 0.5] = float("nan")
            return logits

    with pytest.raises(ValueError, match="nan logits"):
        Smooth(HalfNan(), 3, 0.25).certify(torch.full((1, 2, 2), 0.5), 10, 100, 0.001, 32)
    healthy = Smooth(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), 3, 0.25)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            healthy.certify(torch.full((1, 2, 2), bad), 10, 100, 0.001, 32)


# --- Gaussian noise training (course_lib.train) -------------------------------------------

def test_gaussian_noise_loss_is_the_cross_entropy_at_unclipped_noisy_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    loss_fn = train.gaussian_noise_loss(0.5, generator=torch.Generator().manual_seed(3))
    loss, logits = loss_fn(model, x, y)
    noisy = x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    assert (noisy < 0).any() and (noisy > 1).any()  # the reference is not clipped either
    torch.testing.assert_close(logits, model(noisy))
    torch.testing.assert_close(loss, F.cross_entropy(model(noisy), y))
    with torch.no_grad():  # evaluation is noisy too, with fresh noise
        _, logits_eval = loss_fn(model, x, y)
    assert not torch.allclose(logits_eval, model(x)) and not torch.allclose(logits_eval, logits)
    torch.testing.assert_close(train.gaussian_noise_loss(0.0)(model, x, y)[1], model(x))


def test_noise_training_makes_the_base_classifier_robust_to_noise():
    # two Gaussian blobs in 20-D: the noise-trained model keeps its accuracy under noise
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (512,), generator=gen)
    x = (y[:, None] * 2.0 - 1) * 0.3 + 0.2 * torch.randn(512, 20, generator=gen)
    loader = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 512, 64)]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 2))
    loss_fn = train.gaussian_noise_loss(1.0, generator=torch.Generator().manual_seed(1))
    history = train.train(model, loader, epochs=15, lr=1e-2, batch_loss=loss_fn, progress=False)
    noisy = train.evaluate(model, loader, batch_loss=loss_fn)["accuracy"]
    assert history["loss"][-1] < history["loss"][0]
    assert noisy > 0.85  # the signal ||mean difference|| = 0.6 * sqrt(20) = 2.7 sigma survives
    assert train.evaluate(model, loader)["accuracy"] > noisy  # clean accuracy is higher still


@pytest.mark.parametrize("sigma", [-0.1, math.nan, "0.1", True])
def test_gaussian_noise_loss_rejects_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        train.gaussian_noise_loss(sigma)


def test_counts_may_be_integer_tensors():
    """``lower_confidence_bound(counts[c], n, alpha)`` with counts a tensor: the 0-d count is an
    integer (a float or bool tensor is still refused)."""
    counts = torch.tensor([3, 794, 203])
    assert lower_confidence_bound(counts[1], 1000, 0.001) == lower_confidence_bound(794, 1000, 0.001)
    assert lower_confidence_bound(794, torch.tensor(1000), 0.001) == lower_confidence_bound(794, 1000, 0.001)
    for bad in (torch.tensor(794.0), torch.tensor(True), counts):
        with pytest.raises(ValueError, match="k must be an integer"):
            lower_confidence_bound(bad, 1000, 0.001)


# --- certified accuracy ------------------------------------------------------------------

def test_certified_accuracy_at_matches_a_brute_force_count():
    gen = torch.Generator().manual_seed(0)
    n_inputs = 257
    labels = torch.randint(0, 4, (n_inputs,), generator=gen)
    classes = torch.randint(-1, 4, (n_inputs,), generator=gen)  # -1 = ABSTAIN
    radii = torch.where(classes == ABSTAIN, 0.0, torch.rand(n_inputs, generator=gen, dtype=torch.float64))
    grid = [0.0, *radii[:5].tolist(), *np.linspace(0, 1.2, 13)]  # some radii exactly on an input's
    got = smoothing.certified_accuracy_at(classes, radii, labels, grid)
    assert isinstance(got, list) and len(got) == len(grid)
    for r, acc in zip(grid, got):
        count = sum(1 for i in range(n_inputs)
                    if int(classes[i]) != ABSTAIN and int(classes[i]) == int(labels[i]) and float(radii[i]) >= r)
        assert acc == pytest.approx(count / n_inputs, rel=1e-15, abs=0)
    # one radius gives one float; arrays and tensors of radii give lists
    one = smoothing.certified_accuracy_at(classes, radii, labels, grid[3])
    assert isinstance(one, float) and one == got[3]
    assert smoothing.certified_accuracy_at(classes, radii, labels, np.float64(0.3)) == \
        smoothing.certified_accuracy_at(classes, radii, labels, [0.3])[0]
    assert smoothing.certified_accuracy_at(classes, radii, labels, np.linspace(0, 1.2, 13)) == got[6:]
    assert smoothing.certified_accuracy_at(classes, radii, labels, torch.linspace(0, 1, 3)) == \
        smoothing.certified_accuracy_at(classes, radii, labels, [0.0, 0.5, 1.0])


def test_certified_accuracy_at_is_what_lecture_5_computed():
    # the lecture's own definition, which the library function replaced (same operations)
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (200,), generator=gen)
    classes = torch.where(torch.rand(200, generator=gen) < 0.8, labels, torch.randint(-1, 10, (200,), generator=gen))
    radii = torch.rand(200, generator=gen, dtype=torch.float64) * (classes != ABSTAIN)
    for r in np.linspace(0, 1.5, 61):
        lecture = float(((classes == labels) & (radii >= r)).double().mean())
        assert smoothing.certified_accuracy_at(classes, radii, labels, r) == lecture


def test_certified_accuracy_at_rejects_bad_arguments():
    c, r, y = torch.tensor([0, 1]), torch.tensor([0.5, 0.5]), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="radius"):
        smoothing.certified_accuracy_at(c, r, y, -0.1)
    with pytest.raises(ValueError, match="radius"):
        smoothing.certified_accuracy_at(c, r, y, [0.1, float("nan")])
    with pytest.raises(ValueError, match="labels"):
        smoothing.certified_accuracy_at(c, r, torch.tensor([0, 1, 2]), 0.1)
    with pytest.raises(ValueError, match="radii"):
        smoothing.certified_accuracy_at(c, [0.5, 0.5], y, 0.1)


# --- docstrings and the argument policy ----------------------------------------------------

def test_docstring_examples():
    import doctest

    assert doctest.testmod(smoothing).failed == 0


def _half_plane(z):
    return torch.stack([-z[:, 0], z[:, 0]], 1)  # class 1 where z_0 > 0


def _smooth(**kw):
    return Smooth(_half_plane, **{"num_classes": 2, "sigma": 0.5, **kw})


_X = torch.tensor([0.3, 0.0])
_XS = torch.tensor([[0.3, 0.0], [-0.6, 1.0], [0.0, 0.0]])


def _seeded():
    return torch.Generator().manual_seed(0)


def _certify(**kw):
    return _smooth().certify(_X, **{"n0": 10, "n": 50, "alpha": 0.125, "batch_size": 16, **kw}, generator=_seeded())


def _certify_batch(**kw):
    args = {"n0": 10, "n": 50, "alpha": 0.125, "batch_size": 16, **kw}
    classes, radii = _smooth().certify_batch(_XS, **args, generator=_seeded())
    return classes.tolist(), radii.tolist()


def _predict(**kw):
    return _smooth().predict(_X, **{"n": 50, "alpha": 0.125, "batch_size": 16, **kw}, generator=_seeded())


_CERTIFIED = (torch.tensor([1, 0, ABSTAIN]), torch.tensor([0.3, 0.6, 0.0], dtype=torch.float64), torch.tensor([1, 0, 0]))

POLICY = [
    (lambda v: lower_confidence_bound(v, 10, 0.01), "k", 7),
    (lambda v: lower_confidence_bound(7, v, 0.01), "n", 10),
    (lambda v: lower_confidence_bound(7, 10, v), "alpha", 0.125),
    (lambda v: smoothing.certified_radius(v, 0.5), "p_lower", 0.75),
    (lambda v: smoothing.certified_radius(0.75, v), "sigma", 0.5),
    (lambda v: _smooth(num_classes=v).num_classes, "num_classes", 2),
    (lambda v: _smooth(sigma=v).sigma, "sigma", 0.5),
    (lambda v: _smooth(input_shape=(v,)).input_shape, "input_shape", 2),
    (lambda v: _smooth().sample_counts(_X, v, 16, generator=_seeded()).tolist(), "num", 50),
    (lambda v: _smooth().sample_counts(_X, 50, v, generator=_seeded()).tolist(), "batch_size", 16),
    (lambda v: _predict(n=v), "n", 50),
    (lambda v: _predict(alpha=v), "alpha", 0.125),
    (lambda v: _predict(batch_size=v), "batch_size", 16),
    (lambda v: _certify(n0=v), "n0", 10),
    (lambda v: _certify(n=v), "n", 50),
    (lambda v: _certify(alpha=v), "alpha", 0.125),
    (lambda v: _certify(batch_size=v), "batch_size", 16),
    (lambda v: _certify_batch(n0=v), "n0", 10),
    (lambda v: _certify_batch(n=v), "n", 50),
    (lambda v: _certify_batch(alpha=v), "alpha", 0.125),
    (lambda v: _certify_batch(batch_size=v), "batch_size", 16),
    (lambda v: smoothing.certified_accuracy_at(*_CERTIFIED, v), "radius", 0.5),
]


@pytest.mark.parametrize("call, name, value", POLICY, ids=[f"{i}-{c[1]}" for i, c in enumerate(POLICY)])
def test_argument_policy(call, name, value):
    from argument_policy import check_policy

    check_policy(call, name, value, lambda a, b: a == b)
