import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import attacks, models, train
from course_lib.data import load_dataset
from strategies import image_batch, small_model

pytestmark = pytest.mark.attacks

TOL = 1e-6  # float32 rounding of (x + delta) - x


_random_model = small_model
_batch = image_batch


def _check_ball_and_box(x, x_adv, eps, norm):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + TOL
    else:
        assert (delta.norm(dim=1) <= eps * (1 + 1e-5) + TOL).all()


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("norm", attacks.NORMS)
def test_pgd_stays_in_ball_and_box(seed, norm):
    kind = "cnn" if seed % 2 else "mlp"
    model = _random_model(seed, kind)
    x, y = _batch(seed)
    gen = torch.Generator().manual_seed(seed)
    eps = [0.0, 0.03, 0.3, 1.0, 3.0][seed % 5]
    alpha = [0.01, 0.1, 1.0][seed % 3]
    x_before = x.clone()
    for targeted in (False, True):
        for random_start in (False, True):
            x_adv = attacks.pgd(model, x, y, eps, alpha, steps=1 + seed % 4, norm=norm,
                                random_start=random_start, targeted=targeted, generator=gen)
            _check_ball_and_box(x, x_adv, eps, norm)
    assert torch.equal(x, x_before)  # the input is never modified in place


@pytest.mark.parametrize("seed", range(10))
def test_fgsm_stays_in_ball_and_box_and_moves_every_free_pixel_by_eps(seed):
    model = _random_model(seed, "mlp")
    x, y = _batch(seed)
    eps = 0.05
    x_adv = attacks.fgsm(model, x, y, eps)
    _check_ball_and_box(x, x_adv, eps, "linf")
    free = (x > eps) & (x < 1 - eps)  # pixels the box does not constrain
    moved = (x_adv - x).abs()
    grad_nonzero = attacks._input_gradient(model, x, y) != 0
    torch.testing.assert_close(moved[free & grad_nonzero], torch.full_like(moved[free & grad_nonzero], eps))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("targeted", [False, True])
def test_one_step_pgd_without_random_start_is_fgsm(seed, targeted):
    model = _random_model(seed, "cnn")
    x, y = _batch(seed)
    eps = 0.1
    torch.testing.assert_close(
        attacks.pgd(model, x, y, eps, alpha=eps, steps=1, random_start=False, targeted=targeted),
        attacks.fgsm(model, x, y, eps, targeted=targeted))


def test_l2_projection_closed_form():
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(50, 3, 4, 4, generator=gen)
    eps = 2.0
    out = attacks.project(delta, eps, "l2")
    norms = delta.flatten(1).norm(dim=1)
    for d, o, n in zip(delta, out, norms):
        expected = d if n <= eps else d * (eps / n)  # inside: unchanged; outside: radial rescaling
        torch.testing.assert_close(o, expected)
    # it is the nearest point of the ball: no random point of the ball is closer
    for d, o in zip(delta[:5], out[:5]):
        pts = attacks.project(torch.randn(2000, *d.shape, generator=gen) * 2, eps, "l2")
        assert ((pts - d).flatten(1).norm(dim=1) >= (o - d).norm() - 1e-5).all()
    torch.testing.assert_close(attacks.project(delta, 0.5, "linf"), delta.clamp(-0.5, 0.5))


@pytest.mark.parametrize("seed", range(5))
def test_l2_step_closed_form(seed):
    """Away from the box and the sphere, one L2 step is x + alpha * g / ||g||_2 per example."""
    model = _random_model(seed, "mlp")
    gen = torch.Generator().manual_seed(seed)
    x = 0.4 + 0.2 * torch.rand(6, 1, 6, 6, generator=gen)
    y = torch.randint(0, 4, (6,), generator=gen)
    alpha = 0.05
    xr = x.clone().requires_grad_(True)
    g = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)[0]
    expected = x + alpha * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    got = attacks.pgd(model, x, y, eps=10.0, alpha=alpha, steps=1, norm="l2", random_start=False)
    torch.testing.assert_close(got, expected)


def test_l2_pgd_on_a_linear_model_reaches_the_closed_form_optimum():
    """Binary linear model: the worst L2 perturbation is eps along w_wrong - w_true."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x = 0.4 + 0.2 * torch.rand(5, 1, 4, 4)  # far enough from the box for eps = 0.1
    y = torch.randint(0, 2, (5,))
    eps = 0.1
    got = attacks.pgd(model, x, y, eps, alpha=0.05, steps=30, norm="l2", random_start=False)
    w = model[1].weight.detach()
    u = (w[1 - y] - w[y]).view(5, 1, 4, 4)
    expected = x + eps * u / u.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_fgsm_is_optimal_for_a_binary_linear_model():
    """FGSM's loss equals the exact L-inf worst case x + eps * sign(w_wrong - w_true)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    x = 0.3 + 0.4 * torch.rand(20, 1, 8, 8)
    y = torch.randint(0, 2, (20,))
    eps = 0.05
    w = model[1].weight.detach()
    worst = x + eps * (w[1 - y] - w[y]).sign().view(20, 1, 8, 8)
    loss = lambda xa: F.cross_entropy(model(xa), y, reduction="none")
    with torch.no_grad():
        torch.testing.assert_close(loss(attacks.fgsm(model, x, y, eps)), loss(worst))
        assert (loss(attacks.pgd(model, x, y, eps, eps / 4, 20)) <= loss(worst) + 1e-5).all()


