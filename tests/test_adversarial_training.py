"""Adversarial training in course_lib.train: Danskin's batch loss, the eps ramp, the inner attacks."""

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib import attacks, data, models, train

pytestmark = pytest.mark.train


def _images(n=64, shape=(1, 4, 4), classes=3, seed=0, lo=0.0, hi=1.0):
    gen = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, *shape, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    return x, y


def _model(shape=(1, 4, 4), classes=3, seed=0, hidden=(8,)):
    torch.manual_seed(seed)
    return models.mlp(shape, classes, hidden=hidden)


# ---------------------------------------------------------------------------
# the loss is the cross-entropy at the attack's output
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(10))
def test_loss_and_logits_are_cross_entropy_at_the_attack_output(seed):
    x, y = _images(seed=seed)
    model = _model(seed=seed)
    eps = 0.05 + 0.2 * seed / 10
    loss_fn = train.adversarial_loss(attacks.fgsm, eps)  # FGSM is deterministic
    loss, logits = loss_fn(model, x, y)
    x_adv = attacks.fgsm(model, x, y, eps)
    with torch.no_grad():
        direct = model(x_adv)
    torch.testing.assert_close(logits.detach(), direct)
    torch.testing.assert_close(loss.detach(), F.cross_entropy(direct, y))
    assert loss.item() >= F.cross_entropy(model(x), y).item() - 1e-6  # the attack raised the loss


