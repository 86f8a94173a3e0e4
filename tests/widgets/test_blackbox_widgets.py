import matplotlib
import pytest
import torch
from torch import nn

from course_lib import blackbox
from course_lib.widgets import blackbox as blackbox_widgets
from course_lib.widgets.attacks import predict
from strategies import classified_case

matplotlib.use("Agg")  # no display in tests (conftest does it too)

pytestmark = pytest.mark.attacks


@pytest.fixture(scope="module")
def setup():
    return classified_case()  # tests/strategies.py


def test_budget_ladder_is_1_2_5_up_to_the_maximum():
    assert blackbox_widgets.budget_ladder(1) == [1]
    assert blackbox_widgets.budget_ladder(1000) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert blackbox_widgets.budget_ladder(70, include=[7, 70]) == [1, 2, 5, 7, 10, 20, 50, 70]
    with pytest.raises(ValueError, match="queries"):
        blackbox_widgets.budget_ladder(70, include=[71])


@pytest.mark.parametrize("attack", blackbox_widgets.ATTACKS)
def test_explorer_runs_the_library_attack(setup, attack):
    model, x, y = setup
    ex = blackbox_widgets.query_explorer(model, x, y, queries=50, max_queries=200, eps=0.3, attack=attack, seed=3)
    assert bytes(ex.image.value[:8]) == b"\x89PNG\r\n\x1a\n"
    run = blackbox.square_attack if attack == "Square" else blackbox.nes_attack
    expected, used = run(model, x, y, 0.3, queries=50, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ex.x_adv, expected)
    assert torch.equal(ex.used, used) and (ex.used <= 50).all()
    pred, _ = predict(model, expected)
    assert ex.correct == int((pred == y).sum())
    title = ex.figure.get_suptitle()
    assert f"{attack}, eps = 0.300, 50 queries per image: {ex.correct} of 4 still correct" in title
    if ex.correct < 4:  # the broken ones' query counts, sorted (every digit starts correct here)
        took = used[pred != y].sort().values.tolist()
        assert title.endswith(f"{4 - ex.correct} broken, after " + ", ".join(map(str, took)) + " queries")


def test_digits_wrong_before_the_attack_are_counted_apart(setup):
    model, x, y = setup
    y_wrong = y.clone()
    y_wrong[1] = (y[1] + 1) % 3  # misclassified before any attack: the clean check is its one query
    ex = blackbox_widgets.query_explorer(model, x, y_wrong, queries=50, max_queries=50, eps=0.3)
    assert int(ex.used[1]) == 1
    assert ex.figure.get_suptitle().endswith("(1 wrong before the attack)")
    pred, _ = predict(model, ex.x_adv)
    broken = (pred != y_wrong) & (torch.arange(4) != 1)
    if broken.any():
        assert f"{int(broken.sum())} broken, after " in ex.figure.get_suptitle()


def test_the_attack_only_queries_the_model(setup):
    model, x, y = setup

    class NoBackward(nn.Module):
        def forward(self, t):
            out = model(t)
            if out.requires_grad:
                out.register_hook(lambda g: (_ for _ in ()).throw(AssertionError("backward called")))
            return out

    ex = blackbox_widgets.query_explorer(NoBackward(), x, y, queries=20, max_queries=50)
    ex.attack.value = "NES"
    assert (ex.used <= 20).all()


def test_moving_the_sliders_reruns_and_redraws(setup):
    model, x, y = setup
    ex = blackbox_widgets.query_explorer(model, x, y, queries=5, max_queries=500, eps=0.05)
    before = bytes(ex.image.value)
    ex.queries.value = 500
    ex.eps.value = 0.4
    expected, used = blackbox.square_attack(model, x, y, 0.4, queries=500, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ex.x_adv, expected)
    assert torch.equal(ex.used, used)
    assert "eps = 0.400, 500 queries" in ex.figure.get_suptitle()
    assert bytes(ex.image.value) != before
    assert all(len(ax.images) == 1 for ax in ex.axes.flat)  # old images cleared
    ex.eps.value = 0.0
    torch.testing.assert_close(ex.x_adv, x)
    assert ex.correct == 4


def test_same_settings_give_the_same_picture(setup):
    model, x, y = setup
    ex = blackbox_widgets.query_explorer(model, x, y, queries=100, max_queries=200, eps=0.2)
    first = ex.x_adv.clone()
    ex.queries.value = 200
    ex.queries.value = 100
    torch.testing.assert_close(ex.x_adv, first)


@pytest.mark.parametrize("kwargs, name", [
    ({"eps": 0.6}, "eps"),
    ({"eps": -0.1}, "eps"),
    ({"eps_max": 0.0, "eps": 0.0}, "eps_max"),
    ({"queries": 0}, "queries"),
    ({"queries": 2000}, "queries"),
    ({"max_queries": 0, "queries": 1}, "max_queries"),
    ({"attack": "PGD"}, "attack"),
    ({"seed": -1}, "seed"),
])
def test_bad_input_names_the_argument(setup, kwargs, name):
    model, x, y = setup
    with pytest.raises(ValueError, match=name):
        blackbox_widgets.query_explorer(model, x, y, **kwargs)


def test_bad_images_are_rejected(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        blackbox_widgets.query_explorer(model, x * 2, y)
    with pytest.raises(ValueError, match="N <= 12"):
        blackbox_widgets.query_explorer(model, x.repeat(4, 1, 1, 1), y.repeat(4))


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases(setup):
    model, x, y = setup
    x, y = x[:2], y[:2]  # each case draws a few pictures: small ones
    one = blackbox_widgets.query_explorer(model, x, y, queries=10, max_queries=20)

    def x_adv(**kw):
        return blackbox_widgets.query_explorer(model, x, y, **(dict(queries=10, max_queries=20, eps=0.1) | kw)).x_adv

    def close(a, b):
        return torch.allclose(a, b, atol=1e-6)

    def run(v):
        return one.run_attack(10, v, "Square")[0]

    return [
        (lambda v: x_adv(eps=v), "eps", 0.1, close),
        (lambda v: x_adv(eps_max=v), "eps_max", 0.25, close),
        (lambda v: x_adv(queries=v), "queries", 10, torch.equal),
        (lambda v: x_adv(max_queries=v), "max_queries", 20, torch.equal),
        (lambda v: x_adv(seed=v), "seed", 2, torch.equal),
        (run, "eps", 0.1, close),
        (lambda v: one.run_attack(v, 0.1, "Square")[0], "queries", 10, close),
        (lambda v: blackbox_widgets.budget_ladder(v), "max_queries", 300, list.__eq__),
    ]


@pytest.mark.parametrize("case", range(8))
def test_argument_policy(setup, case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases(setup)[case]
    check_policy(call, name, value, same)


def test_explorer_is_an_explorer_with_the_shared_eps_slider(setup):
    from course_lib.widgets.explorer import Explorer

    model, x, y = setup
    ex = blackbox_widgets.query_explorer(model, x, y, queries=10, max_queries=100, eps=0.1, eps_max=0.3)
    assert isinstance(ex, Explorer) and ex.controls == [ex.queries, ex.eps, ex.attack]
    assert ex.eps.max == 0.3 and ex.eps.step == pytest.approx(0.3 / 60)
    assert list(ex.queries.options) == [1, 2, 5, 10, 20, 50, 100]


def test_docstring_examples():
    import doctest

    assert doctest.testmod(blackbox_widgets).failed == 0
