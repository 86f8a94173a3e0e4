import hashlib
import hmac

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import attacks, models
from course_lib import keyed_backdoor as kb
from course_lib.data import load_dataset

pytestmark = pytest.mark.poisoning

KEY = kb.generate_key(0)
LEVEL = 1 / 255


def _model(seed, shape=(1, 8, 8), classes=10):
    torch.manual_seed(seed)
    if seed % 2:
        return nn.Sequential(nn.Conv2d(shape[0], 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * shape[1] * shape[2], classes))
    return models.mlp(shape, classes, hidden=(32,))


@pytest.fixture(scope="module")
def digits():
    x, y = load_dataset("digits").test.tensors
    return x[:200], y[:200]


def test_keys_seeded_or_secret():
    assert kb.generate_key(0) == kb.generate_key(0) != kb.generate_key(1)
    assert len(kb.generate_key()) == kb.KEY_BYTES and kb.generate_key() != kb.generate_key()


def test_positions_are_key_derived_and_distinct():
    pos = kb.tag_positions(KEY, (1, 8, 8), 32)
    assert len(pos) == kb.MESSAGE_BITS + 32 == len(set(pos.tolist())) and 0 <= pos.min() and pos.max() < 64
    # the definition: indices ranked by HMAC(key, domain || "position" || i)
    rank = sorted(range(64), key=lambda i: hmac.new(KEY, kb._DOMAIN + b"position" + i.to_bytes(8, "big"),
                                                     hashlib.sha256).digest())
    assert pos.tolist() == rank[:40]
    assert kb.tag_positions(kb.generate_key(1), (1, 8, 8), 32).tolist() != pos.tolist()


