"""course_lib.losses: the batch losses, also reachable from course_lib.train (their old home).

Their behaviour is tested where the lectures use them: tests/test_adversarial_training.py and
tests/test_smoothing.py; here, the names, the argument policy and the docstring examples. The
certified-training losses (IBP, CROWN-IBP) moved to course_lib.certified_losses:
tests/test_certified_losses.py and tests/test_ibp_training.py.
"""

import pytest
import torch
from torch import nn

from course_lib import attacks, losses, train

pytestmark = pytest.mark.train

NAMES = ["AdversarialLoss", "BatchLoss", "EpsRamp", "GaussianNoiseLoss", "adversarial_loss",
         "cross_entropy_loss", "fgsm_rs_attack", "gaussian_noise_loss", "pgd_attack"]


@pytest.mark.parametrize("name", NAMES)
def test_train_reexports_every_loss(name):
    assert getattr(train, name) is getattr(losses, name)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def _policy_cases():
    model = _model()
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])

    def same_float(a, b):
        return a == pytest.approx(b, abs=1e-6)

    def close(a, b):
        return torch.allclose(a, b, atol=1e-6)

    return [
        (lambda v: losses.EpsRamp(v, 4).eps_at(2), "eps", 0.3, same_float),
        (lambda v: losses.EpsRamp(0.3, v).eps_at(2), "ramp_batches", 4, float.__eq__),
        (lambda v: losses.adversarial_loss(attacks.fgsm, v).eps, "eps", 0.3, same_float),
        (lambda v: losses.adversarial_loss(attacks.fgsm, 0.3, ramp_batches=v).ramp_batches, "ramp_batches", 4,
         int.__eq__),
        (lambda v: losses.AdversarialLoss(attacks.fgsm, v).eps, "eps", 0.3, same_float),
        (lambda v: losses.pgd_attack(v, random_start=False)(model, x, y, 0.1), "steps", 3, torch.equal),
        (lambda v: losses.pgd_attack(3, alpha_ratio=v, random_start=False)(model, x, y, 0.1), "alpha_ratio", 0.5,
         close),
        (lambda v: losses.fgsm_rs_attack(alpha_ratio=v, generator=torch.Generator().manual_seed(0))(model, x, y, 0.1),
         "alpha_ratio", 1.25, close),
        (lambda v: losses.gaussian_noise_loss(v).sigma, "sigma", 0.25, same_float),
        (lambda v: losses.GaussianNoiseLoss(v).sigma, "sigma", 0.25, same_float),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_flags_and_generators_are_checked():
    with pytest.raises(ValueError, match="random_start"):
        losses.pgd_attack(3, random_start=1)
    with pytest.raises(TypeError, match="generator"):
        losses.gaussian_noise_loss(0.25, generator=0)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(losses).failed == 0
