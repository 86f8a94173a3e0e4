"""Small objectives whose answers are known in closed form (lecture 1).

* :class:`Quadratic`: ``F(w) = 1/2 (w - w_star)^T A (w - w_star)``; gradient
  descent on it converges iff ``0 < lr < 2 / L`` with ``L = lambda_max(A)``.
* :class:`LeastSquares`: ``F(w) = 1/(2n) sum_i (x_i^T w - y_i)^2``, a finite sum,
  so a minibatch gives an unbiased stochastic gradient.

Both take ``w`` of shape (d,) for gradients and (..., d) for losses, so a whole
grid of points can be evaluated at once for contour plots.
"""

from __future__ import annotations

import torch
from torch import Tensor

from course_lib import _checks


def _check_points(w: Tensor, d: int, name: str = "w") -> None:
    if not isinstance(w, Tensor) or w.ndim < 1 or w.shape[-1] != d:
        shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
        raise ValueError(f"{name} must be a tensor with last dimension {d}, got {shape}")


class Quadratic:
    """``F(w) = 1/2 (w - w_star)^T A (w - w_star)`` with ``A`` symmetric positive semidefinite.

    Args:
        A: (d, d) symmetric PSD matrix.
        w_star: (d,) minimizer; default zero.

    Examples:
        >>> q = Quadratic(torch.diag(torch.tensor([1.0, 4.0])), torch.zeros(2))
        >>> q.L, q.loss(torch.tensor([1.0, 1.0])).item(), q.grad(torch.tensor([1.0, 1.0]))
        (4.0, 2.5, tensor([1., 4.]))
    """

    def __init__(self, A: Tensor, w_star: Tensor | None = None) -> None:
        if not isinstance(A, Tensor) or A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be a square (d, d) tensor, got {getattr(A, 'shape', A)!r}")
        if not torch.allclose(A, A.T, atol=1e-6):
            raise ValueError("A must be symmetric")
        eig = torch.linalg.eigvalsh(A.double())
        if eig.min() < -1e-8:
            raise ValueError(f"A must be positive semidefinite; its smallest eigenvalue is {eig.min():.3g}")
        self.A = A
        self.w_star = torch.zeros(A.shape[0], dtype=A.dtype) if w_star is None else w_star
        _check_points(self.w_star, A.shape[0], "w_star")
        self.L = float(eig.max())  # smoothness: the largest curvature
        self.mu = float(eig.min())  # strong convexity: the smallest curvature

    @property
    def dim(self) -> int:
        return self.A.shape[0]

    def loss(self, w: Tensor) -> Tensor:
        """F at points (..., d); returns shape (...)."""
        _check_points(w, self.dim)
        z = w - self.w_star
        return 0.5 * torch.einsum("...i,ij,...j->...", z, self.A, z)

    def grad(self, w: Tensor, idx: Tensor | None = None) -> Tensor:
        """``A (w - w_star)`` at one point (d,); ``idx`` is ignored (no data)."""
        _check_points(w, self.dim)
        return (w - self.w_star) @ self.A.T


class LeastSquares:
    """Linear regression loss ``F(w) = 1/(2n) ||X w - y||^2``.

    Args:
        X: (n, d) inputs.
        y: (n,) targets.

    Examples:
        >>> ls = LeastSquares(torch.eye(2), torch.tensor([1.0, 2.0]))
        >>> ls.n, ls.loss(torch.zeros(2)).item(), ls.grad(torch.zeros(2), torch.tensor([1]))
        (2, 1.25, tensor([ 0., -2.]))
    """

    def __init__(self, X: Tensor, y: Tensor) -> None:
        if not isinstance(X, Tensor) or X.ndim != 2 or X.shape[0] < 1:
            raise ValueError(f"X must be a non-empty (n, d) tensor, got {getattr(X, 'shape', X)!r}")
        if not isinstance(y, Tensor) or y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {getattr(y, 'shape', y)!r}")
        self.X, self.y = X, y
        hessian = X.T @ X / X.shape[0]
        self.L = float(torch.linalg.eigvalsh(hessian.double()).max())
        self.w_star = torch.linalg.lstsq(X.double(), y.double().unsqueeze(1)).solution.squeeze(1).to(X.dtype)

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def dim(self) -> int:
        return self.X.shape[1]

    def loss(self, w: Tensor, idx: Tensor | None = None) -> Tensor:
        """Mean loss over examples ``idx`` (default all) at points (..., d); shape (...)."""
        _check_points(w, self.dim)
        X, y = (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])
        residual = w @ X.T - y  # (..., n)
        return 0.5 * residual.pow(2).mean(-1)

    def grad(self, w: Tensor, idx: Tensor | None = None) -> Tensor:
        """Gradient at one point (d,) of the mean loss over ``idx`` (default all); shape (d,)."""
        _check_points(w, self.dim)
        if w.ndim != 1:
            raise ValueError(f"grad takes one point w of shape ({self.dim},), got {tuple(w.shape)}")
        X, y = (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])
        return X.T @ (X @ w - y) / X.shape[0]


def make_regression_2d(n: int = 200, *, noise: float = 0.5, seed: int = 0) -> LeastSquares:
    """A 2-parameter least-squares problem with an elongated (ill-conditioned) landscape.

    Inputs have standard deviations 1 and 0.3 (condition number about 11), the true
    weights are (2, -1), and targets carry Gaussian noise of std ``noise``.

    Examples:
        >>> problem = make_regression_2d(n=100, noise=0.1)
        >>> problem.n, problem.dim
        (100, 2)
    """
    n = _checks.integer(n, "n", ge=2)
    noise = _checks.number(noise, "noise", ge=0)
    gen = torch.Generator().manual_seed(_checks.integer(seed, "seed", ge=0))
    X = torch.randn(n, 2, generator=gen) * torch.tensor([1.0, 0.3])
    y = X @ torch.tensor([2.0, -1.0]) + noise * torch.randn(n, generator=gen)
    return LeastSquares(X, y)
