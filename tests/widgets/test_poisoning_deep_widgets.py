import itertools

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from course_lib import certified_training as ct
from course_lib._checks import ArgumentError
from course_lib.widgets import poisoning_deep as PD

pytestmark = pytest.mark.poisoning


@pytest.fixture(scope="module")
def task():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(24) % 2
    X = (0.5 + 0.3 * (2 * y[:, None] - 1) * torch.ones(1, 3) + 0.2 * torch.randn(24, 3, generator=gen)).double()
    yt = torch.arange(10) % 2
    Xt = (0.5 + 0.3 * (2 * yt[:, None] - 1) * torch.ones(1, 3) + 0.2 * torch.randn(10, 3, generator=gen)).double()
    torch.manual_seed(0)
    return nn.Linear(3, 2).double(), X, y, Xt, yt


def _margins(model, params, X, y):
    with torch.no_grad():
        for p, v in zip(model.parameters(), params):
            p.copy_(v)
        z = model(X)
    return z[torch.arange(len(y)), y] - z.scatter(1, y[:, None], -torch.inf).amax(1)


@pytest.mark.parametrize("seed", range(5))
def test_margin_bounds_contain_every_corner_and_random_point_of_the_box(task, seed):
    model, X, y, Xt, yt = task
    lo, hi = ct.agt_train(model, X, y, k=2, eps=0.05, label_flip=seed % 2 == 0, epochs=2, lr=0.5, batch_size=len(y),
                          seed=seed)
    lower, upper = PD.margin_bounds(model, lo, hi, Xt, yt)
    probe = nn.Linear(3, 2).double()
    gen = torch.Generator().manual_seed(seed)
    # the margin of a linear model is affine in the parameters for a fixed runner-up: its extremes
    # over the box are at corners; 8 parameters -> 256 corners, plus random interior points
    flat_lo = torch.cat([t.flatten() for t in lo])
    flat_hi = torch.cat([t.flatten() for t in hi])
    points = [torch.where(torch.tensor(c, dtype=torch.bool), flat_hi, flat_lo)
              for c in itertools.product([0, 1], repeat=len(flat_lo))]
    points += [flat_lo + torch.rand(len(flat_lo), generator=gen, dtype=torch.float64) * (flat_hi - flat_lo)
               for _ in range(100)]
    worst_lo = torch.full((len(yt),), torch.inf, dtype=torch.float64)
    worst_hi = -worst_lo
    for flat in points:
        params = [flat[:6].view(2, 3), flat[6:]]
        m = _margins(probe, params, Xt, yt)
        worst_lo, worst_hi = torch.minimum(worst_lo, m), torch.maximum(worst_hi, m)
    assert (lower <= worst_lo + 1e-12).all() and (worst_hi <= upper + 1e-12).all()
    # with two classes the bounds are the exact extremes over the box (interval arithmetic on one affine map)
    torch.testing.assert_close(lower, worst_lo, rtol=0, atol=1e-9)
    torch.testing.assert_close(upper, worst_hi, rtol=0, atol=1e-9)
    # certified correct exactly when the lower end is positive
    cert = ct.certified_predictions(model, lo, hi, Xt)
    assert torch.equal(cert == yt, lower > 0)


