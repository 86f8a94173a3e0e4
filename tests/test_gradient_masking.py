"""Defences that mask gradients, and BPDA and EOT, checked against independent computations:
brute-force rounding, autograd at the preprocessed point, finite differences, manual averages
over the same random draws, and the 1/S variance law of an average of S draws."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import attacks
from course_lib import gradient_masking as gm
from strategies import random_case

pytestmark = pytest.mark.attacks

SEEDS = range(24)


def _input_grad(model, x, weights):
    """Gradient with respect to x of sum(weights * model(x)), by autograd."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((model(x) * weights).sum(), x)
    return grad


def _weights(model, x, seed):
    with torch.no_grad():
        shape = model(x).shape
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1000), dtype=x.dtype)


# ---------------------------------------------------------------- quantization


@pytest.mark.parametrize("levels", [2, 3, 4, 8, 256])
def test_quantize_rounds_to_the_nearest_level(levels):
    g = torch.Generator().manual_seed(levels)
    x = torch.rand(5000, generator=g, dtype=torch.float64)
    grid = torch.arange(levels, dtype=torch.float64) / (levels - 1)
    brute = grid[(x[:, None] - grid[None, :]).abs().argmin(1)]  # brute force over the grid
    q = gm.quantize(x, levels)
    torch.testing.assert_close(q, brute, rtol=0, atol=1e-12)
    torch.testing.assert_close(gm.quantize(q, levels), q, rtol=0, atol=1e-12)  # idempotent
    assert ((q - x).abs() <= 0.5 / (levels - 1) + 1e-12).all()  # moves by at most half a level


def test_quantize_keeps_the_ends_and_has_zero_gradient():
    x = torch.tensor([0.0, 1.0, 0.49, 0.51], requires_grad=True)
    q = gm.quantize(x, 2)
    assert q.tolist() == [0.0, 1.0, 0.0, 1.0]
    (grad,) = torch.autograd.grad((q * torch.arange(1.0, 5.0)).sum(), x)
    assert torch.equal(grad, torch.zeros(4))


@pytest.mark.parametrize("seed", SEEDS)
def test_quantized_input_is_the_model_at_the_quantized_point_with_zero_gradient(seed):
    model, x, y, eps, _ = random_case(seed)
    levels = 2 + seed % 7
    defended = gm.QuantizedInput(model, levels)
    with torch.no_grad():
        torch.testing.assert_close(defended(x), model(gm.quantize(x, levels)), rtol=0, atol=0)
    grad = _input_grad(defended, x, _weights(model, x, seed))
    assert torch.equal(grad, torch.zeros_like(x))  # shattered: exactly zero


def test_pgd_does_not_move_on_a_quantized_model():
    model, x, y, _, _ = random_case(3)
    defended = gm.QuantizedInput(model, 4)
    x_adv = attacks.pgd(defended, x, y, 0.3, alpha=0.05, steps=10, random_start=False)
    assert torch.equal(x_adv, x)  # sign(0) = 0: every step is empty


# ---------------------------------------------------------------- BPDA


@pytest.mark.parametrize("seed", SEEDS)
def test_bpda_forward_is_the_defence_and_gradient_is_the_model_at_the_quantized_point(seed):
    model, x, _, _, _ = random_case(seed)
    levels = 2 + seed % 7
    defended = gm.QuantizedInput(model, levels)
    straight = gm.bpda(defended)
    with torch.no_grad():
        assert torch.equal(straight(x), defended(x))
    w = _weights(model, x, seed)
    expected = _input_grad(model, gm.quantize(x, levels), w)  # autograd of the base model at g(x)
    torch.testing.assert_close(_input_grad(straight, x, w), expected, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(6))
def test_bpda_gradient_matches_finite_differences_of_the_model_at_the_quantized_point(seed):
    model, x, _, _, _ = random_case(seed)  # float64
    q = gm.quantize(x, 5)
    w = _weights(model, x, seed)
    grad = _input_grad(gm.bpda(gm.QuantizedInput(model, 5)), x, w)
    h, fd = 1e-6, torch.zeros_like(x)
    flat_q, flat_fd = q.view(-1), fd.view(-1)
    with torch.no_grad():
        for i in range(flat_q.numel()):
            up, down = flat_q.clone(), flat_q.clone()
            up[i] += h
            down[i] -= h
            flat_fd[i] = ((model(up.view_as(q)) * w).sum() - (model(down.view_as(q)) * w).sum()) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-6)


