import pytest
import torch

from course_lib import objectives

pytestmark = pytest.mark.optim


@pytest.mark.parametrize("seed", range(5))
def test_gradients_match_autograd(seed):
    gen = torch.Generator().manual_seed(seed)
    X, y = torch.randn(30, 3, generator=gen, dtype=torch.float64), torch.randn(30, generator=gen, dtype=torch.float64)
    ls = objectives.LeastSquares(X, y)
    w = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([0, 4, 9])
    for subset in (None, idx):
        (auto,) = torch.autograd.grad(ls.loss(w, subset), w)
        torch.testing.assert_close(ls.grad(w.detach(), subset), auto)
    A = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    q = objectives.Quadratic(A @ A.T, torch.randn(3, generator=gen, dtype=torch.float64))
    (auto,) = torch.autograd.grad(q.loss(w), w)
    torch.testing.assert_close(q.grad(w.detach()), auto)


def test_least_squares_minimizer_and_smoothness():
    ls = objectives.make_regression_2d(500, noise=0.0)
    torch.testing.assert_close(ls.w_star, torch.tensor([2.0, -1.0]), atol=1e-4, rtol=0)
    assert ls.grad(ls.w_star).norm() < 1e-4
    H = ls.X.T @ ls.X / ls.n
    assert abs(ls.L - torch.linalg.eigvalsh(H).max().item()) < 1e-4


def test_loss_evaluates_a_grid_of_points():
    ls = objectives.make_regression_2d(20)
    grid = torch.randn(4, 5, 2)
    values = ls.loss(grid)
    assert values.shape == (4, 5)
    torch.testing.assert_close(values[1, 2], ls.loss(grid[1, 2]))


def test_bad_input():
    with pytest.raises(ValueError, match="symmetric"):
        objectives.Quadratic(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="semidefinite"):
        objectives.Quadratic(torch.diag(torch.tensor([1.0, -1.0])))
    with pytest.raises(ValueError, match="y must"):
        objectives.LeastSquares(torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="X must"):
        objectives.LeastSquares(torch.zeros(0, 2), torch.zeros(0))
    with pytest.raises(ValueError, match="w must"):
        objectives.make_regression_2d(10).grad(torch.zeros(3))


@pytest.mark.parametrize("noise", [-0.1, float("nan"), float("inf"), "0.5"])
def test_make_regression_2d_rejects_bad_noise(noise):
    with pytest.raises(ValueError, match="noise"):
        objectives.make_regression_2d(50, noise=noise)


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases():
    def X(**kw):
        return objectives.make_regression_2d(**(dict(n=20) | kw)).X

    def close(a, b):
        return torch.allclose(a, b, atol=1e-6)

    return [
        (lambda v: X(n=v), "n", 20, torch.equal),
        (lambda v: objectives.make_regression_2d(n=20, noise=v).y, "noise", 0.5, close),
        (lambda v: X(seed=v), "seed", 3, torch.equal),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(objectives).failed == 0