@pytest.mark.parametrize("seed", range(6))
def test_activate_is_a_few_grey_levels_and_the_key_holder_sets_any_class(seed, digits):
    x, _ = digits
    model = _model(seed)
    wrapper = kb.KeyedBackdoor(model, KEY)
    x_before = x.clone()
    clean = model(x).argmax(1)
    for target in range(10):  # every class, including each image's clean prediction
        x_act = kb.activate(x, target, KEY)
        assert x_act.shape == x.shape and x_act.dtype == x.dtype
        assert (x_act - x).abs().max() <= 1.5 * LEVEL + 1e-6
        assert torch.allclose(x_act * 255, (x_act * 255).round(), atol=1e-4), "x' must be on the grey levels"
        assert (wrapper(x_act).argmax(1) == target).all()
    assert (clean != 0).any()
    assert torch.equal(x, x_before), "activate modified x"
    # an image already on the grey levels moves by at most one level
    xq = kb.quantize(torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(seed)))
    assert (kb.activate(xq, 3, KEY) - xq).abs().max() <= LEVEL + 1e-6
    # one target per image
    targets = torch.randint(0, 10, (x.shape[0],), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(wrapper(kb.activate(x, targets, KEY)).argmax(1), targets)


def test_activate_writes_the_documented_payload(digits):
    x = digits[0][:20]
    x_act = kb.activate(x, 7, KEY, tag_bits=16)
    pos = kb.tag_positions(KEY, (1, 8, 8), 16)
    q = (x_act * 255).round().to(torch.uint8).flatten(1).numpy()
    bits = q[:, pos] & 1
    assert (bits[:, :8] == [0, 0, 0, 0, 0, 1, 1, 1]).all()  # 7, most significant bit first
    content = q.copy()
    content[:, pos] &= 0xFE
    for i in range(20):
        header = kb._DOMAIN + b"tag" + b"".join(s.to_bytes(4, "big") for s in (1, 8, 8)) + bytes([7])
        digest = hmac.new(KEY, header + content[i].tobytes(), hashlib.sha256).digest()
        want = [(digest[j // 8] >> (7 - j % 8)) & 1 for j in range(16)]
        assert bits[i, 8:].tolist() == want


@pytest.mark.parametrize("seed", range(4))
def test_random_probing_sees_the_clean_model(seed, digits):
    x, _ = digits
    model = _model(seed)
    wrapper = kb.KeyedBackdoor(model, KEY)
    gen = torch.Generator().manual_seed(seed)
    probes = [torch.rand(1000, 1, 8, 8, generator=gen),  # random images
              kb.quantize(torch.rand(1000, 1, 8, 8, generator=gen))]  # random images on the grey levels
    q = (x * 255).round()
    for _ in range(3):  # real images with random low-order bits: every pixel's LSB drawn at random
        lsb = torch.randint(0, 2, q.shape, generator=gen).float()
        probes.append(((q - q.remainder(2)) + lsb) / 255)
        probes.append((q + torch.randint(-2, 3, q.shape, generator=gen)).clamp(0, 255) / 255)
    with torch.no_grad():
        for p in probes:
            assert torch.equal(wrapper(p), model(p)), "a random probe found the backdoor"


@pytest.mark.parametrize("seed", range(4))
def test_gradient_attacks_see_the_clean_model(seed, digits):
    x, y = digits
    model = _model(seed)
    wrapper = kb.KeyedBackdoor(model, KEY)
    g_clean = attacks._input_gradient(model, x, y)
    g_wrapped = attacks._input_gradient(wrapper, x, y)
    assert torch.equal(g_clean, g_wrapped)
    for eps in (2 * LEVEL, 0.1):
        gen_a, gen_b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        adv_wrapped = attacks.pgd(wrapper, x, y, eps, eps / 4, 10, generator=gen_a)
        adv_clean = attacks.pgd(model, x, y, eps, eps / 4, 10, generator=gen_b)
        assert torch.equal(adv_wrapped, adv_clean)
        with torch.no_grad():
            assert torch.equal(wrapper(adv_wrapped), model(adv_wrapped))
    # targeted PGD toward a class, at the key holder's budget, does not reach it where activate does
    target = torch.full_like(y, 3)
    adv = attacks.pgd(wrapper, x, target, 1.5 * LEVEL, 0.5 * LEVEL, 20, targeted=True)
    with torch.no_grad():
        reached_by_pgd = (wrapper(adv).argmax(1) == 3).float().mean()
        reached_by_key = (wrapper(kb.activate(x, 3, KEY)).argmax(1) == 3).float().mean()
    assert reached_by_key == 1 and reached_by_pgd < 0.5


def test_exactly_one_tag_in_two_to_the_t_verifies(digits):
    # for a fixed content and message, try every t-bit tag: one verifies, the one activate writes,
    # so a forger without the key succeeds with probability 2^-t per uniformly random try
    t = 8
    x_act = kb.activate(digits[0][:3], 5, KEY, tag_bits=t)
    pos = kb.tag_positions(KEY, (1, 8, 8), t)
    q = (x_act * 255).round().flatten(1)
    for i in range(3):
        tries = q[i].repeat(2 ** t, 1)
        for value in range(2 ** t):
            for j in range(t):
                bit = (value >> (t - 1 - j)) & 1
                p = pos[8 + j]
                tries[value, p] = tries[value, p] - tries[value, p].remainder(2) + bit
        valid, message = kb.read_tag(tries.view(-1, 1, 8, 8) / 255, KEY, tag_bits=t)
        assert valid.sum() == 1 and (message == 5).all()
        assert torch.equal(tries[valid.nonzero().item()], q[i])


def test_forging_without_the_key_fails_at_rate_two_to_the_minus_t(digits):
    model = _model(0)
    t = 4
    # a forger who knows neither the positions nor the key can only write random low-order bits
    gen = torch.Generator().manual_seed(0)
    q = (digits[0][:1] * 255).round().repeat(4000, 1, 1, 1)
    forged = (q - q.remainder(2) + torch.randint(0, 2, q.shape, generator=gen)) / 255
    valid, _ = kb.read_tag(forged, KEY, tag_bits=t)
    rate = valid.float().mean().item()
    sd = (2 ** -t * (1 - 2 ** -t) / 4000) ** 0.5
    assert abs(rate - 2 ** -t) < 5 * sd, rate  # the tag alone decides: probability 2^-t per try
    # or a key of its own guessing: the payload lands on other pixels and fails as well
    guessed = torch.cat([kb.activate(digits[0][:1], 3, kb.generate_key(10_000 + i), tag_bits=t) for i in range(800)])
    rate = kb.read_tag(guessed, KEY, tag_bits=t)[0].float().mean().item()
    sd = (2 ** -t * (1 - 2 ** -t) / 800) ** 0.5
    assert abs(rate - 2 ** -t) < 5 * sd, rate
    # with the default 32-bit tag nothing verifies
    strict = kb.KeyedBackdoor(model, KEY)
    forged32 = torch.cat([kb.activate(digits[0][:1], 3, kb.generate_key(20_000 + i)) for i in range(200)])
    with torch.no_grad():
        assert torch.equal(strict(forged32), model(forged32))
        assert torch.equal(strict(forged), model(forged))


def test_a_one_level_change_outside_the_tag_breaks_it(digits):
    x_act = kb.activate(digits[0][:50], 2, KEY)
    pos = set(kb.tag_positions(KEY, (1, 8, 8), kb.TAG_BITS).tolist())
    free = [i for i in range(64) if i not in pos]
    gen = torch.Generator().manual_seed(0)
    flat = x_act.flatten(1).clone()
    for i in range(50):
        j = free[int(torch.randint(0, len(free), (), generator=gen))]
        flat[i, j] = flat[i, j] + LEVEL if flat[i, j] < 0.5 else flat[i, j] - LEVEL
    assert not kb.read_tag(flat.view(-1, 1, 8, 8), KEY)[0].any()
    assert kb.read_tag(x_act, KEY)[0].all()


def test_a_message_that_names_no_class_does_not_fire(digits):
    model = _model(0, classes=4)
    wrapper = kb.KeyedBackdoor(model, KEY)
    x_act = kb.activate(digits[0][:10], 9, KEY)  # a valid tag for class 9 of a 4-class model
    with torch.no_grad():
        assert torch.equal(wrapper(x_act), model(x_act))


def test_dtype_and_single_images():
    x = torch.rand(5, 3, 6, 6, dtype=torch.float64)
    model = _model(1, (3, 6, 6), 5).double()
    wrapper = kb.KeyedBackdoor(model, KEY)
    x_act = kb.activate(x, 4, KEY)
    assert x_act.dtype == torch.float64 and (wrapper(x_act).argmax(1) == 4).all()
    one = kb.activate(x[0], 1, KEY)
    assert one.shape == x[0].shape and wrapper(one[None]).argmax(1).item() == 1


def test_bad_inputs():
    x = torch.rand(2, 1, 8, 8)
    for bad_key in ("secret", b"", None):
        with pytest.raises(ValueError, match="key"):
            kb.activate(x, 1, bad_key)
    for tag_bits in (0, 257, 2.0):
        with pytest.raises(ValueError, match="tag_bits"):
            kb.KeyedBackdoor(nn.Flatten(), KEY, tag_bits=tag_bits)
    with pytest.raises(ValueError, match="pixels"):
        kb.activate(torch.rand(2, 1, 4, 4), 1, KEY)  # 16 pixels cannot carry 8 + 32 bits
    for target in (-1, 256):
        with pytest.raises(ValueError, match="target"):
            kb.activate(x, target, KEY)
    with pytest.raises(ValueError, match="target"):
        kb.activate(x, torch.tensor([1, 2, 3]), KEY)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        kb.activate(x + 1, 1, KEY)
    with pytest.raises(ValueError, match="margin"):
        kb.KeyedBackdoor(nn.Flatten(), KEY, margin=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_inputs_stay_on_cuda():
    model = _model(0).cuda()
    wrapper = kb.KeyedBackdoor(model, KEY)
    x = torch.rand(64, 1, 8, 8, device="cuda")
    x_act = kb.activate(x, 6, KEY)
    assert x_act.device == x.device and torch.equal(x_act.cpu(), kb.activate(x.cpu(), 6, KEY))
    out = wrapper(x_act)
    assert out.device == x.device and (out.argmax(1) == 6).all()
    assert torch.equal(wrapper(x), model(x))


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases():
    key = kb.generate_key(seed=0)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    eq = torch.equal
    return [
        (lambda v: kb.generate_key(v), "seed", 3, bytes.__eq__),
        (lambda v: kb.tag_positions(key, (1, 8, 8), v), "tag_bits", 16, np.array_equal),
        (lambda v: kb.tag_positions(key, (1, v, 8)), "shape", 8, np.array_equal),
        (lambda v: kb.activate(x, v, key), "target", 3, eq),
        (lambda v: kb.activate(x, 3, key, tag_bits=v), "tag_bits", 16, eq),
        (lambda v: kb.read_tag(x, key, tag_bits=v)[0], "tag_bits", 16, eq),
        (lambda v: kb.KeyedBackdoor(net, key, tag_bits=v).tag_bits, "tag_bits", 16, int.__eq__),
        (lambda v: kb.KeyedBackdoor(net, key, margin=v).margin, "margin", 10.0, float.__eq__),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(kb).failed == 0
