import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from course_lib import poisoning as P
from course_lib.widgets import poisoning as PW

pytestmark = pytest.mark.poisoning


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)

    def blobs(n):
        y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
        return np.clip(0.5 + 0.2 * y[:, None] + 0.1 * rng.normal(size=(n, 2)), 0, 1), y

    return (*blobs(30), *blobs(80))


def test_poisoned_boundary_is_the_svm_with_and_without_the_point(data):
    X, y, Xv, yv = data
    xc = np.array([0.8, 0.75])
    r = PW.poisoned_boundary(X, y, Xv, yv, xc, -1, C=30.0)
    w0, b0 = P.train_svm(X, y, 30.0)
    w1, b1 = P.train_svm(np.vstack([X, xc]), np.append(y, -1.0), 30.0)
    np.testing.assert_allclose(r.w_clean, w0)
    np.testing.assert_allclose(r.w_poisoned, w1)
    assert (r.b_clean, r.b_poisoned) == pytest.approx((b0, b1))
    assert r.error_poisoned == P.classification_error(w1, b1, Xv, yv)
    assert r.loss_clean == pytest.approx(P.hinge_loss(w0, b0, Xv, yv))
    assert r.loss_poisoned > r.loss_clean  # a +1-looking point labelled -1 hurts


def test_loss_surface_matches_retraining_at_its_nodes(data):
    X, y, Xv, yv = data
    g1, g2, loss = PW.loss_surface(X, y, Xv, yv, -1, C=30.0, resolution=5)
    assert loss.shape == (5, 5)
    for i, j in [(0, 0), (1, 3), (4, 2), (3, 4)]:
        r = PW.poisoned_boundary(X, y, Xv, yv, np.array([g1[j], g2[i]]), -1, C=30.0)
        assert loss[i, j] == pytest.approx(r.loss_poisoned, abs=1e-9)


def test_plot_draws_both_boundaries_and_the_path(data):
    X, y, Xv, yv = data
    xc = np.array([0.8, 0.75])
    r = PW.poisoned_boundary(X, y, Xv, yv, xc, -1, C=30.0)
    ax = Figure().subplots()
    PW.plot_poisoning(ax, X, y, xc, -1, r, path=np.array([[0.7, 0.7], [0.8, 0.75]]))
    labels = [line.get_label() for line in ax.get_lines()]
    assert "clean SVM" in labels and "poisoned SVM" in labels
    line = next(l for l in ax.get_lines() if l.get_label() == "poisoned SVM")
    x1, x2 = line.get_data()
    np.testing.assert_allclose(r.w_poisoned[0] * x1 + r.w_poisoned[1] * x2 + r.b_poisoned, 0, atol=1e-9)
    assert f"{r.error_clean:.1%} -> {r.error_poisoned:.1%}" in ax.get_title()


def test_explorer_builds_and_moving_a_slider_retrains(data):
    X, y, Xv, yv = data
    ex = PW.poison_explorer(torch.tensor(X), torch.tensor(y), Xv, yv, x_poison=(0.2, 0.2), y_poison=-1, C=30.0)
    assert bytes(ex.image.value[:8]) == b"\x89PNG\r\n\x1a\n"
    before = bytes(ex.image.value)
    ex.x1.value, ex.x2.value = 0.85, 0.8
    expected = PW.poisoned_boundary(X, y, Xv, yv, np.array([0.85, 0.8]), -1, C=30.0)
    np.testing.assert_allclose(ex.result.w_poisoned, expected.w_poisoned)
    assert bytes(ex.image.value) != before
    ex.label.value = 1
    expected = PW.poisoned_boundary(X, y, Xv, yv, np.array([0.85, 0.8]), 1, C=30.0)
    np.testing.assert_allclose(ex.result.w_poisoned, expected.w_poisoned)


def test_bad_input(data):
    X, y, Xv, yv = data
    with pytest.raises(ValueError, match="2-D"):
        PW.poison_explorer(np.hstack([X, X]), y, np.hstack([Xv, Xv]), yv, x_poison=(0.5,) * 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PW.poison_explorer(X, y, Xv, yv, x_poison=(1.5, 0.5))
    with pytest.raises(ValueError, match="y_poison"):
        PW.poison_explorer(X, y, Xv, yv, y_poison=0)
    with pytest.raises(ValueError, match="resolution"):
        PW.loss_surface(X, y, Xv, yv, -1, C=1.0, resolution=1)


def test_computations_live_in_the_library_and_the_explorer_on_the_base(data):
    from course_lib.widgets.explorer import Explorer

    assert PW.poisoned_boundary is P.poisoned_boundary and PW.loss_surface is P.loss_surface
    assert PW.PoisonedBoundary is P.PoisonedBoundary
    X, y, Xv, yv = data
    ex = PW.poison_explorer(X, y, Xv, yv, C=30.0)
    assert isinstance(ex, Explorer) and ex.controls == [ex.x1, ex.x2, ex.label]
    assert ex.children[1] is ex.label and ex.children[-1] is ex.image


def test_docstring_examples():
    import doctest

    assert doctest.testmod(PW).failed == 0


def test_argument_policy(data):
    from argument_policy import check_policy

    X, y, Xv, yv = data
    check_policy(lambda v: PW.poison_explorer(X, y, Xv, yv, C=v).result.w_poisoned, "C", 30.0, np.array_equal)
