"""Plausible wrong answers to ps8_black_box that pass the visible tests but not the hidden ones.

Each entry: name -> (solution cell replaced, the one test cell it must fail, code).
tests/grading/test_assignments.py autogrades each and checks it loses exactly that test's points.
The visible tests check the estimate's formula on one example only and trust the query count it
reports; give every example a budget away from the cost of a step; start the step from x_adv = x
with points away from 0 and 1; and check BPDA's attack by its effect (it breaks the defence), not
step by step. The hidden tests do all of that: several examples, counted queries, budgets equal to
q and q + 1, x_adv inside the ball, pixels at 0 and 1, and the iterates of the reference BPDA PGD.
"""

_ZO_HEAD = '''\
def zo_gradient_estimate(loss_fn, x, num_queries, mu, generator=None):
    if num_queries < 1:
        raise ValueError(f"num_queries must be >= 1, got {num_queries}")
    if mu <= 0:
        raise ValueError(f"mu must be > 0, got {mu}")
'''

_STEP_HEAD = '''\
def zo_sign_step(model, x_adv, x, y, eps, alpha, budget, num_queries, mu, generator=None, estimator=None):
    estimator = zo_gradient_estimate if estimator is None else estimator
'''

_BPDA_HEAD = '''\
def bpda_pgd(defence, x, y, eps, alpha, steps):
    x = x.detach()
    x_adv = x.clone()
'''

WRONG_ANSWERS = {
    "bug_zo_one_direction_for_the_whole_batch": ("zo_gradient_estimate", "test_zo_gradient_estimate", _ZO_HEAD + '''\
    # BUG: one set of directions shared by every example of the batch, not one per example
    u = torch.randn(num_queries, *x.shape[1:], generator=generator, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        fx = loss_fn(x)
        grad = torch.zeros_like(x)
        for i in range(num_queries):
            diff = loss_fn(x + mu * u[i]) - fx
            grad += diff.view(-1, *[1] * (x.dim() - 1)) * u[i]
    return grad / (num_queries * mu), num_queries + 1
'''),
    "bug_zo_queries_f_x_for_every_direction": ("zo_gradient_estimate", "test_zo_gradient_estimate", _ZO_HEAD + '''\
    u = torch.randn(num_queries, *x.shape, generator=generator, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        grad = torch.zeros_like(x)
        for i in range(num_queries):
            diff = loss_fn(x + mu * u[i]) - loss_fn(x)  # BUG: f(x) queried again for every direction (2q queries)
            grad += diff.view(-1, *[1] * (x.dim() - 1)) * u[i]
    return grad / (num_queries * mu), num_queries + 1
'''),
    "bug_step_ball_around_x_adv": ("zo_sign_step", "test_zo_sign_step", _STEP_HEAD + '''\
    x_new, used = x_adv.clone(), torch.zeros(x.shape[0], dtype=torch.int64)
    active = (budget >= num_queries + 1).nonzero().flatten()
    if active.numel() == 0:
        return x_new, used
    y_active = y[active]

    def loss_fn(z):
        with torch.no_grad():
            return F.cross_entropy(model(z), y_active.repeat(len(z) // len(y_active)), reduction="none")

    grad, queries = estimator(loss_fn, x_adv[active], num_queries, mu, generator)
    stepped = x_adv[active] + alpha * grad.sign()
    # BUG: the ball around the current point, not around the clean input: it drifts step after step
    stepped = torch.minimum(torch.maximum(stepped, x_adv[active] - eps), x_adv[active] + eps).clamp(0, 1)
    x_new[active], used[active] = stepped, queries
    return x_new, used
'''),
    "bug_step_budget_forgets_the_query_at_x": ("zo_sign_step", "test_zo_sign_step", _STEP_HEAD + '''\
    x_new, used = x_adv.clone(), torch.zeros(x.shape[0], dtype=torch.int64)
    active = (budget >= num_queries).nonzero().flatten()  # BUG: a step costs q + 1 queries, not q
    if active.numel() == 0:
        return x_new, used
    y_active = y[active]

    def loss_fn(z):
        with torch.no_grad():
            return F.cross_entropy(model(z), y_active.repeat(len(z) // len(y_active)), reduction="none")

    grad, queries = estimator(loss_fn, x_adv[active], num_queries, mu, generator)
    stepped = x_adv[active] + alpha * grad.sign()
    stepped = torch.minimum(torch.maximum(stepped, x[active] - eps), x[active] + eps).clamp(0, 1)
    x_new[active], used[active] = stepped, queries
    return x_new, used
'''),
    "bug_step_no_clip_to_unit_box": ("zo_sign_step", "test_zo_sign_step", _STEP_HEAD + '''\
    x_new, used = x_adv.clone(), torch.zeros(x.shape[0], dtype=torch.int64)
    active = (budget >= num_queries + 1).nonzero().flatten()
    if active.numel() == 0:
        return x_new, used
    y_active = y[active]

    def loss_fn(z):
        with torch.no_grad():
            return F.cross_entropy(model(z), y_active.repeat(len(z) // len(y_active)), reduction="none")

    grad, queries = estimator(loss_fn, x_adv[active], num_queries, mu, generator)
    stepped = x_adv[active] + alpha * grad.sign()
    stepped = torch.minimum(torch.maximum(stepped, x[active] - eps), x[active] + eps)  # BUG: may leave [0, 1]
    x_new[active], used[active] = stepped, queries
    return x_new, used
'''),
    "bug_bpda_gradient_at_x_adv": ("bpda_pgd", "test_bpda_pgd", _BPDA_HEAD + '''\
    for _ in range(steps):
        z = x_adv.clone().requires_grad_(True)
        # BUG: the base model's gradient at x_adv, not at the preprocessed point the defence classifies
        (grad,) = torch.autograd.grad(F.cross_entropy(defence.model(z), y), z)
        x_adv = torch.minimum(torch.maximum(x_adv + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv
'''),
    "bug_bpda_projects_only_at_the_end": ("bpda_pgd", "test_bpda_pgd", _BPDA_HEAD + '''\
    for _ in range(steps):
        with torch.no_grad():
            z = defence.preprocess(x_adv)
        z.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(defence.model(z), y), z)
        x_adv = x_adv + alpha * grad.sign()  # BUG: no projection between the steps
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0, 1)
'''),
}
