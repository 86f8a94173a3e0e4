"""Feature collision (course_lib/feature_collision.py) and the one-shot kill (course_lib/transfer_poisoning.py).

The independent computations: the proximal step against a bounded 1-D minimization per pixel
(scipy); the whole iteration against a float64 hand computation with the closed-form gradient of
a linear extractor; batching against separate runs; the transfer experiment against its two
extremes (no optimization: no kill; a converged collision: kills).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from torch import nn
from torch.utils.data import TensorDataset

from course_lib import feature_collision as fc
from course_lib import models, poisoning
from course_lib import transfer_poisoning as tp
from course_lib.data import DatasetSplits


def _cnn_extractor(seed: int = 0, shape=(1, 8, 8)) -> nn.Sequential:
    torch.manual_seed(seed)
    return models.cnn(shape, 10)[:-1]


def _pairs(seed: int, n: int = 3, shape=(1, 8, 8)):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=gen), torch.rand(n, *shape, generator=gen)


# ---------------------------------------------------------------- the backward (proximal) step

@pytest.mark.parametrize("seed", range(12))
def test_backward_step_is_the_proximal_map_on_the_box(seed):
    # argmin over p in [0, 1] of (p - x)^2 / (2 lr) + (beta / 2) (p - b)^2, pixel by pixel, by scipy
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 1.5, size=12)  # the forward step may leave the box
    b = rng.uniform(0, 1, size=12)
    beta, lr = float(rng.choice([0.0, 0.1, 1.0, 7.0])), float(rng.choice([0.01, 0.3, 2.0]))
    got = fc.backward_step(torch.tensor(x), torch.tensor(b), beta=beta, lr=lr).numpy()
    for xi, bi, gi in zip(x, b, got):
        best = minimize_scalar(lambda p: (p - xi) ** 2 / (2 * lr) + beta / 2 * (p - bi) ** 2,
                               bounds=(0, 1), method="bounded", options={"xatol": 1e-10}).x
        assert gi == pytest.approx(best, abs=1e-7)


def test_backward_step_is_the_papers_fraction_inside_the_box():
    x, b = torch.tensor([0.2, 0.9]), torch.tensor([0.6, 0.1])
    beta, lr = 2.0, 0.25
    torch.testing.assert_close(fc.backward_step(x, b, beta=beta, lr=lr), (x + lr * beta * b) / (1 + lr * beta))
    torch.testing.assert_close(fc.backward_step(x, b, beta=0.0, lr=lr), x)  # beta 0: only the clip


# ---------------------------------------------------------------- the iteration

@pytest.mark.parametrize("seed", range(4))
def test_iteration_matches_a_hand_computation_with_a_linear_extractor(seed):
    # f(p) = W p: grad_p ||W p - W t||^2 = 2 W^T (W p - W t); the iteration by hand in float64
    gen = torch.Generator().manual_seed(seed)
    target, base = torch.rand(2, 1, 3, 3, generator=gen, dtype=torch.float64).unbind(0)
    target, base = target[None], base[None]
    W = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    layer = nn.Linear(9, 4, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(W)
    f = nn.Sequential(nn.Flatten(), layer)
    beta, lr, steps, gamma = 0.5, 0.05, 25, 0.2
    b = (1 - gamma) * base.flatten() + gamma * target.flatten()
    p, t = b.clone(), target.flatten()
    for _ in range(steps):
        x = p - lr * 2 * W.T @ (W @ p - W @ t)
        p = ((x + lr * beta * b) / (1 + lr * beta)).clamp(0, 1)
    got = fc.feature_collision(f, target, base, beta=beta, steps=steps, lr=lr, watermark=gamma)
    torch.testing.assert_close(got.flatten(), p, rtol=1e-12, atol=1e-12)
    b4 = b.reshape(1, 1, 3, 3)
    one = fc.forward_backward_step(f, b4, f(target).detach(), b4, beta=beta, lr=lr)
    torch.testing.assert_close(one, fc.feature_collision(f, target, base, beta=beta, steps=1, lr=lr, watermark=gamma))


@pytest.mark.parametrize("seed", range(3))
def test_feature_distance_falls_over_the_steps(seed):
    f = _cnn_extractor(seed)
    target, base = _pairs(seed)
    # an untrained CNN's features are small (squared distances ~0.03): long steps
    distances = [fc.feature_distance(f, fc.feature_collision(f, target, base, beta=0.003, steps=k, lr=30.0), target)
                 for k in (0, 5, 20, 60)]
    for before, after in zip(distances[:3], distances[1:3]):
        assert (after < before).all()
    assert (distances[-1] < 0.25 * distances[0]).all()  # near its end the penalty pulls back a little
    torch.testing.assert_close(distances[0], fc.feature_distance(f, base, target))  # 0 steps: the base itself


@pytest.mark.parametrize("seed", range(10))
def test_poisons_stay_in_the_box(seed):
    gen = torch.Generator().manual_seed(seed)
    f = _cnn_extractor(seed)
    target, base = _pairs(seed)
    lr = float(torch.tensor([0.01, 1.0, 100.0])[seed % 3])  # even steps far outside the box
    beta = float(torch.rand(1, generator=gen)) * 3
    poison = fc.feature_collision(f, target, base, beta=beta, steps=7, lr=lr, watermark=0.1 * (seed % 4))
    assert poison.min() >= 0 and poison.max() <= 1 and poison.shape == base.shape and poison.dtype == base.dtype


def test_batching_equals_separate_runs():
    f = _cnn_extractor(1)
    target, base = _pairs(5, n=4)
    batched = fc.feature_collision(f, target, base, beta=0.3, steps=15, lr=0.02, watermark=0.1)
    for i in range(4):
        alone = fc.feature_collision(f, target[i:i + 1], base[i:i + 1], beta=0.3, steps=15, lr=0.02, watermark=0.1)
        torch.testing.assert_close(batched[i:i + 1], alone, rtol=1e-5, atol=1e-5)


def test_watermark_and_zero_steps_give_the_blend():
    f = _cnn_extractor()
    target, base = _pairs(2)
    torch.testing.assert_close(fc.feature_collision(f, target, base, beta=1.0, steps=0, lr=0.1, watermark=0.3),
                               0.7 * base + 0.3 * target)
    torch.testing.assert_close(fc.watermarked(base, target, 0.0), base)


def test_large_beta_keeps_the_poison_near_the_base():
    f = _cnn_extractor(3)
    target, base = _pairs(3)
    near = fc.feature_collision(f, target, base, beta=1000.0, steps=30, lr=0.01)
    free = fc.feature_collision(f, target, base, beta=0.0, steps=30, lr=0.01)
    assert ((near - base).flatten(1).norm(dim=1) < 0.1 * (free - base).flatten(1).norm(dim=1)).all()


def test_the_extractor_is_left_untouched():
    f = _cnn_extractor(4).train()
    before = {k: v.clone() for k, v in f.state_dict().items()}
    target, base = _pairs(4)
    fc.feature_collision(f, target, base, beta=0.1, steps=3, lr=0.01)
    assert f.training  # its mode restored
    assert all(p.grad is None for p in f.parameters())
    assert all(torch.equal(before[k], v) for k, v in f.state_dict().items())


def test_works_inside_no_grad():
    f = _cnn_extractor(2)
    target, base = _pairs(2)
    outside = fc.feature_collision(f, target, base, beta=0.1, steps=3, lr=1.0)
    with torch.no_grad():
        torch.testing.assert_close(fc.feature_collision(f, target, base, beta=0.1, steps=3, lr=1.0), outside)


def test_poisoning_module_exports_it():
    assert poisoning.feature_collision is fc.feature_collision


def test_bad_inputs_name_the_argument():
    f = _cnn_extractor()
    target, base = _pairs(0)
    call = dict(beta=0.1, steps=2, lr=0.01)
    for kwargs, name in [(dict(call, beta=-1.0), "beta"), (dict(call, steps=-1), "steps"), (dict(call, lr=0.0), "lr"),
                         (dict(call, watermark=1.0), "watermark"), (dict(call, watermark=-0.1), "watermark")]:
        with pytest.raises(ValueError, match=name):
            fc.feature_collision(f, target, base, **kwargs)
    with pytest.raises(ValueError, match="target and base"):
        fc.feature_collision(f, target, base[:2], **call)
    with pytest.raises(ValueError, match="base must lie in"):
        fc.feature_collision(f, target, base + 1, **call)
    with pytest.raises(ValueError, match="target must be a non-empty batch"):
        fc.feature_collision(f, target[0], base[0], **call)
    with pytest.raises(ValueError, match="extractor must map"):
        fc.feature_collision(lambda x: x.sum(), target, base, **call)
    with pytest.raises(ValueError, match="x and base"):
        fc.backward_step(torch.zeros(3), torch.zeros(2), beta=1.0, lr=1.0)


# ---------------------------------------------------------------- the one-shot kill in transfer learning

@pytest.fixture(scope="module")
def extractor():
    return tp.train_extractor()  # the default: 3 epochs on digits 0 to 7, a few seconds


def test_extractor_is_frozen_and_the_task_uses_other_classes(extractor):
    assert not extractor.training and not any(p.requires_grad for p in extractor.parameters())
    train_x, train_y, test_x, test_y = tp.transfer_task()
    assert extractor(train_x[:2]).shape == (2, 32 * 7 * 7)
    assert set(train_y.tolist()) == {0, 1} and len(test_y) == 200


def test_fit_linear_head_is_the_unique_regularized_minimizer():
    # strictly convex: from zeros or from a random start, the same head; its gradient vanishes
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(60, 5, generator=gen, dtype=torch.float64)
    labels = (features[:, 0] + 0.5 * torch.randn(60, generator=gen, dtype=torch.float64) > 0).long()
    head = tp.fit_linear_head(features, labels, 2, weight_decay=0.1)
    start = nn.Linear(5, 2).double()
    other = tp.fit_linear_head(features, labels, 2, weight_decay=0.1, init=start)
    torch.testing.assert_close(head.weight, other.weight, atol=1e-6, rtol=0)
    W = head.weight.detach().clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(features @ W.T + head.bias, labels) + 0.05 * W.pow(2).sum()
    (grad,) = torch.autograd.grad(loss, W)
    assert grad.abs().max() < 1e-6


def test_one_shot_kill_succeeds_and_costs_no_clean_accuracy(extractor):
    task = tp.transfer_task()
    train, test = task[:2], task[2:]
    attack = tp.one_shot_kill(extractor, train, test, targets=8, seed=0)  # beta 0.1, 300 steps of 0.01
    idle = tp.one_shot_kill(extractor, train, test, targets=8, beta=0.1, steps=0, lr=0.01, seed=0)
    assert attack.success_rate >= 0.75 and idle.success_rate == 0.0  # the base itself kills nothing
    assert attack.clean_accuracy > 0.95 and attack.poisoned_accuracy > attack.clean_accuracy - 0.02
    assert attack.feature_distance < 0.05 * attack.base_feature_distance
    assert torch.equal(attack.target_indices, idle.target_indices) and attack.poisons.shape == (8, 1, 1, 28, 28)
    assert (test[1][attack.target_indices] == 1).all() and (test[1][attack.base_indices] == 0).all()


def test_transfer_bad_inputs_name_the_argument(extractor):
    task = tp.transfer_task()
    with pytest.raises(ValueError, match="target_class and base_class"):
        tp.one_shot_kill(extractor, task[:2], task[2:], target_class=0, base_class=0)
    with pytest.raises(ValueError, match="asked for 500 targets"):
        tp.one_shot_kill(extractor, task[:2], task[2:], targets=500)
    with pytest.raises(ValueError, match="classes"):
        tp.transfer_task(classes=(8, 8))
    with pytest.raises(ValueError, match="num_classes"):
        tp.fit_linear_head(torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64), 1)


# ---------------------------------------------------------------- one argument policy, examples

def _tiny_splits() -> DatasetSplits:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 1, 8, 8, generator=gen), torch.arange(24) % 4
    return DatasetSplits("tiny", TensorDataset(x, y), TensorDataset(x, y), ("a", "b", "c", "d"))


def _policy_cases():
    f = _cnn_extractor()
    target, base = _pairs(0, n=2)
    feats = f(target).detach()
    x = torch.rand(2, 1, 8, 8)
    gen = torch.Generator().manual_seed(0)
    features, labels = torch.randn(20, 3, generator=gen), torch.arange(20) % 2
    splits = _tiny_splits()
    tx, ty = splits.train.tensors
    task = (tx, ty % 2)
    eq, close = torch.equal, (lambda a, b: torch.allclose(a, b, atol=1e-6))

    def attack(**kw):
        return fc.feature_collision(f, target, base, **(dict(beta=0.1, steps=2, lr=0.01) | kw))

    def heads_equal(a, b):
        return torch.allclose(a.weight, b.weight, atol=1e-6)

    def kill(**kw):
        return tp.one_shot_kill(f, task, task, **(dict(targets=1, steps=1, lr=0.01, max_iter=5) | kw)).success_rate

    return [
        (lambda v: attack(steps=v), "steps", 2, eq),
        (lambda v: attack(lr=v), "lr", 0.01, close),
        (lambda v: fc.backward_step(x, base, beta=0.5, lr=v), "lr", 0.1, close),
        (lambda v: fc.forward_backward_step(f, x, feats, base, beta=0.5, lr=v), "lr", 0.01, close),
        (lambda v: tp.fit_linear_head(features, labels, v, max_iter=5), "num_classes", 2, heads_equal),
        (lambda v: tp.fit_linear_head(features, labels, 2, max_iter=v), "max_iter", 5, heads_equal),
        (lambda v: tp.train_extractor(splits, (0, 1), epochs=v, batch_size=16), "epochs", 1, None),
        (lambda v: tp.train_extractor(splits, (0, 1), epochs=1, batch_size=v), "batch_size", 16, None),
        (lambda v: tp.train_extractor(splits, (0, 1), epochs=1, batch_size=16, lr=v), "lr", 1e-3, None),
        (lambda v: kill(steps=v), "steps", 1, float.__eq__),
        (lambda v: kill(lr=v), "lr", 0.01, float.__eq__),
        (lambda v: kill(max_iter=v), "max_iter", 5, float.__eq__),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(fc).failed == 0
    assert doctest.testmod(tp).failed == 0