@pytest.fixture(scope="module")
def trained_digits():
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = models.mlp(data.input_shape, 10, hidden=(64,))
    train.train(model, data.loaders(64)[0], epochs=8, lr=1e-2, progress=False)
    return model.eval(), data.test.tensors


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_pgd_is_at_least_as_strong_as_fgsm_on_a_trained_model(trained_digits, norm, eps):
    model, (x, y) = trained_digits
    clean = attacks.accuracy_under_attack(model, (x, y), None)
    one_step = functools.partial(attacks.pgd, eps=eps, alpha=eps, steps=1, norm=norm, random_start=False)
    many = functools.partial(attacks.pgd, eps=eps, alpha=eps / 4, steps=20, norm=norm,
                             generator=torch.Generator().manual_seed(0))
    acc_one = attacks.accuracy_under_attack(model, (x, y), one_step)
    acc_pgd = attacks.accuracy_under_attack(model, (x, y), many)
    assert clean > 0.9
    assert acc_pgd <= acc_one < clean
    if norm == "linf":
        assert acc_one == attacks.accuracy_under_attack(model, (x, y), functools.partial(attacks.fgsm, eps=eps))


def test_targeted_attack_raises_the_target_score(trained_digits):
    model, (x, y) = trained_digits
    x, y = x[:100], y[:100]
    target = (y + 1) % 10
    with torch.no_grad():
        before = F.log_softmax(model(x), 1).gather(1, target[:, None]).squeeze(1)
    x_adv = attacks.pgd(model, x, target, 0.2, 0.02, 20, targeted=True, random_start=False)
    with torch.no_grad():
        after = F.log_softmax(model(x_adv), 1).gather(1, target[:, None]).squeeze(1)
        hits = (model(x_adv).argmax(1) == target).float().mean()
    assert (after > before).all()
    assert hits > 0.5
    fgsm_adv = attacks.fgsm(model, x, target, 0.05, targeted=True)
    with torch.no_grad():
        assert F.log_softmax(model(fgsm_adv), 1).gather(1, target[:, None]).mean() > before.mean()


def test_model_mode_grads_and_no_grad_context_are_respected(trained_digits):
    model, (x, y) = trained_digits
    for mode in (True, False):
        model.train(mode)
        for p in model.parameters():
            p.grad = None
        with torch.no_grad():  # attacks enable gradients themselves
            x_adv = attacks.pgd(model, x[:10], y[:10], 0.1, 0.02, 3)
        assert model.training is mode
        assert all(p.grad is None for p in model.parameters())
        assert not x_adv.requires_grad
    model.eval()


def test_random_start_is_seeded_and_uniform_enough():
    model = _random_model(0, "mlp")
    x, y = _batch(0, n=4)
    x = x.clamp(0.2, 0.8)
    run = lambda seed: attacks.pgd(model, x, y, 0.1, 1e-6, 1, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))
    start = attacks._random_start(torch.zeros(20000, 2), 1.0, "l2", torch.Generator().manual_seed(0))
    r = start.norm(dim=1)
    # uniform in the unit disc: P(r <= 1/2) = 1/4
    assert abs((r <= 0.5).float().mean().item() - 0.25) < 0.02 and r.max() <= 1 + 1e-6


def test_accuracy_under_attack_and_sweep(trained_digits):
    model, (x, y) = trained_digits
    with torch.no_grad():
        direct = (model(x).argmax(1) == y).float().mean().item()
    assert attacks.accuracy_under_attack(model, (x, y), None) == pytest.approx(direct)
    accs = attacks.epsilon_sweep(model, (x, y), attacks.fgsm, [0.0, 0.05, 0.2])
    assert accs[0] == pytest.approx(direct)
    assert accs[2] < accs[1] < accs[0]
    with pytest.raises(ValueError, match="no examples"):
        attacks.accuracy_under_attack(model, [], None)


