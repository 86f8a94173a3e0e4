"""Plausible wrong answers to ps10_poisoning_deep that pass the visible tests but not the hidden ones.

Each entry: name -> (solution cell replaced, the one test cell it must fail, code).
tests/grading/test_assignments.py autogrades each and checks it loses exactly that test's points.
The visible tests check the feature-collision step on one triple, starting at the base, away from
0 and 1; the spectral scores by their ranking and invariances, not their values; and the interval
step on a point box, plus sampled poisonings of one narrow box. The hidden tests do the rest:
batches of triples, poisons away from the base, pixels at 0 and 1; the reference scores on many
classes; the instructions' bound recomputed by enumerating every poisoned set, course_lib's step,
wide boxes, label flips with feature changes, and the worst label flips found by search.
"""

_FBS_HEAD = '''\
def forward_backward_step(extractor, poison, target, base, beta, lr):
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    with torch.no_grad():
        target_features = extractor(target)
'''

_SPECTRAL_HEAD = '''\
def spectral_scores(features):
    centred = features - features.mean(0, keepdim=True)
    if features.shape[0] < 2:
        return torch.zeros(features.shape[0], dtype=features.dtype, device=features.device)
'''

_STEP_HEAD = '''\
def interval_gradient_step(w_lo, w_hi, b_lo, b_hi, X, y, k, eps, lr, label_flip=False):
    n = X.shape[0]
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n = {n}], got {k}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    y = y.to(X.dtype)

    def times(a_lo, a_hi, c_lo, c_hi):
        corners = torch.stack([a_lo * c_lo, a_lo * c_hi, a_hi * c_lo, a_hi * c_hi])
        return corners.amin(0), corners.amax(0)
'''

_STEP_BOXES = '''
    def gradient_boxes(x_lo, x_hi, any_label):
        t_lo, t_hi = times(w_lo, w_hi, x_lo, x_hi)
        z_lo, z_hi = t_lo.sum(1) + b_lo, t_hi.sum(1) + b_hi
        if any_label:
            d_lo, d_hi = torch.sigmoid(z_lo) - 1, torch.sigmoid(z_hi)
        else:
            d_lo, d_hi = torch.sigmoid(z_lo) - y, torch.sigmoid(z_hi) - y
        g_lo, g_hi = times(d_lo[:, None], d_hi[:, None], x_lo, x_hi)
        return (g_lo, g_hi), (d_lo, d_hi)
'''

_STEP_MEAN = '''
    def mean_bounds(c, p):
        (lo, hi), (p_lo, p_hi) = c, p
        g_lo, g_hi = lo.sum(0), hi.sum(0)
        if k > 0:
            g_hi = g_hi + torch.topk((p_hi - hi).clamp(min=0), k, dim=0).values.sum(0)
            g_lo = g_lo + torch.topk((p_lo - lo).clamp(max=0), k, dim=0, largest=False).values.sum(0)
        return g_lo / n, g_hi / n
'''

_STEP_TAIL = '''
    clean = gradient_boxes(X, X, False)
    poisoned = gradient_boxes(X - eps, X + eps, label_flip)
    gw_lo, gw_hi = mean_bounds(clean[0], poisoned[0])
    gb_lo, gb_hi = mean_bounds(clean[1], poisoned[1])
    return w_lo - lr * gw_hi, w_hi - lr * gw_lo, b_lo - lr * gb_hi, b_hi - lr * gb_lo
'''

