"""Plausible wrong answers to ps4_ibp that pass the visible tests but not the hidden ones.

Each entry: name -> (solution cell replaced, the one test cell it must fail, code).
tests/test_assignments.py autogrades each and checks it loses exactly that test's points.
The visible tests use non-negative weights, intervals on one side of 0, images in the middle of
the grey range with small radii (the box [0, 1] never binds) and boxes of width 0 for the margins;
the hidden tests use negative weights, intervals straddling 0, pixels at exactly 0 and 1, and
boxes of positive width. Part C's test passes the reference interval functions, so a wrong
Part A or B costs only its own points.
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
}
