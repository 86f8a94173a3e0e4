import random

import numpy as np
import pytest
import torch

import course_lib as cl


def test_get_device_default_is_available(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    device = cl.get_device()
    assert isinstance(device, torch.device)
    torch.zeros(2, device=device)  # the device actually works


def test_get_device_cpu_and_env(monkeypatch):
    assert cl.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert cl.get_device() == torch.device("cpu")


def test_get_device_rejects_missing_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here, so asking for it is not an error")
    with pytest.raises(ValueError, match="prefer"):
        cl.get_device("cuda")
    with pytest.raises(ValueError, match="prefer"):
        cl.get_device("not-a-device")


def test_seed_everything_repeats_all_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3)

    cl.seed_everything(123)
    a = draw()
    cl.seed_everything(123)
    b = draw()
    assert a[0] == b[0] and a[1] == b[1]
    torch.testing.assert_close(a[2], b[2])
    gen = cl.seed_everything(5)
    assert torch.equal(torch.rand(2, generator=gen), torch.rand(2, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "3", True])
def test_seed_everything_rejects_bad_seed(bad):
    with pytest.raises(ValueError, match="seed"):
        cl.seed_everything(bad)


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases():
    from course_lib import device

    def draw(g):
        return torch.rand(3, generator=g)

    def setup_threads(v):
        before = torch.get_num_threads()
        try:
            return device.setup(0, "cpu", threads=v)
        finally:
            torch.set_num_threads(before)

    return [
        (lambda v: draw(device.generator(v)), "seed", 3, torch.equal),
        (lambda v: draw(device.seed_everything(v)), "seed", 3, torch.equal),
        (lambda v: device.setup(v, "cpu", threads=None), "seed", 3, None),
        (setup_threads, "threads", 1, None),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    from course_lib import device

    assert doctest.testmod(device).failed == 0