@pytest.mark.parametrize("kwargs,match", [
    ({"eps": -0.1}, "eps"),
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": -1.0}, "alpha"),
    ({"steps": 0}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"norm": "l1"}, "norm"),
    ({"x": torch.full((4, 1, 6, 6), 1.5)}, "x must lie in"),
    ({"x": torch.full((4, 1, 6, 6), -0.1)}, "x must lie in"),
    ({"x": torch.full((4, 1, 6, 6), float("nan"))}, "x must lie in"),
    ({"y": torch.zeros(3, dtype=torch.int64)}, "y must have shape"),
    ({"y": torch.zeros(4)}, "y must be an int64"),
    ({"eps": float("nan")}, "eps"),
])
def test_bad_input_names_the_argument(kwargs, match):
    model = _random_model(0, "mlp")
    args = {"x": torch.rand(4, 1, 6, 6), "y": torch.zeros(4, dtype=torch.int64), "eps": 0.1,
            "alpha": 0.01, "steps": 3, "norm": "linf", **kwargs}
    with pytest.raises(ValueError, match=match):
        attacks.pgd(model, args["x"], args["y"], args["eps"], args["alpha"], args["steps"], norm=args["norm"])
    if set(kwargs) <= {"eps", "x", "y"}:
        with pytest.raises(ValueError, match=match):
            attacks.fgsm(model, args["x"], args["y"], args["eps"])


def test_eps_and_alpha_may_be_numpy_scalars_or_zero_dim_tensors():
    import numpy as np

    model = _random_model(0, "mlp")
    x, y = torch.rand(4, 1, 6, 6), torch.zeros(4, dtype=torch.int64)
    reference = attacks.pgd(model, x, y, 0.1, 0.02, 3, random_start=False)
    for eps, alpha in ((np.float32(0.1), np.float32(0.02)), (torch.tensor(0.1), torch.tensor(0.02))):
        got = attacks.pgd(model, x, y, eps, alpha, 3, random_start=False)
        torch.testing.assert_close(got, reference, rtol=0, atol=1e-7)  # eps as float32 differs by < 1e-8
    assert torch.equal(attacks.fgsm(model, x, y, np.float64(0.1)), attacks.fgsm(model, x, y, 0.1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_attacks_run_on_cuda_and_stay_there():
    model = _random_model(0, "cnn").cuda()
    x, y = _batch(0)
    x, y = x.cuda(), y.cuda()
    for norm in attacks.NORMS:
        x_adv = attacks.pgd(model, x, y, 0.1, 0.02, 5, norm=norm, generator=torch.Generator("cuda").manual_seed(0))
        assert x_adv.device == x.device
        _check_ball_and_box(x, x_adv, 0.1, norm)
    assert attacks.fgsm(model, x, y, 0.1).device == x.device


# ---------------------------------------------------------------- the margin loss (Carlini and Wagner 2017)

def test_margin_loss_gradient_matches_finite_differences():
    torch.manual_seed(0)
    logits = torch.randn(6, 5, dtype=torch.float64)  # distinct values: the max over j != y is unique
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    loss = attacks._loss(logits, y, "margin")
    others = logits.clone()
    others[torch.arange(6), y] = -math.inf
    expected = (others.max(1).values - logits[torch.arange(6), y]).sum()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    # its gradient, through a model, against central differences in float64
    model = _random_model(1, "mlp").double()
    x, y = _batch(1)
    x = x.double().clamp(0.1, 0.9)
    grad = attacks._input_gradient(model, x, y, "margin")
    h, flat = 1e-6, x.flatten()
    for i in torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:30].tolist():
        e = torch.zeros_like(flat)
        e[i] = h
        with torch.no_grad():
            fd = (attacks._loss(model((flat + e).view_as(x)), y, "margin")
                  - attacks._loss(model((flat - e).view_as(x)), y, "margin")) / (2 * h)
        assert grad.flatten()[i].item() == pytest.approx(fd.item(), abs=1e-6)
    # > 0 exactly when misclassified
    with torch.no_grad():
        z = model(x)
        per_example = torch.stack([attacks._loss(z[i:i + 1], y[i:i + 1], "margin") for i in range(len(y))])
    assert torch.equal(per_example > 0, z.argmax(1) != y)


@pytest.mark.parametrize("seed", range(5))
def test_loss_ce_is_the_default_bit_for_bit(seed):
    model = _random_model(seed, "cnn" if seed % 2 else "mlp")
    x, y = _batch(seed)
    for norm in attacks.NORMS:
        run = lambda **kw: attacks.pgd(model, x, y, 0.1, 0.03, 4, norm=norm,
                                       generator=torch.Generator().manual_seed(seed), **kw)
        assert torch.equal(run(), run(loss="ce"))
    assert torch.equal(attacks.fgsm(model, x, y, 0.1), attacks.fgsm(model, x, y, 0.1, loss="ce"))


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("norm", attacks.NORMS)
def test_margin_attacks_stay_in_ball_and_box(seed, norm):
    model = _random_model(seed, "cnn" if seed % 2 else "mlp")
    x, y = _batch(seed)
    eps = [0.0, 0.03, 0.3, 1.0, 3.0][seed % 5]
    gen = torch.Generator().manual_seed(seed)
    for targeted in (False, True):
        for random_start in (False, True):
            x_adv = attacks.pgd(model, x, y, eps, [0.01, 0.1, 1.0][seed % 3], steps=1 + seed % 4, norm=norm,
                                random_start=random_start, targeted=targeted, generator=gen, loss="margin")
            _check_ball_and_box(x, x_adv, eps, norm)
    if norm == "linf":
        _check_ball_and_box(x, attacks.fgsm(model, x, y, eps, loss="margin"), eps, "linf")


def test_margin_attack_succeeds_where_cross_entropy_saturates():
    """A two-class linear model whose float32 softmax is exactly (1, 0) at x.

    Logits z = W x + b on x in [0, 1]^16, true class 0, w_0 = a * ones, w_1 = 0, and a bias that
    puts the decision boundary at the pixel value 0.5 - eps/2: the margin z_0 - z_1 is
    ``a * 16 * (mean(x) - 0.5 + eps/2)``, i.e. a * 16 * eps/2 = 200 at x = 0.5, and -200 at x - eps,
    a point of the ball. exp(-200) is below float32's smallest subnormal (about exp(-103.3)), so
    softmax(z) rounds to exactly (1, 0), the logit gradient p - e_y is exactly 0, and so is the
    CE input gradient: the sign step is 0 and PGD from x (no random start) never moves. The
    margin's gradient is w_1 - w_0 = -a * ones whatever the scale, so each step lowers every pixel
    by alpha, and steps * alpha >= eps reaches x - eps, where the margin is -200 < 0.
    """
    d, eps, target_margin = 16, 0.1, 200.0
    a = target_margin / (d * eps / 2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.full((d,), a), torch.zeros(d)]))
        model[1].bias.copy_(torch.tensor([-a * d * (0.5 - eps / 2), 0.0]))
    x, y = torch.full((3, 1, 4, 4), 0.5), torch.zeros(3, dtype=torch.int64)
    with torch.no_grad():
        z = model(x)
        assert torch.equal(z.softmax(1), torch.tensor([[1.0, 0.0]] * 3))
        assert (z[:, 0] - z[:, 1] == target_margin).all()
    assert torch.equal(attacks._input_gradient(model, x, y), torch.zeros_like(x))  # the premise
    predict = lambda xa: model(xa).argmax(1)
    for attack in (lambda loss: attacks.pgd(model, x, y, eps, eps / 4, 10, random_start=False, loss=loss),
                   lambda loss: attacks.fgsm(model, x, y, eps, loss=loss)):
        x_ce, x_margin = attack("ce"), attack("margin")
        assert torch.equal(x_ce, x)  # CE: nothing to follow
        assert (predict(x_ce) == y).all()
        assert (predict(x_margin) != y).all()
        torch.testing.assert_close(x_margin, x - eps)
        _check_ball_and_box(x, x_margin, eps, "linf")