def test_bpda_through_noise_is_the_true_gradient_for_the_same_draw():
    # x + sigma * n has the identity as its Jacobian: BPDA changes nothing there
    model, x, _, _, _ = random_case(5)
    w = _weights(model, x, 5)
    grads = []
    for wrap in (lambda d: d, gm.bpda):
        noisy = gm.RandomNoiseInput(model, 0.3, generator=torch.Generator().manual_seed(7))
        grads.append(_input_grad(wrap(noisy), x, w))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


def test_bpda_breaks_the_quantizer_where_pgd_cannot():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double()
    x = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    defended = gm.QuantizedInput(model, 8)
    with torch.no_grad():
        y = defended(x).argmax(1)  # all correct to begin with
    run = dict(eps=0.3, alpha=0.05, steps=20, random_start=False)
    with torch.no_grad():
        masked = (defended(attacks.pgd(defended, x, y, **run)).argmax(1) == y).double().mean()
        broken = (defended(attacks.pgd(gm.bpda(defended), x, y, **run)).argmax(1) == y).double().mean()
    assert masked == 1.0 and broken < 0.5


def test_bpda_refuses_what_is_not_a_preprocessing_defence():
    with pytest.raises(TypeError, match="defence"):
        gm.bpda(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="defence"):
        gm.bpda(gm.ScaledLogits(nn.Linear(2, 2), 0.1))


# ---------------------------------------------------------------- saturated softmax


def test_scaled_logits_keep_predictions_and_divide_logits():
    model, x, _, _, _ = random_case(7)
    scaled = gm.ScaledLogits(model, 1e-3)
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), model(x) / 1e-3)
        assert torch.equal(scaled(x).argmax(1), model(x).argmax(1))


def test_scaled_logits_zero_the_cross_entropy_gradient_but_not_the_margins():
    # a linear model with margins of at least 0.2: divided by 1e-3 they pass 104, the float32 underflow
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    x = torch.rand(200, 1, 2, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        z = lin(x)
        top2 = z.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1]) > 0.2
    x, y = x[keep], z[keep].argmax(1)
    assert len(y) > 50
    scaled = gm.ScaledLogits(lin, 1e-3)
    x_req = x.clone().requires_grad_(True)
    (ce_grad,) = torch.autograd.grad(F.cross_entropy(scaled(x_req), y, reduction="sum"), x_req)
    assert torch.equal(ce_grad, torch.zeros_like(x))  # vanished, exactly
    (base_ce,) = torch.autograd.grad(F.cross_entropy(lin(x_req), y, reduction="sum"), x_req)
    assert (base_ce.flatten(1).abs().sum(1) > 0).all()  # the base model's is not zero
    # the margin's gradient is the base model's times 1/T: same signs, so PGD-margin is unaffected
    def margin(logits):
        return (logits.scatter(1, y[:, None], float("-inf")).amax(1) - logits.gather(1, y[:, None]).squeeze(1)).sum()
    (m_scaled,) = torch.autograd.grad(margin(scaled(x_req)), x_req)
    (m_base,) = torch.autograd.grad(margin(lin(x_req)), x_req)
    torch.testing.assert_close(m_scaled * 1e-3, m_base)
    for loss in ("margin", "dlr"):
        a = attacks.pgd(scaled, x, y, 0.2, alpha=0.05, steps=5, random_start=False, loss=loss)
        b = attacks.pgd(lin, x, y, 0.2, alpha=0.05, steps=5, random_start=False, loss=loss)
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- random noise and EOT


def test_random_noise_draws_fresh_gaussian_noise_of_sd_sigma():
    flat = nn.Flatten()  # the "model" returns the preprocessed input itself
    noisy = gm.RandomNoiseInput(flat, 0.25, generator=torch.Generator().manual_seed(0))
    x = torch.full((400, 1, 10, 10), 0.5)
    a, b = noisy(x) - 0.5, noisy(x) - 0.5
    assert not torch.equal(a, b)
    n = a.numel()
    assert abs(float(a.mean())) < 4 * 0.25 / math.sqrt(n)
    assert abs(float(a.std()) - 0.25) < 4 * 0.25 / math.sqrt(2 * n)
    assert abs(float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0))) < 4 / math.sqrt(n)


def test_random_noise_is_reproducible_with_a_seeded_generator():
    model, x, _, _, _ = random_case(4)
    outs = [gm.RandomNoiseInput(model, 0.1, generator=torch.Generator().manual_seed(3))(x) for _ in range(2)]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    torch.testing.assert_close(outs[0], model(x + 0.1 * noise), rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(12))
