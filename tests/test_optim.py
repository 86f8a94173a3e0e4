import math

import pytest
import torch
from torch import nn

from course_lib import objectives, optim

pytestmark = pytest.mark.optim


def _random_quadratic(seed, d=3):
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    eig = torch.rand(d, generator=gen, dtype=torch.float64) * 4 + 0.1
    return objectives.Quadratic(Q @ torch.diag(eig) @ Q.T, torch.randn(d, generator=gen, dtype=torch.float64)), eig


def test_gd_step_is_w_minus_lr_grad_and_pure():
    w, g = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 4.0])
    new = optim.gd_step(w, g, 0.25)
    torch.testing.assert_close(new, torch.tensor([0.875, -3.0]))
    assert w.tolist() == [1.0, -2.0]  # not modified in place


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_lr_is_rejected_everywhere(lr):
    w = torch.zeros(2)
    with pytest.raises(ValueError, match="lr"):
        optim.gd_step(w, w, lr)
    if lr != 0:  # the optimizer class, like torch.optim.SGD, takes lr = 0 (a warm-up from 0)
        with pytest.raises(ValueError, match="lr"):
            optim.SGD([nn.Parameter(w)], lr=lr)
    with pytest.raises(ValueError, match="lr"):
        optim.gd_path(lambda w, idx: w, w, lr, 3)


def test_sgd_takes_a_scheduler_warm_up_from_zero_and_numpy_or_tensor_rates_like_torch():
    import numpy as np

    for lr in (0.1, np.float32(0.1), torch.tensor(0.1)):
        torch.manual_seed(0)
        ours, ref = nn.Linear(3, 2), nn.Linear(3, 2)
        ref.load_state_dict(ours.state_dict())
        opts = [optim.SGD(ours.parameters(), lr=lr, momentum=0.9),
                torch.optim.SGD(ref.parameters(), lr=float(lr), momentum=0.9)]
        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda t: min(1.0, t / 3)) for o in opts]
        x = torch.randn(8, 3)
        for _ in range(5):  # the first step runs at lr = 0
            for model, opt, sched in zip((ours, ref), opts, schedulers):
                opt.zero_grad()
                model(x).square().sum().backward()
                opt.step()
                sched.step()
        for a, b in zip(ours.parameters(), ref.parameters()):
            torch.testing.assert_close(a, b)


def test_shape_mismatch_and_bad_momentum_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        optim.gd_step(torch.zeros(3), torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="momentum"):
        optim.momentum_step(torch.zeros(2), torch.zeros(2), torch.zeros(2), 0.1, 1.0)
    with pytest.raises(ValueError, match="shape"):
        optim.gd_path(lambda w, idx: torch.zeros(5), torch.zeros(2), 0.1, 2)
    with pytest.raises(ValueError, match="steps"):
        optim.gd_path(lambda w, idx: w, torch.zeros(2), 0.1, -1)
    with pytest.raises(ValueError, match="n "):
        optim.sgd_path(lambda w, idx: w, torch.zeros(2), 0.1, 2, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        optim.sgd_path(lambda w, idx: w, torch.zeros(2), 0.1, 2, n=3, batch_size=4)


@pytest.mark.parametrize("seed", range(10))
def test_gd_on_quadratic_matches_closed_form(seed):
    """On F = 1/2 (w-w*)^T A (w-w*), GD gives w_t - w* = (I - lr A)^t (w_0 - w*)."""
    q, eig = _random_quadratic(seed)
    lr = 1.5 / eig.max().item()
    w0 = torch.randn(3, dtype=torch.float64, generator=torch.Generator().manual_seed(100 + seed))
    path = optim.gd_path(q.grad, w0, lr, 25)
    step = torch.eye(3, dtype=torch.float64) - lr * q.A
    for t in (0, 1, 7, 25):
        torch.testing.assert_close(path[t], q.w_star + torch.linalg.matrix_power(step, t) @ (w0 - q.w_star))


def test_gd_converges_below_two_over_L_and_diverges_above():
    q, eig = _random_quadratic(0)
    L = eig.max().item()
    w0 = torch.ones(3, dtype=torch.float64)
    assert abs(q.L - L) < 1e-9
    below = optim.gd_path(q.grad, w0, 1.9 / L, 400)
    above = optim.gd_path(q.grad, w0, 2.1 / L, 400)
    assert (below[-1] - q.w_star).norm() < 1e-6
    assert (above[-1] - q.w_star).norm() > 1e6


@pytest.mark.parametrize("seed", range(5))
def test_momentum_path_matches_torch_sgd(seed):
    q, _ = _random_quadratic(seed)
    w0 = torch.randn(3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    path = optim.gd_path(q.grad, w0, 0.05, 30, momentum=0.9)
    p = nn.Parameter(w0.clone())
    ref = torch.optim.SGD([p], lr=0.05, momentum=0.9)
    for t in range(30):
        ref.zero_grad()
        q.loss(p).backward()
        ref.step()
    torch.testing.assert_close(path[-1], p.detach())


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_sgd_optimizer_matches_torch_on_a_module(momentum):
    torch.manual_seed(0)
    ours, ref = nn.Linear(4, 3), nn.Linear(4, 3)
    ref.load_state_dict(ours.state_dict())
    opt_ours = optim.SGD(ours.parameters(), lr=0.1, momentum=momentum)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=momentum)
    for step in range(8):
        x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
        for model, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)


