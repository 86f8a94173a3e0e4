import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib import models, optim, train

pytestmark = pytest.mark.train


def _blobs(n=200, seed=0):
    """Two well separated Gaussian blobs as 1x2x2 'images' in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    centres = torch.tensor([[0.25] * 4, [0.75] * 4])
    x = (centres[y] + 0.05 * torch.randn(n, 4, generator=gen)).clamp(0, 1).reshape(n, 1, 2, 2)
    return TensorDataset(x, y)


def test_train_learns_and_returns_history():
    torch.manual_seed(0)
    ds = _blobs()
    model = models.mlp((1, 2, 2), 2, hidden=(8,))
    hist = train.train(model, DataLoader(ds, batch_size=32, shuffle=True), epochs=5, lr=0.05,
                       val_loader=DataLoader(ds, batch_size=64), progress=False)
    assert set(hist) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 5 for v in hist.values())
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["val_accuracy"][-1] > 0.95
    # the history's validation numbers are what evaluate reports
    final = train.evaluate(model, DataLoader(ds, batch_size=64))
    assert final["accuracy"] == pytest.approx(hist["val_accuracy"][-1])
    assert final["loss"] == pytest.approx(hist["val_loss"][-1], rel=1e-5)


def test_evaluate_matches_a_direct_computation_and_keeps_mode():
    torch.manual_seed(1)
    ds = _blobs(50)
    model = models.mlp((1, 2, 2), 2)
    model.train()
    res = train.evaluate(model, DataLoader(ds, batch_size=7))
    x, y = ds.tensors
    with torch.no_grad():
        logits = model(x)
    assert res["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert res["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert model.training  # mode restored
    big = _blobs(600)  # a pair of tensors, as accuracy_under_attack and certified_accuracy take
    pair = train.evaluate(model, big.tensors)
    assert pair == pytest.approx(train.evaluate(model, DataLoader(big, batch_size=256)), rel=1e-6)
    with pytest.raises(ValueError, match="loader must yield shuffled training batches"):
        train.train(model, big.tensors)  # training wants shuffled batches: a clear error, not a crash


def test_train_with_our_sgd_equals_full_batch_gd_by_hand():
    """One epoch with one full batch is one GD step: check against a manual update."""
    torch.manual_seed(2)
    ds = _blobs(40)
    model = models.mlp((1, 2, 2), 2, hidden=())
    x, y = ds.tensors
    w, b = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    w_ = w.clone().requires_grad_(True)
    b_ = b.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(x.flatten(1) @ w_.T + b_, y)
    gw, gb = torch.autograd.grad(loss, (w_, b_))
    train.train(model, DataLoader(ds, batch_size=40), epochs=1,
                optimizer=optim.SGD(model.parameters(), lr=0.5), progress=False)
    torch.testing.assert_close(model[1].weight.detach(), w - 0.5 * gw)
    torch.testing.assert_close(model[1].bias.detach(), b - 0.5 * gb)


def test_custom_batch_loss_is_used():
    calls = []

    def loss_fn(model, x, y):
        calls.append(x.shape[0])
        return train.cross_entropy_loss(model, x, y)

    model = models.mlp((1, 2, 2), 2)
    train.train(model, DataLoader(_blobs(30), batch_size=10), epochs=2, batch_loss=loss_fn, progress=False)
    assert calls == [10, 10, 10] * 2


def test_diverging_run_is_recorded_not_hidden():
    torch.manual_seed(0)
    model = models.mlp((1, 2, 2), 2)
    hist = train.train(model, DataLoader(_blobs(), batch_size=200), epochs=3,
                       optimizer=optim.SGD(model.parameters(), lr=1e4), progress=False)
    assert len(hist["loss"]) == 3
    assert hist["loss"][-1] > 10 * hist["loss"][0] or not torch.isfinite(torch.tensor(hist["loss"][-1]))


def test_bad_input():
    model = models.mlp((1, 2, 2), 2)
    loader = DataLoader(_blobs(10), batch_size=5)
    with pytest.raises(ValueError, match="epochs"):
        train.train(model, loader, epochs=0, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train.train(model, loader, lr=-1.0, progress=False)
    with pytest.raises(ValueError, match="empty"):
        train.train(model, DataLoader(TensorDataset(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long))),
                    progress=False)
    with pytest.raises(ValueError, match="empty"):
        train.evaluate(model, [])
    with pytest.raises(ValueError, match="labels y"):
        train.evaluate(model, [(torch.zeros(4, 1, 2, 2), torch.zeros(3, dtype=torch.long))])
    with pytest.raises(ValueError, match="int64"):
        train.evaluate(model, [(torch.zeros(4, 1, 2, 2), torch.zeros(4))])
    with pytest.raises(TypeError, match="optimizer"):
        train.train(model, loader, optimizer="sgd", progress=False)
    with pytest.raises(ValueError, match=r"batch x of shape \(4, 1, 3, 3\)"):
        train.evaluate(model, [(torch.zeros(4, 1, 3, 3), torch.zeros(4, dtype=torch.long))])


# ---------------------------------------------------------------- one accuracy loop

def test_accuracy_is_the_fraction_correct_and_restores_the_mode():
    torch.manual_seed(0)
    ds = _blobs(50)
    model = models.mlp((1, 2, 2), 2, hidden=(8,))
    x, y = ds.tensors
    expected = (model(x).argmax(1) == y).float().mean().item()
    assert train.accuracy(model, (x, y)) == pytest.approx(expected)
    assert train.accuracy(model, DataLoader(ds, batch_size=7)) == pytest.approx(expected)
    assert model.training
    model.eval()
    train.accuracy(model, (x, y))
    assert not model.training
    # evaluate reports the same accuracy; an attack that returns x changes nothing
    assert train.evaluate(model, (x, y))["accuracy"] == pytest.approx(expected)
    assert train.accuracy(model, (x, y), attack=lambda m, xb, yb: xb) == pytest.approx(expected)
    with pytest.raises(ValueError, match="no examples"):
        train.accuracy(model, [])


def test_accuracy_under_attack_is_train_accuracy():
    from course_lib import attacks

    torch.manual_seed(1)
    ds = _blobs(40)
    model = models.mlp((1, 2, 2), 2, hidden=(8,))
    attack = lambda m, x, y: attacks.fgsm(m, x, y, 0.2)  # noqa: E731
    assert attacks.accuracy_under_attack(model, ds.tensors, attack) == train.accuracy(model, ds.tensors,
                                                                                      attack=attack)


# ---------------------------------------------------------------- learning-rate schedules

def test_lr_schedule_sets_every_group_before_each_batch_at_the_right_progress():
    ds = _blobs(40)
    model = models.mlp((1, 2, 2), 2, hidden=(4,))
    optimizer = torch.optim.SGD([{"params": model[1].parameters()}, {"params": model[3].parameters()}], lr=1.0)
    seen = []

    def recording_loss(m, x, y):
        seen.append([g["lr"] for g in optimizer.param_groups])
        return train.cross_entropy_loss(m, x, y)

    loader = DataLoader(ds, batch_size=16)  # 3 batches: 16, 16, 8
    train.train(model, loader, epochs=2, optimizer=optimizer, batch_loss=recording_loss, progress=False,
                lr_schedule=lambda t: 10 * t)
    expected = [10 * (e + (i + 1) / 3) for e in range(2) for i in range(3)]
    assert [pytest.approx([v, v]) for v in expected] == seen


def test_cyclic_lr_is_wong_et_al_s_triangle():
    import numpy as np

    schedule = train.cyclic_lr(5e-3, 30)
    ts = np.linspace(0, 30, 301)
    # their script: np.interp([t], [0, epochs * 2 // 5, epochs], [0, lr_max, 0])
    reference = np.interp(ts, [0, 30 * 2 // 5, 30], [0, 5e-3, 0])
    assert np.allclose([schedule(t) for t in ts], reference, rtol=0, atol=1e-15)
    assert schedule(35.0) == 0.0 and schedule(12.0) == 5e-3
    for bad in [dict(peak=0.0), dict(peak_at=1.0), dict(peak_at=0.0)]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            train.cyclic_lr(**(dict(peak=1e-3, epochs=10) | bad))


def test_lr_schedule_bad_input():
    ds = _blobs(20)
    model = models.mlp((1, 2, 2), 2, hidden=(4,))
    with pytest.raises(TypeError, match="lr_schedule"):
        train.train(model, DataLoader(ds, batch_size=10), lr_schedule=0.1, progress=False)
    with pytest.raises(ValueError, match="length"):
        train.train(model, (batch for batch in DataLoader(ds, batch_size=10)), lr_schedule=lambda t: 0.1, progress=False)
    with pytest.raises(ValueError, match="lr_schedule"):
        train.train(model, DataLoader(ds, batch_size=10), lr_schedule=lambda t: -1.0, progress=False)


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases():
    ds = _blobs(40)

    def run(**kw):
        torch.manual_seed(0)
        model = models.mlp((1, 2, 2), 2, hidden=(4,))
        loader = DataLoader(ds, batch_size=20, shuffle=True, generator=torch.Generator().manual_seed(0))
        return train.train(model, loader, **(dict(epochs=1, lr=0.01, progress=False) | kw))["loss"]

    return [
        (lambda v: run(epochs=v), "epochs", 2, list.__eq__),
        (lambda v: run(lr=v), "lr", 0.01, None),  # a float32 rate is another rate
        (lambda v: train.cyclic_lr(0.1, v)(1.0), "epochs", 5, float.__eq__),
        (lambda v: train.cyclic_lr(v, 5)(1.0), "peak", 0.1, None),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(train).failed == 0