def test_bad_loss_names_the_argument():
    model = _random_model(0, "mlp")
    x, y = _batch(0)
    for bad in ("CE", "hinge", None, 1):
        with pytest.raises(ValueError, match="loss"):
            attacks.pgd(model, x, y, 0.1, 0.01, 2, loss=bad)
        with pytest.raises(ValueError, match="loss"):
            attacks.fgsm(model, x, y, 0.1, loss=bad)


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases():
    model = _random_model(0, "mlp")
    x, y = torch.rand(4, 1, 6, 6), torch.tensor([0, 1, 2, 3])
    delta = torch.randn(4, 1, 6, 6)
    eq = torch.equal

    def close(a, b):
        return torch.allclose(a, b, atol=1e-6)

    def pgd(**kw):
        args = dict(eps=0.1, alpha=0.02, steps=3, random_start=False) | kw
        return attacks.pgd(model, x, y, **args)

    return [
        (lambda v: attacks.project(delta, v), "eps", 0.1, close),
        (lambda v: attacks.project(delta, v, "l2"), "eps", 0.5, close),
        (lambda v: attacks.fgsm(model, x, y, v), "eps", 0.1, close),
        (lambda v: pgd(eps=v), "eps", 0.1, close),
        (lambda v: pgd(alpha=v), "alpha", 0.02, close),
        (lambda v: pgd(steps=v), "steps", 3, eq),
        (lambda v: attacks.epsilon_sweep(model, (x, y), attacks.fgsm, [v]), "eps", 0.1, list.__eq__),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(attacks).failed == 0
