import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from course_lib import attacks
from course_lib.widgets import attacks as attack_widgets
from strategies import classified_case

matplotlib.use("Agg")  # no display in tests (conftest does it too)

pytestmark = pytest.mark.attacks


@pytest.fixture(scope="module")
def setup():
    return classified_case()  # tests/strategies.py


def _axes(n):
    return np.array(Figure().subplots(3, n, squeeze=False), dtype=object)


def test_predict_matches_the_argmax_and_softmax_and_keeps_the_mode(setup):
    model, x, _ = setup
    model.train()
    pred, conf = attack_widgets.predict(model, x)
    assert model.training
    model.eval()
    with torch.no_grad():
        probs = model(x).softmax(1)
    torch.testing.assert_close(pred, probs.argmax(1))
    torch.testing.assert_close(conf, probs.max(1).values)


def test_plot_attack_titles_carry_predictions_and_norms(setup):
    model, x, y = setup
    x_adv = attacks.fgsm(model, x, y, 0.2)
    axes = attack_widgets.plot_attack(model, x, x_adv, y, classes=["a", "b", "c"], axes=_axes(4))
    assert axes.shape == (3, 4)
    pred, _ = attack_widgets.predict(model, x_adv)
    for i in range(4):
        assert axes[0, i].get_title().startswith(f"{'abc'[int(y[i])]} -> {'abc'[int(y[i])]} (")
        assert axes[2, i].get_title().startswith("abc"[int(pred[i])])
        wrong = int(pred[i]) != int(y[i])
        assert (axes[2, i].title.get_color() == "red") == wrong
        d = (x_adv[i] - x[i]).flatten()
        assert axes[1, i].get_title() == f"L-inf {float(d.abs().max()):.2f}, L2 {float(d.norm()):.2f}"
    # delta is drawn on one symmetric scale for every column
    lims = {axes[1, i].images[0].get_clim() for i in range(4)}
    (lo, hi), = lims
    assert lo == -hi and hi == pytest.approx(float((x_adv - x).abs().max()))


def test_plot_attack_rejects_bad_shapes(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="x_adv"):
        attack_widgets.plot_attack(model, x, x[:2], y, axes=_axes(4))
    with pytest.raises(ValueError, match="axes"):
        attack_widgets.plot_attack(model, x, x, y, axes=_axes(3))
    with pytest.raises(ValueError, match="y"):
        attack_widgets.plot_attack(model, x, x, y[:2], axes=_axes(4))


@pytest.mark.parametrize("attack", attack_widgets.ATTACKS)
def test_explorer_runs_the_library_attack(setup, attack):
    model, x, y = setup
    ex = attack_widgets.eps_explorer(model, x, y, eps=0.15, attack=attack, steps=5, seed=3)
    assert bytes(ex.image.value[:8]) == b"\x89PNG\r\n\x1a\n"
    if attack == "FGSM":
        expected = attacks.fgsm(model, x, y, 0.15)
    else:
        expected = attacks.pgd(model, x, y, 0.15, alpha=0.15 / 4, steps=5,
                               generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ex.x_adv, expected)
    pred, _ = attack_widgets.predict(model, expected)
    assert ex.correct == int((pred == y).sum())
    assert f"{ex.correct} of 4 still correct" in ex.figure.get_suptitle()


def test_moving_the_slider_reruns_and_redraws(setup):
    model, x, y = setup
    ex = attack_widgets.eps_explorer(model, x, y, eps=0.05, attack="FGSM")
    before = bytes(ex.image.value)
    ex.eps.value = 0.3
    torch.testing.assert_close(ex.x_adv, attacks.fgsm(model, x, y, 0.3))
    assert "eps = 0.300" in ex.figure.get_suptitle()
    assert bytes(ex.image.value) != before
    assert all(len(ax.images) == 1 for ax in ex.axes.flat)  # old images cleared
    ex.eps.value = 0.0
    torch.testing.assert_close(ex.x_adv, x)
    assert ex.correct == 4


def test_same_settings_give_the_same_picture(setup):
    model, x, y = setup
    ex = attack_widgets.eps_explorer(model, x, y, eps=0.2, attack="PGD", steps=4)
    first = ex.x_adv.clone()
    ex.eps.value = 0.1
    ex.eps.value = 0.2
    torch.testing.assert_close(ex.x_adv, first)


@pytest.mark.parametrize("kwargs, name", [
    ({"eps": 0.5}, "eps"),
    ({"eps": -0.1}, "eps"),
    ({"eps_max": 0.0, "eps": 0.0}, "eps_max"),
    ({"attack": "CW"}, "attack"),
    ({"steps": 0}, "steps"),
])
def test_bad_input_names_the_argument(setup, kwargs, name):
    model, x, y = setup
    with pytest.raises(ValueError, match=name):
        attack_widgets.eps_explorer(model, x, y, **kwargs)


def test_bad_images_are_rejected(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack_widgets.eps_explorer(model, x * 2, y)
    with pytest.raises(ValueError, match="N <= 12"):
        attack_widgets.eps_explorer(model, x.repeat(4, 1, 1, 1), y.repeat(4))
    with pytest.raises(ValueError, match="x must be images"):
        attack_widgets.eps_explorer(model, x.flatten(1), y)


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases(setup):
    model, x, y = setup

    def x_adv(**kw):
        return attack_widgets.eps_explorer(model, x, y, **(dict(eps=0.1, steps=2) | kw)).x_adv

    def close(a, b):
        return torch.allclose(a, b, atol=1e-6)

    return [
        (lambda v: x_adv(eps=v), "eps", 0.1, close),
        (lambda v: x_adv(eps_max=v), "eps_max", 0.3, close),
        (lambda v: x_adv(steps=v), "steps", 2, torch.equal),
        (lambda v: attack_widgets.eps_explorer(model, x, y, eps=0.1, steps=2).run_attack(v, "FGSM"), "eps", 0.1,
         close),
        (lambda v: x_adv(seed=v), "seed", 2, torch.equal),
    ]


@pytest.mark.parametrize("case", range(4))
def test_argument_policy(setup, case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases(setup)[case]
    check_policy(call, name, value, same)


def test_explorer_is_an_explorer_with_the_shared_eps_slider(setup):
    from course_lib.widgets.explorer import Explorer

    model, x, y = setup
    ex = attack_widgets.eps_explorer(model, x, y, eps=0.1, eps_max=0.3, steps=2)
    assert isinstance(ex, Explorer) and ex.controls == [ex.eps, ex.attack]
    assert ex.eps.max == 0.3 and ex.eps.step == pytest.approx(0.3 / 60)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(attack_widgets).failed == 0