def test_sgd_optimizer_skips_params_without_grad_and_runs_closure():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = optim.SGD([a, b], lr=0.5)

    def closure():
        opt.zero_grad()
        loss = (a ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 2.0
    assert a.tolist() == [0.0, 0.0] and b.tolist() == [1.0, 1.0]


def test_minibatch_sampling_is_uniform_without_replacement():
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(10)
    trials = 4000
    for _ in range(trials):
        idx = optim.sample_minibatch(10, 3, gen)
        assert len(set(idx.tolist())) == 3
        counts[idx] += 1
    # each index is drawn with probability 3/10; 5 standard errors of slack
    p = 3 / 10
    assert torch.all((counts / trials - p).abs() < 5 * math.sqrt(p * (1 - p) / trials))


def test_stochastic_gradient_is_unbiased():
    problem = objectives.make_regression_2d(50, seed=1)
    w = torch.tensor([0.3, 0.7])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([problem.grad(w, optim.sample_minibatch(50, 5, gen)) for _ in range(20000)])
    full = problem.grad(w)
    # the sample mean is within 4 standard errors of the full gradient, coordinate-wise
    se = draws.std(0) / math.sqrt(len(draws))
    assert torch.all((draws.mean(0) - full).abs() < 4 * se)


def test_sgd_path_full_batch_equals_gd_and_minibatch_is_seeded():
    problem = objectives.make_regression_2d(40)
    w0 = torch.zeros(2)
    torch.testing.assert_close(optim.sgd_path(problem.grad, w0, 0.3, 10, n=40, batch_size=40),
                               optim.gd_path(problem.grad, w0, 0.3, 10))
    a = optim.sgd_path(problem.grad, w0, 0.3, 10, n=40, batch_size=4, generator=torch.Generator().manual_seed(7))
    b = optim.sgd_path(problem.grad, w0, 0.3, 10, n=40, batch_size=4, generator=torch.Generator().manual_seed(7))
    assert a.shape == (11, 2) and torch.equal(a, b) and torch.equal(a[0], w0)


def test_sgd_reaches_a_noise_ball_around_the_minimizer():
    problem = objectives.make_regression_2d(200, seed=0)
    path = optim.sgd_path(problem.grad, torch.zeros(2), 0.1, 2000, n=200, batch_size=10,
                          generator=torch.Generator().manual_seed(0))
    tail = path[1000:]
    assert (tail.mean(0) - problem.w_star).norm() < 0.05
    assert problem.loss(path[-1]) < problem.loss(torch.zeros(2)) / 5


def test_sample_minibatch_takes_numpy_integers_and_refuses_bools():
    import numpy as np

    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(optim.sample_minibatch(np.int64(10), np.int64(3), g1), optim.sample_minibatch(10, 3, g2))
    with pytest.raises(ValueError, match=r"\bn must be an integer >= 1"):
        optim.sample_minibatch(True, 1)


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases():
    problem = objectives.make_regression_2d(n=20)
    w, g = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 4.0])

    def close(a, b):
        return torch.allclose(a, b, atol=1e-5)

    def path(**kw):
        args = dict(lr=0.1, steps=4, n=20, batch_size=5, generator=torch.Generator().manual_seed(0)) | kw
        return optim.sgd_path(problem.grad, torch.zeros(2), **args)

    def sgd_lr(**kw):
        layer = nn.Linear(2, 1)
        return optim.SGD(layer.parameters(), **(dict(lr=0.1) | kw)).param_groups[0]["lr"]

    def minibatch(n=10, batch_size=3):
        return optim.sample_minibatch(n, batch_size, torch.Generator().manual_seed(0))

    return [
        (lambda v: optim.gd_step(w, g, v), "lr", 0.25, close),
        (lambda v: optim.momentum_step(w, w, g, v, 0.5)[0], "lr", 0.25, close),
        (lambda v: optim.momentum_step(w, w, g, 0.1, v)[0], "momentum", 0.5, close),
        (lambda v: minibatch(n=v), "n", 10, torch.equal),
        (lambda v: minibatch(batch_size=v), "batch_size", 3, torch.equal),
        (lambda v: path(lr=v), "lr", 0.1, close),
        (lambda v: path(steps=v), "steps", 4, torch.equal),
        (lambda v: path(n=v), "n", 20, torch.equal),
        (lambda v: path(batch_size=v), "batch_size", 5, torch.equal),
        (lambda v: path(momentum=v), "momentum", 0.5, close),
        (lambda v: optim.gd_path(problem.grad, torch.zeros(2), 0.1, v), "steps", 4, torch.equal),
        (lambda v: optim.gd_path(problem.grad, torch.zeros(2), v, 4), "lr", 0.1, close),
        (lambda v: optim.gd_path(problem.grad, torch.zeros(2), 0.1, 4, momentum=v), "momentum", 0.5, close),
        (lambda v: sgd_lr(lr=v), "lr", 0.1, lambda a, b: a == pytest.approx(b)),
        (lambda v: sgd_lr(momentum=v), "momentum", 0.5, None),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(optim).failed == 0
