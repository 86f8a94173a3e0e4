"""course_lib.verification: IBP <= LP <= exact on hundreds of random tiny ReLU networks, the exact
minimum checked against activation-pattern enumeration and dense sampling of 1-2-D boxes."""

import os

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import ibp, verification

pytestmark = pytest.mark.certify

# the LP and MILP solvers (HiGHS) work to about 1e-9 here (tolerances set to 1e-10); comparisons
# between bounds allow 1e-7 so that solver round-off is never read as a violated inequality
TOL = 1e-7


def _tiny(seed, d=None):
    g = torch.Generator().manual_seed(seed)
    d = d or int(torch.randint(1, 4, (), generator=g))
    m = int(torch.randint(2, 7, (), generator=g))
    k = int(torch.randint(2, 4, (), generator=g))
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, m), nn.ReLU(), nn.Linear(m, k)).double()
    with torch.no_grad():  # biases of the size of the weights: many unstable ReLUs
        model[0].bias.copy_(torch.randn(m, generator=g, dtype=torch.float64) * 0.5)
    centre = torch.rand(d, generator=g, dtype=torch.float64).numpy()
    radius = [0.0, 0.05, 0.2, 0.5, 1.0][seed % 5] * torch.rand(d, generator=g, dtype=torch.float64).numpy()
    y, t = torch.randperm(k, generator=g)[:2].tolist()
    return model, centre - radius, centre + radius, verification.margin_vector(k, y, t)


@pytest.mark.parametrize("block", range(6))
def test_ladder_ibp_le_lp_le_exact_le_every_sample(block):
    rng = np.random.default_rng(block)
    for seed in range(50 * block, 50 * block + 50):
        model, lo, hi, c = _tiny(seed)
        net = verification.as_one_hidden_layer(model)
        plain = verification.ibp_lower_bound(model, lo, hi, c)
        folded = verification.ibp_lower_bound(model, lo, hi, c, fold=True)
        lp = verification.lp_lower_bound(model, lo, hi, c)
        exact, x_star = verification.exact_minimum(model, lo, hi, c)
        assert plain <= folded + TOL <= lp + 2 * TOL <= exact + 3 * TOL, (seed, plain, folded, lp, exact)
        # the MILP's minimizer is in the box and attains the minimum
        assert (x_star >= lo).all() and (x_star <= hi).all()
        assert abs(c @ net(x_star) - exact) < 1e-6 * (1 + abs(exact)), seed
        samples = lo + rng.random((500, len(lo))) * (hi - lo)
        corners = lo + rng.integers(0, 2, (100, len(lo))) * (hi - lo)
        margins = net(np.concatenate([samples, corners])) @ c
        assert margins.min() >= exact - TOL, seed


@pytest.mark.parametrize("seed", range(40))
def test_exact_equals_pattern_enumeration(seed):
    model, lo, hi, c = _tiny(1000 + seed)
    exact, _ = verification.exact_minimum(model, lo, hi, c)
    assert exact == pytest.approx(verification.enumerate_minimum(model, lo, hi, c), abs=1e-6)


@pytest.mark.parametrize("seed", range(20))
def test_exact_matches_dense_sampling_in_two_dimensions(seed):
    model, lo, hi, c = _tiny(2000 + seed, d=2)
    lo, hi = lo - 0.3, hi + 0.3  # a box of width at least 0.6: the ReLUs change pattern inside
    net = verification.as_one_hidden_layer(model)
    exact, _ = verification.exact_minimum(model, lo, hi, c)
    n = 301
    grid = np.stack(np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)), -1).reshape(-1, 2)
    sampled = (net(grid) @ c).min()
    # every point of the box is within half a grid step h/2 (per coordinate) of a grid point, and the
    # margin changes by at most sum_j |(W2^T c)_j| * ||W1_j||_1 * h/2 over such a step (ReLU is 1-Lipschitz)
    h = ((hi - lo) / (n - 1)).max()
    lipschitz = np.abs(net.W2.T @ c) @ np.abs(net.W1).sum(1)
    assert exact <= sampled + TOL
    assert sampled - exact <= lipschitz * h / 2 + TOL, (sampled, exact)


def test_matches_course_lib_ibp_and_the_2_2_2_example():
    # the lecture's 2-2-2 network
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        model[2].bias.copy_(torch.tensor([0.0, 0.0]))
    lo, hi = np.array([0.0, 0.0]), np.array([1.0, 1.0])
    l, u = verification.preactivation_bounds(model, lo, hi)
    np.testing.assert_allclose(l, [0.0, -1.0])
    np.testing.assert_allclose(u, [2.0, 1.0])
    with torch.no_grad():
        zl, zu = ibp.interval_network(model, torch.tensor(lo[None]), torch.tensor(hi[None]))
    c = verification.margin_vector(2, 0, 1)
    assert verification.ibp_lower_bound(model, lo, hi, c) == pytest.approx(float(zl[0, 0] - zu[0, 1]))
    for seed in range(20):  # folded bound == course_lib.ibp's folded margins on a box around x
        model, lo, hi, c = _tiny(3000 + seed)
        x = torch.tensor(((lo + hi) / 2)[None])
        eps = float((hi - lo).max() / 2)
        y, t = int(np.argmax(c)), int(np.argmin(c))
        margins = ibp.worst_case_margins(model, x, torch.tensor([y]), eps, domain=None)
        folded = verification.ibp_lower_bound(model, (x[0] - eps).numpy(), (x[0] + eps).numpy(), c, fold=True)
        assert float(margins[0, t].detach()) == pytest.approx(folded, abs=1e-9)


