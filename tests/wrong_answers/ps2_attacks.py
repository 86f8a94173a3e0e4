"""Plausible wrong answers to ps2_attacks that pass the visible tests but not the hidden ones.

Each entry: name -> (solution cell replaced, the one test cell it must fail, code).
tests/test_assignments.py autogrades each and checks it loses exactly that test's points.
The visible tests attack images in the middle of the grey range with small radii, where the
box [0, 1] never binds, and batches of one where a per-example norm equals the batch's; the
hidden tests use pixels at exactly 0 and 1, and batches of several examples.
"""

WRONG_ANSWERS = {
    "bug_fgsm_no_box": ("fgsm", "test_fgsm", '''\
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
         targeted: bool = False) -> torch.Tensor:
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    x_var = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_var), y), x_var)
    step = -eps if targeted else eps
    return x.detach() + step * grad.sign()  # BUG: not clipped to [0, 1]; pixels at 0 or 1 leave the box
'''),
    "bug_pgd_linf_box_at_end": ("pgd_linf", "test_pgd_linf", '''\
def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
             steps: int, random_start: bool = False,
             generator: torch.Generator | None = None) -> torch.Tensor:
    if eps < 0 or alpha <= 0 or steps < 1:
        raise ValueError(f"need eps >= 0, alpha > 0, steps >= 1; got eps={eps}, alpha={alpha}, steps={steps}")
    x = x.detach()
    delta = torch.zeros_like(x)
    if random_start:
        delta = (2 * torch.rand(x.shape, generator=generator, dtype=x.dtype) - 1) * eps
    for _ in range(steps):
        x_var = (x + delta).requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_var), y), x_var)
        delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1)  # BUG: clipped to the box once, at the end: the steps saw images outside [0, 1]
'''),
    "bug_project_l2_per_pixel": ("project_l2", "test_project_l2", '''\
def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    return delta.clamp(-eps, eps)  # BUG: clips each pixel (the L-inf projection), not the example's L2 norm
'''),
    "bug_pgd_l2_batch_norm": ("pgd_l2", "test_pgd_l2", '''\
def pgd_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
           steps: int, project=None) -> torch.Tensor:
    project = project_l2 if project is None else project
    if eps < 0 or alpha <= 0 or steps < 1:
        raise ValueError(f"need eps >= 0, alpha > 0, steps >= 1; got eps={eps}, alpha={alpha}, steps={steps}")
    x = x.detach()
    x_adv = x.clone()
    for _ in range(steps):
        x_var = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_var), y), x_var)
        x_adv = x_adv + alpha * grad / grad.norm().clamp_min(1e-12)  # BUG: the whole batch's norm, not each example's
        x_adv = (x + project(x_adv - x, eps)).clamp(0, 1)
    return x_adv
'''),
}
