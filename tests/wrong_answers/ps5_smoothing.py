"""Plausible wrong answers to ps5_smoothing that pass the visible tests but not the hidden ones.

Each entry: name -> (solution cell replaced, the one test cell it must fail, code).
tests/test_assignments.py autogrades each and checks it loses exactly that test's points.
The visible tests check properties (below k / n, increasing in k, a constant classifier certified
below the cap of n samples, a four-way split abstains); the hidden tests compare with a reference
on many (k, n, alpha) and feed certify known counts.
"""

_CERTIFY_HEAD = '''\
def certify(model: nn.Module, x: torch.Tensor, sigma: float, n0: int, n: int, alpha: float,
            batch_size: int = 1000, generator: torch.Generator | None = None, bound=None) -> tuple[int, float]:
    bound = lower_confidence_bound if bound is None else bound
    if n0 < 1 or n < 1 or not sigma > 0 or not 0 < alpha < 1:
        raise ValueError("need n0 >= 1, n >= 1, sigma > 0, 0 < alpha < 1")
    counts0 = sample_counts(model, x, sigma, n0, batch_size, generator)
    c_a = int(counts0.argmax())
'''

WRONG_ANSWERS = {
    "bug_two_sided_bound": ("lower_confidence_bound", "test_lower_confidence_bound", '''\
def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"k must be an integer in [0, n], got {k!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if k == 0:
        return 0.0
    return float(scipy.stats.beta.ppf(alpha / 2, k, n - k + 1))  # BUG: the two-sided interval's end: alpha/2, too low
'''),
    "bug_wilson_interval": ("lower_confidence_bound", "test_lower_confidence_bound", '''\
def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"k must be an integer in [0, n], got {k!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    # BUG: the (one-sided) Wilson score bound, a normal approximation, not the exact Clopper-Pearson bound
    z, p = NormalDist().inv_cdf(1 - alpha), k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))
'''),
    "bug_selection_counts_reused": ("certify", "test_certify", _CERTIFY_HEAD + '''\
    sample_counts(model, x, sigma, n, batch_size, generator)
    p_lower = bound(int(counts0[c_a]), n0, alpha)  # BUG: estimates p_A on the selection samples
    if p_lower < 0.5:
        return ABSTAIN, 0.0
    return c_a, sigma * NormalDist().inv_cdf(p_lower)
'''),
    "bug_radius_sigma_times_p": ("certify", "test_certify", _CERTIFY_HEAD + '''\
    counts = sample_counts(model, x, sigma, n, batch_size, generator)
    p_lower = bound(int(counts[c_a]), n, alpha)
    if p_lower < 0.5:
        return ABSTAIN, 0.0
    return c_a, sigma * p_lower  # BUG: sigma * p_lower, not sigma * Phi^-1(p_lower)
'''),
    "bug_abstain_on_point_estimate": ("certify", "test_certify", _CERTIFY_HEAD + '''\
    counts = sample_counts(model, x, sigma, n, batch_size, generator)
    if int(counts[c_a]) / n < 0.5:  # BUG: abstains on the point estimate; p_lower can still be < 1/2
        return ABSTAIN, 0.0
    p_lower = bound(int(counts[c_a]), n, alpha)
    return c_a, sigma * NormalDist().inv_cdf(p_lower)
'''),
}