def test_bad_input():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(TypeError, match="Linear, ReLU, Linear"):
        verification.lp_lower_bound(nn.Sequential(nn.Linear(2, 2)), [0, 0], [1, 1], [1, -1])
    with pytest.raises(ValueError, match="lower and upper"):
        verification.exact_minimum(model, [0, 0, 0], [1, 1, 1], [1, -1])
    with pytest.raises(ValueError, match="lower <= upper"):
        verification.lp_lower_bound(model, [0, 1], [1, 0], [1, -1])
    with pytest.raises(ValueError, match="c must"):
        verification.ibp_lower_bound(model, [0, 0], [1, 1], [1, -1, 0])
    with pytest.raises(ValueError, match="distinct"):
        verification.margin_vector(3, 1, 1)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert verification.as_one_hidden_layer(flat).W1.shape == (3, 4)


@pytest.mark.parametrize("block", range(3))
def test_the_ladder_climbs_in_order_and_crown_ibp_is_crown_on_one_hidden_layer(block):
    """CROWN-IBP == CROWN <= LP <= exact and IBP (folded) <= LP, on random tiny networks and balls
    (the LP and the MILP are independent solvers; CROWN is the backward pass of course_lib.crown)."""
    crown_above_ibp = 0
    for seed in range(30 * block, 30 * block + 30):
        model, lo, hi, c = _tiny(2000 + seed)
        x = torch.from_numpy((lo + hi) / 2).clamp(0, 1)
        eps = [0.0, 0.05, 0.2, 0.5][seed % 4]
        steps = verification.ladder(model, x, eps, c)
        assert [r.name for r in steps] == list(verification.RUNGS)
        b = {r.name: r.bound for r in steps}
        assert all(r.seconds >= 0 for r in steps)
        assert b["CROWN-IBP"] == pytest.approx(b["CROWN"], abs=1e-9), seed
        assert b["CROWN"] <= b["LP"] + TOL <= b["exact"] + 2 * TOL, (seed, b)
        assert b["IBP"] <= b["LP"] + TOL, (seed, b)
        # the same numbers as each rung's own function on the clipped box
        box_lo, box_hi = np.clip(x.numpy() - eps, 0, 1), np.clip(x.numpy() + eps, 0, 1)
        assert b["exact"] == pytest.approx(verification.exact_minimum(model, box_lo, box_hi, c)[0], abs=1e-7)
        assert b["IBP"] == pytest.approx(verification.ibp_lower_bound(model, box_lo, box_hi, c, fold=True))
        crown_above_ibp += b["CROWN"] > b["IBP"] + 1e-9
    assert crown_above_ibp > 0  # usually tighter, not always (tests/test_crown.py says when)


def test_the_ladder_takes_batched_or_image_inputs_and_refuses_bad_ones():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.rand(1, 1, 2, 2)
    c = verification.margin_vector(3, 0, 2)
    one = [r.bound for r in verification.ladder(model, x, 0.1, c, rungs=("IBP", "CROWN", "LP"))]
    assert one == [r.bound for r in verification.ladder(model, x[0], 0.1, c, rungs=("IBP", "CROWN", "LP"))]
    assert len(one) == 3
    with pytest.raises(ValueError, match="rungs"):
        verification.ladder(model, x, 0.1, c, rungs=("SDP",))
    with pytest.raises(ValueError, match="rungs"):
        verification.ladder(model, x, 0.1, c, rungs=())
    with pytest.raises(ValueError, match="eps"):
        verification.ladder(model, x, -0.1, c)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        verification.ladder(model, x + 2, 0.1, c)
    with pytest.raises(TypeError, match="x must"):
        verification.ladder(model, x.numpy(), 0.1, c)
    with pytest.raises(ValueError, match="c must"):
        verification.ladder(model, x, 0.1, [1.0, -1.0])
    with pytest.raises(TypeError, match="Linear, ReLU, Linear"):
        verification.ladder(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), x, 0.1, c)


def test_ladder_eps_follows_the_argument_policy():
    from argument_policy import check_policy

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x, c = torch.rand(3, dtype=torch.float64), verification.margin_vector(2, 1, 0)
    check_policy(lambda v: verification.ladder(model, x, v, c, rungs=("IBP", "CROWN")), "eps", 0.25,
                 lambda a, b: all(abs(p.bound - q.bound) < 1e-6 for p, q in zip(a, b)))


def test_the_exact_solver_leaves_standard_output_working(capfd):
    # HiGHS may print debugging lines straight to file descriptor 1; exact_minimum silences that
    # descriptor while it solves and must hand it back intact
    model, lo, hi, c = _tiny(7)
    print("before", flush=True)
    verification.exact_minimum(model, lo, hi, c)
    print("after", flush=True)
    os.write(1, b"raw\n")
    assert capfd.readouterr().out == "before\nafter\nraw\n"


@pytest.mark.parametrize("name", ["num_classes", "y", "t"])
def test_argument_policy(name):
    from argument_policy import check_policy

    args = {"num_classes": 3, "y": 0, "t": 2}
    check_policy(lambda v: verification.margin_vector(**(args | {name: v})), name, args[name], np.array_equal)


def test_docstring_examples_run():
    import doctest

    assert doctest.testmod(verification).failed == 0