def test_pgd_attack_and_fgsm_rs_are_the_library_pgd_with_alpha_proportional_to_eps():
    x, y = _images(seed=3)
    model = _model(seed=3)
    for eps in (0.1, 0.3):
        got = train.pgd_attack(5, generator=torch.Generator().manual_seed(7))(model, x, y, eps)
        want = attacks.pgd(model, x, y, eps, 2.5 * eps / 5, 5, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(got, want)
        got = train.pgd_attack(3, alpha_ratio=0.5, norm="l2", random_start=False)(model, x, y, eps)
        want = attacks.pgd(model, x, y, eps, 0.5 * eps, 3, norm="l2", random_start=False)
        torch.testing.assert_close(got, want)
        # Wong, Rice and Kolter 2020: one step of 1.25 eps from a uniform random start
        got = train.fgsm_rs_attack(generator=torch.Generator().manual_seed(1))(model, x, y, eps)
        want = attacks.pgd(model, x, y, eps, 1.25 * eps, 1, random_start=True,
                           generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(got, want)
        assert (got - x).abs().max() <= eps + 1e-6 and got.min() >= 0 and got.max() <= 1


# ---------------------------------------------------------------------------
# Danskin: the gradient is the gradient at the maximizer
# ---------------------------------------------------------------------------

def _closed_form_max(model: nn.Sequential, x, y, eps):
    """Mean over the batch of max_{||delta||_inf <= eps} CE(model(x + delta), y), two classes, linear model.

    The loss sees x only through the margin u^T x + c, u = w_y - w_other, and
    min over the ball of u^T delta is -eps ||u||_1 (the box [0, 1] is inactive when
    x lies in [eps, 1 - eps])."""
    layer = model[1]
    w, b = layer.weight, layer.bias  # (2, D), (2,)
    flat = x.flatten(1)
    other = 1 - y
    u = w[y] - w[other]  # (N, D)
    margin = (u * flat).sum(1) + b[y] - b[other] - eps * u.abs().sum(1)
    return F.softplus(-margin).mean()


@pytest.mark.parametrize("seed", range(10))
def test_danskin_gradient_equals_the_gradient_of_the_closed_form_max(seed):
    eps = 0.1
    x, y = _images(n=32, shape=(1, 3, 3), classes=2, seed=seed, lo=eps, hi=1 - eps)
    model = _model(shape=(1, 3, 3), classes=2, seed=seed, hidden=()).double()
    x = x.double()
    loss_fn = train.adversarial_loss(attacks.fgsm, eps)  # FGSM is the exact inner max here
    loss, _ = loss_fn(model, x, y)
    danskin = torch.autograd.grad(loss, list(model.parameters()))
    closed = _closed_form_max(model, x, y, eps)
    torch.testing.assert_close(loss, closed)
    exact = torch.autograd.grad(closed, list(model.parameters()))
    for g, e in zip(danskin, exact):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("seed", range(5))
def test_danskin_gradient_matches_finite_differences_of_the_max(seed):
    eps = 0.15
    x, y = _images(n=16, shape=(1, 2, 2), classes=2, seed=seed, lo=eps, hi=1 - eps)
    x = x.double()
    model = _model(shape=(1, 2, 2), classes=2, seed=seed, hidden=()).double()
    loss_fn = train.adversarial_loss(attacks.fgsm, eps)
    loss, _ = loss_fn(model, x, y)
    (gw,) = torch.autograd.grad(loss, [model[1].weight])

    def robust_loss():  # the max, re-solved at the perturbed weights
        with torch.no_grad():
            return F.cross_entropy(model(attacks.fgsm(model, x, y, eps)), y).item()

    h = 1e-6
    weight = model[1].weight
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            with torch.no_grad():
                weight[i, j] += h
            up = robust_loss()
            with torch.no_grad():
                weight[i, j] -= 2 * h
            down = robust_loss()
            with torch.no_grad():
                weight[i, j] += h
            assert (up - down) / (2 * h) == pytest.approx(gw[i, j].item(), rel=1e-5, abs=1e-8)


def test_no_gradient_flows_through_the_attack():
    """An attack whose output depends on the weights: Danskin holds the maximizer fixed."""
    x, y = _images(seed=5)
    model = _model(seed=5)

    def weight_dependent_attack(m, x, y, eps):
        shift = eps * torch.sigmoid(m(x).sum())  # carries a graph back to the weights
        return (x + shift).clamp(0, 1)

    loss, _ = train.adversarial_loss(weight_dependent_attack, 0.1)(model, x, y)
    got = torch.autograd.grad(loss, list(model.parameters()))
    x_adv = weight_dependent_attack(model, x, y, 0.1).detach()
    want = torch.autograd.grad(F.cross_entropy(model(x_adv), y), list(model.parameters()))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_training_step_uses_the_danskin_gradient_and_leaves_mode_and_inputs_alone():
    x, y = _images(n=20, seed=6)
    model = _model(seed=6)
    eps = 0.2
    x_before = x.clone()
    x_adv = attacks.fgsm(model, x, y, eps)
    expected = torch.autograd.grad(F.cross_entropy(model(x_adv), y), list(model.parameters()))
    before = [p.detach().clone() for p in model.parameters()]
    train.train(model, [(x, y)], epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                batch_loss=train.adversarial_loss(attacks.fgsm, eps), progress=False)
    for p, p0, g in zip(model.parameters(), before, expected):
        torch.testing.assert_close(p.detach(), p0 - 0.1 * g)
    assert torch.equal(x, x_before)
    fresh = _model(seed=7).eval()
    train.adversarial_loss(train.pgd_attack(3), eps)(fresh, x, y)
    assert not fresh.training, "the batch loss changed the model's mode"
    assert all(p.grad is None for p in fresh.parameters()), "the inner attack left gradients on the model"


# ---------------------------------------------------------------------------
# the eps ramp
# ---------------------------------------------------------------------------

def test_ramp_schedule_is_linear_from_zero_to_eps():
    loss_fn = train.adversarial_loss(attacks.fgsm, 0.3, ramp_batches=10)
    assert [loss_fn.eps_at(t) for t in (0, 1, 5, 9, 10, 11, 1000)] == pytest.approx(
        [0.0, 0.03, 0.15, 0.27, 0.3, 0.3, 0.3])
    assert train.adversarial_loss(attacks.fgsm, 0.3).eps_at(0) == 0.3  # no ramp: full eps at once


def test_ramp_counts_training_batches_only_and_passes_eps_to_the_attack():
    calls = []

    def recording_attack(m, x, y, eps):
        calls.append(eps)
        return attacks.fgsm(m, x, y, eps)

    ds = TensorDataset(*_images(n=40, seed=8))
    loader = DataLoader(ds, batch_size=10)  # 4 batches per epoch
    model = _model(seed=8)
    loss_fn = train.adversarial_loss(recording_attack, 0.2, ramp_batches=6)
    hist = train.train(model, loader, epochs=3, batch_loss=loss_fn, val_loader=loader, progress=False)
    want = [min(t / 6, 1) * 0.2 for t in range(12)]
    assert loss_fn.batches == 12
    assert loss_fn.eps_history == pytest.approx(want)
    # batch 0 is clean (eps 0: the attack is not called); each validation pass uses the full eps
    train_calls = want[1:4] + [0.2] * 4 + want[4:8] + [0.2] * 4 + want[8:12] + [0.2] * 4
    assert calls == pytest.approx(train_calls)
    assert len(hist["val_accuracy"]) == 3
    # evaluate runs under no_grad: full eps, counter unchanged
    train.evaluate(model, loader, batch_loss=loss_fn)
    assert loss_fn.batches == 12 and calls[-1] == 0.2


def test_eps_zero_is_standard_training():
    x, y = _images(seed=9)
    model = _model(seed=9)
    loss, logits = train.adversarial_loss(attacks.fgsm, 0.0)(model, x, y)
    ref_loss, ref_logits = train.cross_entropy_loss(model, x, y)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(logits, ref_logits)


# ---------------------------------------------------------------------------
# it works: PGD-AT makes a small model more robust to PGD than standard training
# ---------------------------------------------------------------------------

def test_pgd_training_raises_pgd_accuracy_over_standard_training():
    digits = data.load_dataset("digits")
    eps = 0.1
    pgd_eval = functools.partial(attacks.pgd, eps=eps, alpha=eps / 4, steps=10,
                                 generator=torch.Generator().manual_seed(0))
    results = {}
    for name, loss_fn in [("standard", train.cross_entropy_loss),
                          ("pgd", train.adversarial_loss(train.pgd_attack(5, generator=torch.Generator().manual_seed(0)),
                                                         eps, ramp_batches=20))]:
        torch.manual_seed(0)
        model = models.mlp(digits.input_shape, digits.num_classes, hidden=(64,))
        loader, test_loader = digits.loaders(batch_size=64, seed=0)
        train.train(model, loader, epochs=8, lr=1e-2, batch_loss=loss_fn, progress=False)
        results[name] = (attacks.accuracy_under_attack(model, test_loader, None),
                         attacks.accuracy_under_attack(model, test_loader, pgd_eval))
    (std_nat, std_pgd), (adv_nat, adv_pgd) = results["standard"], results["pgd"]
    assert std_nat > 0.9 and adv_nat > 0.8
    assert adv_pgd > std_pgd + 0.2, results


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

def test_bad_input():
    with pytest.raises(ValueError, match="eps"):
        train.adversarial_loss(attacks.fgsm, -0.1)
    with pytest.raises(ValueError, match="eps"):
        train.adversarial_loss(attacks.fgsm, float("nan"))
    with pytest.raises(ValueError, match="ramp_batches"):
        train.adversarial_loss(attacks.fgsm, 0.1, ramp_batches=-1)
    with pytest.raises(ValueError, match="ramp_batches"):
        train.adversarial_loss(attacks.fgsm, 0.1, ramp_batches=2.5)
    with pytest.raises(TypeError, match="attack"):
        train.adversarial_loss("fgsm", 0.1)
    with pytest.raises(ValueError, match="steps"):
        train.pgd_attack(0)
    with pytest.raises(ValueError, match="alpha_ratio"):
        train.pgd_attack(5, alpha_ratio=0.0)
    x, y = _images(seed=10)
    model = _model(seed=10)
    with pytest.raises(ValueError, match="shape"):
        train.adversarial_loss(lambda m, x, y, eps: x[:1], 0.1)(model, x, y)
    with pytest.raises(ValueError, match="x must lie in"):  # the attack's own checks reach the user
        train.adversarial_loss(attacks.fgsm, 0.1)(model, x + 2, y)