WRONG_ANSWERS = {
    "bug_fbs_mean_over_the_batch": ("forward_backward_step", "test_forward_backward_step", _FBS_HEAD + '''\
    p = poison.detach().clone().requires_grad_(True)
    # BUG: the mean over the triples, not the sum: a batch of N takes steps N times too short
    loss = (extractor(p) - target_features).pow(2).sum(1).mean()
    (grad,) = torch.autograd.grad(loss, p)
    x = poison.detach() - lr * grad
    return ((x + lr * beta * base) / (1 + lr * beta)).clamp(0, 1)
'''),
    "bug_fbs_gradient_at_the_base": ("forward_backward_step", "test_forward_backward_step", _FBS_HEAD + '''\
    p = base.detach().clone().requires_grad_(True)  # BUG: the gradient taken at the base, not at the poison
    loss = (extractor(p) - target_features).pow(2).sum()
    (grad,) = torch.autograd.grad(loss, p)
    x = poison.detach() - lr * grad
    return ((x + lr * beta * base) / (1 + lr * beta)).clamp(0, 1)
'''),
    "bug_fbs_no_clip": ("forward_backward_step", "test_forward_backward_step", _FBS_HEAD + '''\
    p = poison.detach().clone().requires_grad_(True)
    loss = (extractor(p) - target_features).pow(2).sum()
    (grad,) = torch.autograd.grad(loss, p)
    x = poison.detach() - lr * grad
    return (x + lr * beta * base) / (1 + lr * beta)  # BUG: the proximal map without the box [0, 1]
'''),
    "bug_spectral_absolute_projection": ("spectral_scores", "test_spectral_scores", _SPECTRAL_HEAD + '''\
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[0]).abs()  # BUG: |projection| (the same ranking), not its square
'''),
    "bug_spectral_distance_to_the_mean": ("spectral_scores", "test_spectral_scores", _SPECTRAL_HEAD + '''\
    return centred.square().sum(1)  # BUG: the squared distance to the mean, not along the top direction
'''),
    "bug_step_k_times_the_largest_excess": ("interval_gradient_step", "test_interval_gradient_step",
                                            _STEP_HEAD + _STEP_BOXES + '''
    def mean_bounds(c, p):
        (lo, hi), (p_lo, p_hi) = c, p
        g_lo, g_hi = lo.sum(0), hi.sum(0)
        # BUG: k times the largest excess, not the sum of the k largest (sound, but looser)
        g_hi = g_hi + k * (p_hi - hi).clamp(min=0).amax(0)
        g_lo = g_lo + k * (p_lo - lo).clamp(max=0).amin(0)
        return g_lo / n, g_hi / n
''' + _STEP_TAIL),
    "bug_step_flip_forgets_the_kept_label": ("interval_gradient_step", "test_interval_gradient_step", _STEP_HEAD + '''
    def gradient_boxes(x_lo, x_hi, any_label):
        t_lo, t_hi = times(w_lo, w_hi, x_lo, x_hi)
        z_lo, z_hi = t_lo.sum(1) + b_lo, t_hi.sum(1) + b_hi
        # BUG: a poisoned example gets the flipped label 1 - y only; one that keeps its label but moves
        # its features is not covered
        target = 1 - y if any_label else y
        d_lo, d_hi = torch.sigmoid(z_lo) - target, torch.sigmoid(z_hi) - target
        g_lo, g_hi = times(d_lo[:, None], d_hi[:, None], x_lo, x_hi)
        return (g_lo, g_hi), (d_lo, d_hi)
''' + _STEP_MEAN + _STEP_TAIL),
    "bug_step_logit_at_the_box_centre": ("interval_gradient_step", "test_interval_gradient_step", _STEP_HEAD + '''
    def gradient_boxes(x_lo, x_hi, any_label):
        # BUG: the logit's range over the features only, at the centre of the parameter box
        w_c, b_c = (w_lo + w_hi) / 2, (b_lo + b_hi) / 2
        t_lo, t_hi = times(w_c, w_c, x_lo, x_hi)
        z_lo, z_hi = t_lo.sum(1) + b_c, t_hi.sum(1) + b_c
        if any_label:
            d_lo, d_hi = torch.sigmoid(z_lo) - 1, torch.sigmoid(z_hi)
        else:
            d_lo, d_hi = torch.sigmoid(z_lo) - y, torch.sigmoid(z_hi) - y
        g_lo, g_hi = times(d_lo[:, None], d_hi[:, None], x_lo, x_hi)
        return (g_lo, g_hi), (d_lo, d_hi)
''' + _STEP_MEAN + _STEP_TAIL),
}