def test_margin_bounds_collapse_to_the_plain_run_without_poison(task):
    model, X, y, Xt, yt = task
    lo, hi = ct.agt_train(model, X, y, k=0, eps=0.0, epochs=3, lr=0.5, batch_size=8, seed=1)
    plain = ct.sgd_train(model, X, y, epochs=3, lr=0.5, batch_size=8, seed=1)
    lower, upper = PD.margin_bounds(model, lo, hi, Xt, yt)
    expected = _margins(nn.Linear(3, 2).double(), list(plain.parameters()), Xt, yt)
    torch.testing.assert_close(lower, expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(upper, expected, rtol=0, atol=1e-9)


def test_certified_curve_is_certified_accuracy_for_each_k_and_never_rises(task):
    model, X, y, Xt, yt = task
    ks = [0, 1, 2, 4, 8]
    for threat, kwargs in [("label flips", {"eps": 0.0, "label_flip": True}), ("features", {"eps": 0.1})]:
        curve = PD.certified_curve(model, X, y, Xt, yt, ks, threat=threat, eps=0.1, epochs=2, lr=0.5)
        expected = [ct.certified_accuracy(model, *ct.agt_train(model, X, y, k=k, epochs=2, lr=0.5,
                                                                batch_size=len(y), seed=0, **kwargs), Xt, yt)
                    for k in ks]
        assert curve == expected
        assert all(a >= b for a, b in zip(curve, curve[1:]))


def test_plot_margins_colours_by_verdict():
    lower = torch.tensor([-2.0, -0.5, 0.1, 0.3], dtype=torch.float64)
    upper = torch.tensor([-1.0, 0.5, 0.4, 0.9], dtype=torch.float64)
    ax = Figure().subplots()
    PD.plot_margins(ax, lower, upper, plain=(lower + upper) / 2)
    colours = [tuple(np.round(c, 3)) for c in ax.collections[0].get_colors()]
    from matplotlib.colors import to_rgba
    expected = [to_rgba(c) for c in ["tab:red", "0.6", "tab:green", "tab:green"]]
    assert colours == [tuple(np.round(c, 3)) for c in expected]
    assert "50.0%" in ax.get_title()


def test_explorer_builds_and_moving_k_or_the_threat_rebounds(task):
    model, X, y, Xt, yt = task
    before = [p.detach().clone() for p in model.parameters()]
    ex = PD.certified_poisoning_explorer(model, X, y, Xt, yt, k=1, k_max=4, eps=0.1, epochs=2, lr=0.5)
    assert bytes(ex.image.value[:8]) == b"\x89PNG\r\n\x1a\n"
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the model is left alone
    first = bytes(ex.image.value)
    ex.k.value = 3
    lo, hi = ct.agt_train(model, X, y, k=3, eps=0.0, label_flip=True, epochs=2, lr=0.5, batch_size=len(y), seed=0)
    for a, b in zip(ex.bounds, PD.margin_bounds(model, lo, hi, Xt, yt)):
        torch.testing.assert_close(a, b)
    assert bytes(ex.image.value) != first
    ex.threat.value = "features"
    lo, hi = ct.agt_train(model, X, y, k=3, eps=0.1, epochs=2, lr=0.5, batch_size=len(y), seed=0)
    torch.testing.assert_close(ex.bounds[0], PD.margin_bounds(model, lo, hi, Xt, yt)[0])
    assert set(ex.curves) == {"label flips", "features"} and len(ex.curves["features"]) == 5
    lower, upper = ex.bounds
    assert ((lower <= ex.plain_margin + 1e-12) & (ex.plain_margin <= upper + 1e-12)).all()


def test_bad_input(task):
    model, X, y, Xt, yt = task
    with pytest.raises(ArgumentError, match=r"\bk\b"):
        PD.certified_poisoning_explorer(model, X, y, Xt, yt, k=5, k_max=4)
    with pytest.raises(ArgumentError, match="k_max"):
        PD.certified_poisoning_explorer(model, X, y, Xt, yt, k_max=len(y) + 1)
    with pytest.raises(ArgumentError, match="eps"):
        PD.certified_poisoning_explorer(model, X, y, Xt, yt, eps=-0.1)
    with pytest.raises(ArgumentError, match="threat"):
        PD.certified_curve(model, X, y, Xt, yt, [0], threat="both")
    with pytest.raises(ValueError, match="y must be"):
        PD.margin_bounds(model, *ct.agt_train(model, X, y, k=0, eps=0.0, epochs=1, lr=0.1, batch_size=4), Xt,
                         yt.double())
    with pytest.raises(ValueError, match="y must be"):
        PD.margin_bounds(model, *ct.agt_train(model, X, y, k=0, eps=0.0, epochs=1, lr=0.1, batch_size=4), Xt,
                         yt + 2)


# ---------------------------------------------------------------- one argument policy

def _policy_cases(task):
    model, X, y, Xt, yt = task
    X, y = X[:8], y[:8]

    def curve(**kw):
        return PD.certified_curve(model, X, y, Xt, yt, [0, 1], **(dict(eps=0.1, epochs=1, lr=0.5) | kw))

    def explorer(**kw):
        ex = PD.certified_poisoning_explorer(model, X, y, Xt, yt,
                                             **(dict(k=1, k_max=2, eps=0.1, epochs=1, lr=0.5) | kw))
        return ex.bounds[0]

    close = lambda a, b: torch.allclose(a, b)  # noqa: E731
    return [
        (lambda v: curve(eps=v, threat="features"), "eps", 0.1, list.__eq__),
        (lambda v: curve(epochs=v), "epochs", 2, list.__eq__),
        (lambda v: curve(lr=v), "lr", 0.25, list.__eq__),
        (lambda v: curve(batch_size=v), "batch_size", 4, list.__eq__),
        (lambda v: explorer(eps=v), "eps", 0.1, close),
        (lambda v: explorer(epochs=v), "epochs", 2, close),
        (lambda v: explorer(lr=v), "lr", 0.25, close),
        (lambda v: explorer(batch_size=v), "batch_size", 4, close),
        (lambda v: explorer(k=v), "k", 1, close),
        (lambda v: explorer(k_max=v), "k_max", 2, close),
        (lambda v: explorer(seed=v), "seed", 3, close),
    ]


@pytest.mark.parametrize("case", range(11))
def test_argument_policy(task, case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases(task)[case]
    check_policy(call, name, value, same)
