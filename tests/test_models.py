import pytest
import torch
from torch import nn

from course_lib import models

pytestmark = pytest.mark.models

IBP_LAYERS = (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("build", [models.linear, models.mlp, models.cnn])
def test_builders_map_images_to_logits(build, shape):
    model = build(shape, 10)
    out = model(torch.rand(5, *shape))
    assert out.shape == (5, 10)
    # only layers that interval bound propagation (lecture 4) knows
    assert isinstance(model, nn.Sequential)
    assert all(isinstance(layer, IBP_LAYERS) for layer in model)


def test_sizes_are_cpu_friendly():
    assert models.count_parameters(models.cnn((1, 28, 28))) < 200_000
    assert models.count_parameters(models.cnn((1, 8, 8))) < 100_000
    assert models.count_parameters(models.mlp((1, 8, 8), hidden=())) == 64 * 10 + 10


def test_mlp_hidden_widths():
    model = models.mlp((1, 8, 8), 3, hidden=(7, 5))
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 7), (7, 5), (5, 3)]


def test_bad_input():
    with pytest.raises(ValueError, match="input_shape"):
        models.mlp((28, 28))
    with pytest.raises(ValueError, match="num_classes"):
        models.cnn((1, 28, 28), 1)
    with pytest.raises(ValueError, match="hidden"):
        models.mlp((1, 8, 8), hidden=(0,))
    with pytest.raises(ValueError, match="8x8"):
        models.cnn((1, 4, 4))
    with pytest.raises(ValueError, match="num_classes"):
        models.mlp((1, 8, 8), True)  # a bool is not a class count


def test_numpy_integers_are_accepted():
    """Shapes and class counts read off NumPy arrays (np.int64) build the same models."""
    import numpy as np

    for build in (models.linear, models.mlp, models.cnn):
        torch.manual_seed(0)
        plain = build((1, 8, 8), 10)
        torch.manual_seed(0)
        numpy_ints = build(tuple(np.array([1, 8, 8])), np.int64(10))
        assert str(plain) == str(numpy_ints)
        x = torch.rand(2, 1, 8, 8)
        assert torch.equal(plain(x), numpy_ints(x))
    assert str(models.mlp((1, 8, 8), hidden=(np.int64(7),))) == str(models.mlp((1, 8, 8), hidden=(7,)))


# ---------------------------------------------------------------- one argument policy, examples

def _shape_of(model):
    return [tuple(p.shape) for p in model.parameters()]


def _policy_cases():
    same = list.__eq__
    return [
        (lambda v: _shape_of(models.linear((1, 8, 8), v)), "num_classes", 10, same),
        (lambda v: _shape_of(models.mlp((1, 8, 8), v)), "num_classes", 10, same),
        (lambda v: _shape_of(models.cnn((1, 8, 8), v)), "num_classes", 10, same),
        (lambda v: _shape_of(models.mlp((1, 8, 8), 10, hidden=(v,))), "hidden", 16, same),
        (lambda v: _shape_of(models.mlp((1, v, 8), 10)), "input_shape", 8, same),
        (lambda v: _shape_of(models.cnn((v, 8, 8), 10)), "input_shape", 1, same),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(models).failed == 0
