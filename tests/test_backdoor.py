import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from course_lib import backdoor as bd

pytestmark = pytest.mark.poisoning

NAMED = {  # position -> top-left (row, col) of an (h, w) window in an (H, W) image, by hand
    "bottom_right": lambda H, W, h, w: (H - h, W - w),
    "bottom_left": lambda H, W, h, w: (H - h, 0),
    "top_right": lambda H, W, h, w: (0, W - w),
    "top_left": lambda H, W, h, w: (0, 0),
    "center": lambda H, W, h, w: ((H - h) // 2, (W - w) // 2),
}


def _data(seed, n=40, shape=(1, 8, 8), classes=4, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n, *shape, generator=gen, dtype=dtype)
    X[X < 0.1] = 0.0  # pixels on the box's faces too
    X[X > 0.9] = 1.0
    return X, torch.randint(0, classes, (n,), generator=gen)


def _expected_count(rate, candidates):
    """floor(rate * candidates + 1/2) in exact rational arithmetic."""
    return math.floor(Fraction(rate) * candidates + Fraction(1, 2))


def _window_mask(shape, row, col, h, w):
    """Brute force: True on the pixels (.., r, c) with row <= r < row + h and col <= c < col + w."""
    mask = torch.zeros(shape, dtype=torch.bool)
    H, W = shape[-2:]
    for r in range(H):
        for c in range(W):
            if row <= r < row + h and col <= c < col + w:
                mask[..., r, c] = True
    return mask


# ---------------------------------------------------------------- triggers and positions

@pytest.mark.parametrize("kind", bd.PATCH_KINDS)
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_patch_patterns(kind, size):
    t = bd.patch_trigger(size, kind=kind, channels=3)
    assert t.pattern.shape == (3, size, size) and t.alpha == 1
    for r in range(size):
        for c in range(size):
            want = 1.0 if kind == "square" or (r + c) % 2 == 0 else 0.0
            assert (t.pattern[:, r, c] == want).all()


@pytest.mark.parametrize("seed", range(12))
def test_patch_lands_exactly_in_its_window_and_nowhere_else(seed):
    gen = torch.Generator().manual_seed(seed)
    C, H, W = [(1, 8, 8), (3, 7, 9), (1, 28, 28), (2, 5, 6)][seed % 4]
    h, w = int(torch.randint(1, H + 1, (), generator=gen)), int(torch.randint(1, W + 1, (), generator=gen))
    pattern = torch.rand(int(torch.randint(0, 2, (), generator=gen)) * (C - 1) + 1, h, w, generator=gen)
    trigger = bd.Trigger(pattern, 1.0)
    x = torch.rand(3, C, H, W, generator=gen)
    x_before = x.clone()
    positions = list(NAMED) + [(int(torch.randint(0, H - h + 1, (), generator=gen)),
                                int(torch.randint(0, W - w + 1, (), generator=gen)))]
    for position in positions:
        row, col = NAMED[position](H, W, h, w) if isinstance(position, str) else position
        out = bd.apply_trigger(x, trigger, position=position)
        assert out.shape == x.shape and out.dtype == x.dtype
        mask = _window_mask(x.shape, row, col, h, w)
        assert torch.equal(out[~mask], x[~mask]), "pixels outside the window changed"
        for r in range(h):
            for c in range(w):
                assert torch.equal(out[:, :, row + r, col + c], pattern[:, r, c].expand(3, C))
        assert bd.trigger_window((H, W), trigger, position) == (row, col)
    assert torch.equal(x, x_before), "apply_trigger modified x"


@pytest.mark.parametrize("seed", range(8))
def test_blend_is_the_convex_combination_on_every_pixel(seed):
    X, _ = _data(seed, n=6, shape=(2, 6, 5), dtype=torch.float64)
    alpha = [0.1, 0.2, 0.5, 0.93][seed % 4]
    trigger = bd.blend_trigger((2, 6, 5), alpha, seed=seed)
    assert trigger.pattern.shape == (2, 6, 5)
    assert trigger.pattern.min() >= 0 and trigger.pattern.max() <= 1
    out = bd.apply_trigger(X, trigger)
    p = trigger.pattern.double()
    for i in range(X.shape[0]):  # the formula, pixel by pixel
        for idx in [(c, r, k) for c in range(2) for r in range(6) for k in range(5)]:
            want = (1 - alpha) * X[i][idx].item() + alpha * p[idx].item()
            assert math.isclose(out[i][idx].item(), want, rel_tol=0, abs_tol=1e-12)
    assert out.min() >= 0 and out.max() <= 1
    # a partial blend on a window: outside it the pixels are untouched
    small = bd.Trigger(torch.rand(2, 3, 2, generator=torch.Generator().manual_seed(seed)), alpha)
    out = bd.apply_trigger(X, small, position=(1, 2))
    mask = _window_mask(X.shape, 1, 2, 3, 2)
    assert torch.equal(out[~mask], X[~mask])
    torch.testing.assert_close(out[:, :, 1:4, 2:4], (1 - alpha) * X[:, :, 1:4, 2:4] + alpha * small.pattern.double())


def test_blend_trigger_is_seeded():
    assert torch.equal(bd.blend_trigger((1, 4, 4), seed=3).pattern, bd.blend_trigger((1, 4, 4), seed=3).pattern)
    assert not torch.equal(bd.blend_trigger((1, 4, 4), seed=3).pattern, bd.blend_trigger((1, 4, 4), seed=4).pattern)


def test_one_image_and_a_batch_agree():
    X, _ = _data(0, n=5, shape=(3, 6, 6))
    t = bd.patch_trigger(2, kind="square")
    batch = bd.apply_trigger(X, t, position="top_right")
    for i in range(5):
        assert torch.equal(bd.apply_trigger(X[i], t, position="top_right"), batch[i])


# ---------------------------------------------------------------- poisoning

@pytest.mark.parametrize("seed", range(30))
def test_poison_dataset_counts_labels_and_untouched_examples(seed):
    gen = torch.Generator().manual_seed(1000 + seed)
    classes = int(torch.randint(2, 6, (), generator=gen))
    n = int(torch.randint(1, 80, (), generator=gen))
    X, y = _data(seed, n=n, classes=classes)
    target = int(torch.randint(0, classes, (), generator=gen))
    rate = [0.0, 1.0, 0.5, float(torch.rand((), generator=gen))][seed % 4]
    X_before, y_before = X.clone(), y.clone()
    Xp, yp, idx = bd.poison_dataset(X, y, rate, target, seed=seed, num_classes=classes)
    assert torch.equal(X, X_before) and torch.equal(y, y_before), "inputs modified in place"
    candidates = [i for i in range(n) if y[i] != target]
    assert idx.dtype == torch.int64 and idx.numel() == _expected_count(rate, len(candidates))
    chosen = idx.tolist()
    assert chosen == sorted(set(chosen)), "indices must be distinct and sorted"
    assert set(chosen) <= set(candidates), "an example of the target class was poisoned"
    for i in range(n):
        if i in chosen:
            assert yp[i] == target
            assert torch.equal(Xp[i], bd.apply_trigger(X[i]))
        else:
            assert yp[i] == y[i]
            assert torch.equal(Xp[i], X[i]), "a clean example changed"
    if rate == 1.0:
        assert chosen == candidates


def test_rounding_of_rate_times_count():
    y = torch.tensor([0] * 10 + [1] * 5)  # 10 candidates for target 1
    X = torch.zeros(15, 1, 4, 4)
    for rate, want in [(0.0, 0), (0.04, 0), (0.05, 1), (0.14, 1), (0.15, 2), (0.25, 3), (0.35, 4), (1.0, 10)]:
        assert bd.poison_dataset(X, y, rate, 1)[2].numel() == want, rate
        assert bd.poison_count(rate, 10) == want


def test_seeds_reproducible_and_selection_uniform():
    X, y = _data(0, n=30, classes=3)
    a = bd.poison_dataset(X, y, 0.3, 2, seed=7)
    b = bd.poison_dataset(X, y, 0.3, 2, seed=7)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    picks = [tuple(bd.poison_dataset(X, y, 0.3, 2, seed=s)[2].tolist()) for s in range(400)]
    assert len(set(picks)) > 300, "different seeds should choose different examples"
    candidates = (y != 2).nonzero().flatten().tolist()
    k = len(picks[0])
    counts = {i: sum(i in p for p in picks) for i in candidates}
    expected = 400 * k / len(candidates)  # each candidate is chosen with probability k / |candidates|
    sd = math.sqrt(400 * (k / len(candidates)) * (1 - k / len(candidates)))
    assert all(abs(c - expected) < 5 * sd for c in counts.values()), counts


def test_poisoning_with_other_triggers_and_positions():
    X, y = _data(3, n=50, shape=(3, 10, 10), classes=5)
    blend = bd.blend_trigger((3, 10, 10), 0.2, seed=1)
    for trigger, position in [(blend, "bottom_right"), (bd.patch_trigger(4, channels=3), (0, 6)),
                              (bd.patch_trigger(10, kind="square"), "center")]:
        Xp, yp, idx = bd.poison_dataset(X, y, 0.4, 0, trigger=trigger, position=position, seed=1)
        assert torch.equal(Xp[idx], bd.apply_trigger(X[idx], trigger, position=position))


# ---------------------------------------------------------------- attack success rate and clean accuracy

class CornerDetector(nn.Module):
    """A hand-made backdoored classifier: class ``target`` when the bottom-right pixel is 1,
    else the argmax of a fixed random linear map."""

    def __init__(self, shape, classes, target, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(math.prod(shape), classes)
        self.target = target

    def forward(self, x):
        logits = self.linear(x.flatten(1))
        fired = x[:, 0, -1, -1] == 1
        boost = torch.zeros_like(logits)
        boost[:, self.target] = 100.0
        return torch.where(fired[:, None], logits + boost, logits)


def test_asr_takes_the_classes_from_the_model_not_from_a_subsets_labels():
    """A test subset holding only class 0 still has a target 1 when the model has 4 classes
    (y.max() + 1 would say there is only one class)."""
    X, _ = _data(1, n=6, classes=4)
    y = torch.zeros(6, dtype=torch.int64)
    model = CornerDetector((1, 8, 8), 4, 1, 0)
    assert bd.attack_success_rate(model, X, y, 1) == 1.0  # the hand-made backdoor always fires
    with pytest.raises(ValueError, match=r"target_label must be a class in \[0, 4\)"):
        bd.attack_success_rate(model, X, y, 4)


@pytest.mark.parametrize("seed", range(12))
def test_asr_and_clean_accuracy_match_brute_force_counting(seed):
    classes = 3 + seed % 3
    X, y = _data(seed, n=37, shape=(1, 6, 6), classes=classes)
    target = seed % classes
    model = CornerDetector((1, 6, 6), classes, target, seed).train(seed % 2 == 0)
    mode = model.training
    trigger = [bd.patch_trigger(2, kind="square"), bd.patch_trigger(3), bd.patch_trigger(1)][seed % 3]
    hits = total = correct = 0
    with torch.no_grad():
        for i in range(X.shape[0]):
            x = X[i].clone()
            correct += int(model(x[None]).argmax(1).item() == y[i].item())
            if y[i] == target:
                continue
            h, w = trigger.size
            x[:, 6 - h:, 6 - w:] = trigger.pattern  # the bottom-right window, by hand
            hits += int(model(x[None]).argmax(1).item() == target)
            total += 1
    for batch_size in (1, 5, 256):
        asr = bd.attack_success_rate(model, X, y, target, trigger=trigger, batch_size=batch_size)
        assert asr == pytest.approx(hits / total, abs=1e-6)
        assert bd.clean_accuracy(model, X, y, batch_size=batch_size) == pytest.approx(correct / X.shape[0], abs=1e-6)
    assert model.training == mode, "the model's mode must be restored"


def test_asr_leaves_out_target_class_images():
    class Constant(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return nn.functional.one_hot(torch.full((x.shape[0],), self.c), 4).float() + 0 * self.dummy

    X, y = _data(5, n=50, classes=4)
    assert bd.attack_success_rate(Constant(2), X, y, 2) == 1.0  # always the target: every try succeeds
    assert bd.attack_success_rate(Constant(1), X, y, 2) == 0.0  # never the target
    assert bd.clean_accuracy(Constant(1), X, y) == pytest.approx((y == 1).float().mean().item())
    with pytest.raises(ValueError, match="every test label"):
        bd.attack_success_rate(Constant(2), X[y == 2], y[y == 2], 2, num_classes=4)


# ---------------------------------------------------------------- bad inputs

def test_bad_inputs_raise_clear_errors():
    X, y = _data(0, n=10, classes=3)
    for rate in (-0.1, 1.1, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="rate"):
            bd.poison_dataset(X, y, rate, 0)
    for target in (-1, 3, 1.0):
        with pytest.raises(ValueError, match="target_label"):
            bd.poison_dataset(X, y, 0.1, target)
        with pytest.raises(ValueError, match="target_label"):
            bd.attack_success_rate(CornerDetector((1, 8, 8), 3, 0, 0), X, y, target)
    with pytest.raises(ValueError, match="target_label"):
        bd.poison_dataset(X, y, 0.1, 10, num_classes=10)
    for bad in (X + 1, X - 1, X * float("nan"), X[0, 0], X[None], (X * 255).to(torch.uint8)):
        with pytest.raises(ValueError, match="x"):
            bd.apply_trigger(bad)
    with pytest.raises(ValueError, match="X"):
        bd.poison_dataset(X * 2, y, 0.1, 0)
    with pytest.raises(ValueError, match="pattern"):
        bd.Trigger(torch.full((1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="X"):
        bd.poison_dataset(X[0], y, 0.1, 0)
    with pytest.raises(ValueError, match="y"):
        bd.poison_dataset(X, y[:5], 0.1, 0)
    with pytest.raises(ValueError, match="y"):
        bd.poison_dataset(X, y.float(), 0.1, 0)
    with pytest.raises(ValueError, match="does not fit"):
        bd.apply_trigger(X, bd.patch_trigger(9))
    for position in ((6, 0), (0, 6), (-1, 0), (7, 7)):
        with pytest.raises(ValueError, match="does not fit"):
            bd.apply_trigger(X, bd.patch_trigger(3), position=position)
    with pytest.raises(ValueError, match="does not fit"):
        bd.poison_dataset(X, y, 0.0, 0, trigger=bd.patch_trigger(9))  # even with nothing to poison
    for position in ("bottom", (1.0, 2), (1, 2, 3)):
        with pytest.raises(ValueError, match="position"):
            bd.apply_trigger(X, position=position)
    with pytest.raises(ValueError, match="channels"):
        bd.apply_trigger(X, bd.patch_trigger(2, channels=3))
    with pytest.raises(ValueError, match="alpha"):
        bd.Trigger(torch.ones(1, 2, 2), 0.0)
    with pytest.raises(ValueError, match="pattern"):
        bd.Trigger(torch.full((1, 2, 2), 2.0))
    with pytest.raises(TypeError, match="trigger"):
        bd.apply_trigger(X, torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="batch_size"):
        bd.clean_accuracy(nn.Flatten(), X, y, batch_size=0)


# ---------------------------------------------------------------- devices

@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_results_stay_on_the_input_device():
    X, y = _data(0, n=30, classes=3)
    Xc, yc = X.cuda(), y.cuda()
    Xp, yp, idx = bd.poison_dataset(Xc, yc, 0.5, 1, seed=2)
    assert Xp.device == Xc.device and yp.device == yc.device and idx.device == Xc.device
    Xp_cpu, yp_cpu, idx_cpu = bd.poison_dataset(X, y, 0.5, 1, seed=2)
    assert torch.equal(idx.cpu(), idx_cpu) and torch.equal(Xp.cpu(), Xp_cpu) and torch.equal(yp.cpu(), yp_cpu)
    model = CornerDetector((1, 8, 8), 3, 1, 0)
    asr_cpu = bd.attack_success_rate(model, X, y, 1)
    assert bd.attack_success_rate(model.cuda(), Xc, yc, 1) == pytest.approx(asr_cpu)
    assert bd.attack_success_rate(model, X, y, 1) == pytest.approx(asr_cpu)  # CPU data, CUDA model


def test_numpy_integers_are_accepted():
    import numpy as np

    X, y = _data(3, n=20, classes=4)
    a = bd.poison_dataset(X, y, 0.25, 2, trigger=bd.patch_trigger(3), position=(1, 2))
    b = bd.poison_dataset(X, y, 0.25, np.int64(2), trigger=bd.patch_trigger(np.int64(3), channels=np.int64(1)),
                          position=(np.int64(1), np.int64(2)))
    assert all(torch.equal(u, v) for u, v in zip(a, b))


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases():
    X, y = _data(0, n=20, classes=4)
    model = CornerDetector((1, 8, 8), 4, 1, 0)
    eq = torch.equal

    def idx(**kw):
        return bd.poison_dataset(X, y, **(dict(rate=0.5, target_label=1, seed=2) | kw))[2]

    def asr(**kw):
        return bd.attack_success_rate(model, X, y, **(dict(target_label=1) | kw))

    return [
        (lambda v: bd.patch_trigger(v).pattern, "size", 3, eq),
        (lambda v: bd.patch_trigger(2, channels=v).pattern, "channels", 1, eq),
        (lambda v: bd.blend_trigger((1, 8, 8), v).pattern, "alpha", 0.25, eq),
        (lambda v: bd.blend_trigger((1, 8, 8), seed=v).pattern, "seed", 3, eq),
        (lambda v: bd.blend_trigger((1, v, 8)).pattern, "shape", 8, eq),
        (lambda v: bd.Trigger(torch.ones(1, 2, 2), v).alpha, "alpha", 0.5, float.__eq__),
        (lambda v: bd.poison_count(v, 10), "rate", 0.5, int.__eq__),
        (lambda v: bd.poison_count(0.5, v), "candidates", 10, int.__eq__),
        (lambda v: idx(rate=v), "rate", 0.5, eq),
        (lambda v: idx(target_label=v), "target_label", 1, eq),
        (lambda v: idx(seed=v), "seed", 2, eq),
        (lambda v: idx(num_classes=v), "num_classes", 4, eq),
        (lambda v: bd.apply_trigger(X, position=(v, 2)), "position", 1, eq),
        (lambda v: asr(target_label=v), "target_label", 1, float.__eq__),
        (lambda v: asr(batch_size=v), "batch_size", 5, float.__eq__),
        (lambda v: asr(num_classes=v), "num_classes", 4, float.__eq__),
        (lambda v: bd.clean_accuracy(model, X, y, batch_size=v), "batch_size", 5, float.__eq__),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(bd).failed == 0


def test_clean_accuracy_is_the_library_accuracy():
    from course_lib import train

    X, y = _data(4, n=30, classes=3)
    model = CornerDetector((1, 8, 8), 3, 1, 0)
    assert bd.clean_accuracy(model, X, y, batch_size=7) == train.accuracy(model, (X, y))
