"""Plausible wrong answers to ps1_gd_sgd that pass the visible tests but not the hidden ones.

Each entry: name -> (solution cell replaced, the one test cell it must fail, code).
tests/test_assignments.py autogrades each and checks it loses exactly that test's points.
"""

WRONG_ANSWERS = {
    "bug_gd_lr0": ("gd_step", "test_gd_step", """\
def gd_step(w: torch.Tensor, grad: torch.Tensor, lr: float) -> torch.Tensor:
    if lr < 0:  # BUG: lets lr = 0 through
        raise ValueError(f"lr must be > 0, got {lr}")
    if grad.shape != w.shape:
        raise ValueError(f"grad must have the shape of w {tuple(w.shape)}, got {tuple(grad.shape)}")
    return w - lr * grad
"""),
    "bug_sgd_fixed_batch": ("sgd", "test_sgd", """\
def sgd(problem, w0: torch.Tensor, lr: float, steps: int, batch_size: int,
        generator: torch.Generator) -> torch.Tensor:
    n = problem.n
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, n={n}], got {batch_size}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    idx = torch.randperm(n, generator=generator)[:batch_size]  # BUG: one minibatch drawn once, reused at every step
    w = w0.clone()
    path = [w]
    for _ in range(steps):
        w = gd_step(w, problem.grad(w, idx), lr)
        path.append(w)
    return torch.stack(path)
"""),
    "bug_stats_sample_mean": ("minibatch_gradient_stats", "test_minibatch_gradient_stats", """\
def minibatch_gradient_stats(problem, w: torch.Tensor, batch_size: int, draws: int,
                             generator: torch.Generator) -> tuple[torch.Tensor, float]:
    grads = torch.stack([problem.grad(w, torch.randperm(problem.n, generator=generator)[:batch_size])
                         for _ in range(draws)])
    mean = grads.mean(0)
    return mean, float((grads - mean).pow(2).sum(1).mean())  # BUG: spread around the sample mean, not the full gradient
"""),
    "bug_lr_max_diagonal": ("max_stable_lr", "test_max_stable_lr", """\
def max_stable_lr(A: torch.Tensor) -> float:
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square (d, d) matrix, got shape {tuple(A.shape)}")
    if not torch.allclose(A, A.T, atol=1e-6):
        raise ValueError("A must be symmetric")
    return 2.0 / float(A.diagonal().max())  # BUG: the largest diagonal entry is not the largest eigenvalue
"""),
}