def test_eot_is_the_average_of_the_same_draws_and_so_is_its_gradient(seed):
    model, x, _, _, _ = random_case(seed)
    samples = 1 + seed % 5
    w = _weights(model, x, seed)
    averaged = gm.eot(gm.RandomNoiseInput(model, 0.2, generator=torch.Generator().manual_seed(seed)), samples)
    # by hand: the same generator, the same draw order (S stacked copies of the batch)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((samples * len(x), *x.shape[1:]), generator=g, dtype=x.dtype).view(samples, *x.shape)
    with torch.no_grad():
        manual = torch.stack([model(x + 0.2 * noise[s]) for s in range(samples)]).mean(0)
        torch.testing.assert_close(averaged(x), manual, rtol=1e-12, atol=1e-12)
    averaged = gm.eot(gm.RandomNoiseInput(model, 0.2, generator=torch.Generator().manual_seed(seed)), samples)
    manual_grad = torch.stack([_input_grad(model, x + 0.2 * noise[s], w) for s in range(samples)]).mean(0)
    torch.testing.assert_close(_input_grad(averaged, x, w), manual_grad, rtol=1e-10, atol=1e-12)


def test_eot_of_a_deterministic_model_is_the_model():
    model, x, _, _, _ = random_case(1)
    with torch.no_grad():
        torch.testing.assert_close(gm.eot(model, 7)(x), model(x), rtol=1e-12, atol=1e-12)


def test_eot_gradient_error_falls_like_one_over_the_number_of_draws():
    # E |g_S - g|^2 = E |g_1 - g|^2 / S for the average g_S of S independent draws' gradients
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    x = torch.rand(1, 1, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = torch.tensor([[1.0, -1.0, 0.5]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    noisy = gm.RandomNoiseInput(model, 0.5, generator=gen)
    reference = _input_grad(gm.eot(noisy, 20000), x, w)  # the expected gradient, to about 1%
    errors = {}
    for samples in (1, 4, 16):
        trials = [(_input_grad(gm.eot(noisy, samples), x, w) - reference).pow(2).sum() for _ in range(400)]
        errors[samples] = float(torch.stack(trials).mean())
    assert 2.5 < errors[1] / errors[4] < 6.4 and 2.5 < errors[4] / errors[16] < 6.4  # 4, up to sampling


# ---------------------------------------------------------------- modules and arguments


def test_wrappers_carry_the_model_and_its_mode():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 3))
    for defended in (gm.QuantizedInput(model, 4), gm.ScaledLogits(model, 0.1), gm.RandomNoiseInput(model, 0.1)):
        defended.eval()
        assert not model.training
        defended.train()
        assert model.training
        assert list(defended.parameters()) == list(model.parameters())
    assert "levels=4" in repr(gm.QuantizedInput(model, 4)) and "num_samples=3" in repr(gm.eot(model, 3))


@pytest.mark.parametrize("make, name", [
    (lambda: gm.quantize(torch.rand(3), 1), "levels"),
    (lambda: gm.QuantizedInput(nn.Linear(2, 2), 1), "levels"),
    (lambda: gm.RandomNoiseInput(nn.Linear(2, 2), 0.0), "sigma"),
    (lambda: gm.RandomNoiseInput(nn.Linear(2, 2), float("nan")), "sigma"),
    (lambda: gm.RandomNoiseInput(nn.Linear(2, 2), 0.1, generator=3), "generator"),
    (lambda: gm.ScaledLogits(nn.Linear(2, 2), 0.0), "temperature"),
    (lambda: gm.ScaledLogits(nn.Linear(2, 2), -1e-3), "temperature"),
    (lambda: gm.eot(nn.Linear(2, 2), 0), "num_samples"),
    (lambda: gm.QuantizedInput("not a model", 4), "model"),
    (lambda: gm.eot(None, 4), "model"),
])
def test_bad_arguments_name_themselves(make, name):
    with pytest.raises((ValueError, TypeError), match=name):
        make()


def _policy_cases():
    model, x, _, _, _ = random_case(2)

    def close(a, b):
        return torch.allclose(a, b, rtol=1e-12, atol=1e-12)

    def noisy(sigma):
        return gm.RandomNoiseInput(model, sigma, generator=torch.Generator().manual_seed(0))(x)

    def averaged(samples):
        return gm.eot(gm.RandomNoiseInput(model, 0.1, generator=torch.Generator().manual_seed(0)), samples)(x)

    return [
        (lambda v: gm.quantize(x, v), "levels", 4, torch.equal),
        (lambda v: gm.QuantizedInput(model, v)(x), "levels", 4, torch.equal),
        (noisy, "sigma", 0.25, close),
        (lambda v: gm.ScaledLogits(model, v)(x), "temperature", 0.125, close),
        (averaged, "num_samples", 3, close),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    with torch.no_grad():
        check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(gm).failed == 0
