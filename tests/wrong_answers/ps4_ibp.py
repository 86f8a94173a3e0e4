"""Plausible wrong answers to ps4_ibp that pass the visible tests but not the hidden ones.

Each entry: name -> (solution cell replaced, the one test cell it must fail, code).
tests/test_assignments.py autogrades each and checks it loses exactly that test's points.
The visible tests use non-negative weights, intervals on one side of 0, images in the middle of
the grey range with small radii (the box [0, 1] never binds) and boxes of width 0 for the margins;
the hidden tests use negative weights, intervals straddling 0, pixels at exactly 0 and 1, and
boxes of positive width. Part C's test passes the reference interval functions, so a wrong
Part A or B costs only its own points. Part F (CROWN) likewise: the visible tests work the lecture's
2-2-2 network by hand (its one unstable unit has u = -l, so alpha = 0, and its final coefficients are
positive) and check shapes and soundness; the hidden ones compare with course_lib.crown on units of
every kind and on random networks, F2's and F3's tests with reference lines and a reference step.
"""

WRONG_ANSWERS = {
    "bug_affine_signed_radius": ("interval_affine", "test_interval_affine", '''\
def interval_affine(lower, upper, W, b):
    if (lower > upper).any():
        raise ValueError("need lower <= upper elementwise")
    mu, r = (upper + lower) / 2, (upper - lower) / 2
    mu_out = mu @ W.T + b
    r_out = r @ W.T  # BUG: W r instead of |W| r; a negative weight shrinks (or flips) the radius
    return mu_out - r_out, mu_out + r_out
'''),
    "bug_relu_unstable_keeps_lower": ("interval_relu", "test_interval_relu", '''\
def interval_relu(lower, upper):
    if (lower > upper).any():
        raise ValueError("need lower <= upper elementwise")
    # BUG: "a unit that can be on is on": an unstable unit keeps its negative lower end
    return torch.where(upper > 0, lower, torch.zeros_like(lower)), upper.clamp(min=0)
'''),
    "bug_box_not_clipped": ("ibp_bounds", "test_ibp_bounds", '''\
def ibp_bounds(model, x, eps, affine=None, relu=None):
    affine = interval_affine if affine is None else affine
    relu = interval_relu if relu is None else relu
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    lower, upper = x - eps, x + eps  # BUG: not clipped to [0, 1]: looser bounds near black and white pixels
    for layer in model:
        if isinstance(layer, nn.Linear):
            lower, upper = affine(lower, upper, layer.weight, layer.bias)
        elif isinstance(layer, nn.ReLU):
            lower, upper = relu(lower, upper)
        elif isinstance(layer, nn.Flatten):
            lower, upper = layer(lower), layer(upper)
        else:
            raise TypeError(f"unsupported layer {type(layer).__name__}")
    return lower, upper
'''),
    "bug_margin_best_case": ("certify", "test_certify", '''\
def worst_case_margins(lower, upper, y):
    margins = upper.gather(1, y[:, None]) - lower  # BUG: upper[y] - lower[j], the best case, not the worst
    return margins.scatter(1, y[:, None], float("inf"))


def certify(lower, upper, y):
    return worst_case_margins(lower, upper, y).min(1).values > 0
'''),
    "bug_lower_slope_always_zero": ("relu_lines", "test_relu_lines", '''\
def relu_lines(lower, upper):
    if (lower > upper).any():
        raise ValueError("need lower <= upper elementwise")
    on = (lower >= 0).to(lower.dtype)
    unstable = (lower < 0) & (upper > 0)
    width = torch.where(unstable, upper - lower, torch.ones_like(lower))
    a_hi = torch.where(unstable, upper / width, on)
    b_hi = torch.where(unstable, -a_hi * lower, torch.zeros_like(lower))
    a_lo = on  # BUG: an unstable unit's lower slope is always 0, never the adaptive 1 when u > -l (sound, looser)
    return a_lo, torch.zeros_like(lower), a_hi, b_hi
'''),
    "bug_step_intercepts_summed_over_rows": ("crown_step", "test_crown_step", '''\
def crown_step(A, c0, lower, upper, lines=None):
    lines = relu_lines if lines is None else lines
    a_lo, b_lo, a_hi, b_hi = lines(lower, upper)
    pos, neg = A.clamp(min=0), A.clamp(max=0)
    # BUG: .sum() without dim adds every row's intercepts to each row: right for one row (S = 1) only
    return pos * a_lo + neg * a_hi, c0 + (pos * b_lo + neg * b_hi).sum()
'''),
    "bug_crown_min_at_lower_corner": ("crown_lower_bound", "test_crown_lower_bound", '''\
def crown_lower_bound(W1, b1, W2, b2, C, lower, upper, step=None):
    step = crown_step if step is None else step
    mu, r = (lower + upper) / 2, (upper - lower) / 2
    z_mu, z_r = W1 @ mu + b1, W1.abs() @ r
    A, c0 = step(C @ W2, C @ b2, z_mu - z_r, z_mu + z_r)
    A, c0 = A @ W1, c0 + A @ b1
    return A @ lower + c0  # BUG: the minimum taken at the lower corner, right only where A W1 >= 0
'''),
}
