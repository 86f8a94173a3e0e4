"""course_lib.ibp: interval arithmetic against brute force, and soundness of the network bounds
on many random MLPs and CNNs against sampled points, box corners and PGD on each logit."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import attacks, ibp, intervals
from strategies import box_samples, random_case

pytestmark = pytest.mark.certify


def _tol(*tensors, dtype):
    # Soundness holds in exact arithmetic; in floating point the bounds (mu +- r, summed in one
    # order) and the forward pass at a sampled point (summed in another) round differently, by a
    # few ulps of the largest magnitudes involved. So "inside" is checked up to a relative 1e-5
    # in float32 (1e-10 in float64) of the largest |bound|: far below any real violation.
    scale = max(float(t.detach().abs().max()) for t in tensors) + 1.0
    return (1e-5 if dtype == torch.float32 else 1e-10) * scale


# ---------------------------------------------------------------------------
# one layer
# ---------------------------------------------------------------------------

def test_by_hand_scalar_example():
    lo, hi = ibp.interval_affine(2.0, 4.0, 5.0)
    assert (float(lo), float(hi)) == (10.0, 20.0)
    lo, hi = ibp.interval_affine(2, 4, -5, 1)  # a negative weight swaps the ends: [-19, -9]
    assert (float(lo), float(hi)) == (-19.0, -9.0)
    lo, hi = ibp.interval_affine(torch.tensor(2.0), torch.tensor(4.0), torch.tensor(5.0))
    assert lo.ndim == 0 and lo.dtype == torch.float32 and (float(lo), float(hi)) == (10.0, 20.0)


@pytest.mark.parametrize("seed", range(25))
def test_interval_affine_matches_corner_enumeration(seed):
    g = torch.Generator().manual_seed(seed)
    n_in, n_out, n = int(torch.randint(1, 7, (), generator=g)), int(torch.randint(1, 6, (), generator=g)), 3
    W = torch.randn(n_out, n_in, generator=g, dtype=torch.float64)
    b = torch.randn(n_out, generator=g, dtype=torch.float64)
    lo = torch.randn(n, n_in, generator=g, dtype=torch.float64)
    hi = lo + torch.rand(n, n_in, generator=g, dtype=torch.float64) * (seed % 3)  # width 0 when seed % 3 == 0
    lb, ub = ibp.interval_affine(lo, hi, W, b)
    assert lb.shape == (n, n_out)
    for i in range(n):
        corners = torch.tensor(list(itertools.product(*zip(lo[i].tolist(), hi[i].tolist()))), dtype=torch.float64)
        out = corners @ W.T + b  # an affine map attains its extremes over a box at corners
        torch.testing.assert_close(lb[i], out.min(0).values)
        torch.testing.assert_close(ub[i], out.max(0).values)
    lb1, ub1 = ibp.interval_affine(lo[0], hi[0], W, b)  # one vector (in,)
    torch.testing.assert_close((lb1, ub1), (lb[0], ub[0]))


def test_interval_affine_bad_input():
    W = torch.ones(2, 3)
    with pytest.raises(ValueError, match="lower <= upper"):
        ibp.interval_affine(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 0.0, 3.0]), W)
    with pytest.raises(ValueError, match="same shape"):
        ibp.interval_affine(torch.zeros(3), torch.ones(4), W)
    with pytest.raises(ValueError, match="to match W"):
        ibp.interval_affine(torch.zeros(4), torch.ones(4), W)
    with pytest.raises(ValueError, match="W must be"):
        ibp.interval_affine(torch.zeros(3), torch.ones(3), torch.ones(2, 3, 1))
    with pytest.raises(ValueError, match="b must be"):
        ibp.interval_affine(torch.zeros(3), torch.ones(3), W, torch.ones(3))
    with pytest.raises(TypeError, match="lower"):
        ibp.interval_affine("0", 1.0, 2.0)
    with pytest.raises(ValueError, match="nan"):
        ibp.interval_affine(float("nan"), 1.0, 2.0)


@pytest.mark.parametrize("fn, name", [(torch.relu, "interval_relu"), (torch.sigmoid, "interval_sigmoid"),
                                      (torch.tanh, "interval_tanh")])
def test_monotone_activations_bound_dense_samples(fn, name):
    g = torch.Generator().manual_seed(0)
    lo = 3 * torch.randn(50, generator=g, dtype=torch.float64)
    hi = lo + 2 * torch.rand(50, generator=g, dtype=torch.float64)
    lb, ub = getattr(ibp, name)(lo, hi)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)[:, None]
    values = fn(lo + t * (hi - lo))
    # tight: a monotone function reaches both ends of its image at the interval's ends
    torch.testing.assert_close(lb, values.min(0).values)
    torch.testing.assert_close(ub, values.max(0).values)
    with pytest.raises(ValueError, match="lower <= upper"):
        getattr(ibp, name)(hi + 1, hi)


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1), dict(padding=2, padding_mode="reflect"),
                                    dict(padding=1, padding_mode="circular", dilation=2),
                                    dict(groups=2, padding=1, padding_mode="replicate")])
def test_interval_conv2d_equals_the_affine_map_of_its_matrix(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, **kwargs).double()
    shape = (2, 6, 5)
    d = math.prod(shape)
    with torch.no_grad():
        basis = torch.eye(d, dtype=torch.float64).view(d, *shape)
        W = (conv(basis) - conv(torch.zeros(1, *shape, dtype=torch.float64))).flatten(1).T  # (out, in)
        b = conv(torch.zeros(1, *shape, dtype=torch.float64)).flatten()
    g = torch.Generator().manual_seed(1)
    lo = torch.randn(3, *shape, generator=g, dtype=torch.float64)
    hi = lo + torch.rand(3, *shape, generator=g, dtype=torch.float64)
    lb, ub = ibp.interval_conv2d(lo, hi, conv)
    lb_ref, ub_ref = ibp.interval_affine(lo.flatten(1), hi.flatten(1), W, b)
    if conv.padding_mode == "zeros":  # each input meets a kernel window once: exact
        torch.testing.assert_close(lb.flatten(1), lb_ref)
        torch.testing.assert_close(ub.flatten(1), ub_ref)
    else:  # inputs copied into the padding can meet a window twice: sound, possibly looser
        assert (lb.flatten(1) <= lb_ref + 1e-12).all() and (ub.flatten(1) >= ub_ref - 1e-12).all()
        torch.testing.assert_close((lb + ub).flatten(1), lb_ref + ub_ref)  # the centre is exact


# ---------------------------------------------------------------------------
# random networks
# ---------------------------------------------------------------------------

_random_case = random_case  # the shared cases (tests/strategies.py); test_rounding imports this name
_samples = box_samples


def _pgd_on(fn, x, eps, steps=30):
    """Sign-gradient ascent on fn(x') (N,), summed over the batch, projected on the clipped box."""
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(x_adv).sum(), x_adv)
        x_adv = torch.minimum(torch.maximum(x_adv.detach() + eps / 4 * grad.sign(), lo), hi)
    return x_adv.detach()


def _attack_points(model, x, y, eps, k):
    """PGD points maximizing and minimizing each logit, and minimizing each margin z_y - z_j."""
    pts = []
    for j in range(k):
        pts.append(_pgd_on(lambda z: model(z)[:, j], x, eps))
        pts.append(_pgd_on(lambda z: -model(z)[:, j], x, eps))
        pts.append(_pgd_on(lambda z: model(z)[:, j] - model(z).gather(1, y[:, None])[:, 0], x, eps))
    pts.append(attacks.pgd(model, x, y, eps, alpha=max(eps, 1e-3) / 4, steps=20) if eps > 0 else x)
    return torch.stack(pts)


@pytest.mark.parametrize("seed", range(48))
def test_bounds_contain_sampled_corner_and_pgd_points(seed):
    model, x, y, eps, g = _random_case(seed)
    k = model[-1].out_features
    lower, upper = ibp.ibp_bounds(model, x, eps)
    margins = ibp.worst_case_margins(model, x, y, eps)
    plain = ibp.worst_case_margins(model, x, y, eps, fold_last=False)
    points = [_samples(x, eps, g, 1500), _attack_points(model, x, y, eps, k)]
    d = x[0].numel()
    if d <= 9:  # every corner of every example's box
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        signs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=d)), dtype=x.dtype).view(-1, 1, *x.shape[1:])
        points.append(lo + signs * (hi - lo))
    pts = torch.cat(points)  # (P, N, ...)
    with torch.no_grad():
        z = model(pts.flatten(0, 1)).view(pts.shape[0], x.shape[0], k)
    tol = _tol(lower, upper, dtype=x.dtype)
    assert (z >= lower - tol).all() and (z <= upper + tol).all(), "a point of the box left the IBP bounds"
    true_margin = z.gather(2, y.view(1, -1, 1).expand(z.shape[0], -1, 1)) - z  # (P, N, K)
    assert torch.isinf(margins.gather(1, y[:, None])).all() and torch.isinf(plain.gather(1, y[:, None])).all()
    margins = margins.scatter(1, y[:, None], -math.inf)  # the true class's column (+inf) is no bound
    plain = plain.scatter(1, y[:, None], -math.inf)
    assert (true_margin >= margins - tol).all(), "a point beat the folded worst-case margin"
    assert (margins >= plain - tol).all(), "folding the last layer gave a looser margin"
    certified = ibp.certify(model, x, y, eps)
    assert (z.argmax(2)[:, certified] == y[certified]).all(), "a certified example was misclassified in its box"


@pytest.mark.parametrize("seed", range(12))
def test_float32_models_are_sound_too(seed):
    model, x, y, eps, g = _random_case(100 + seed, dtype=torch.float32)
    lower, upper = ibp.ibp_bounds(model, x, eps)
    assert lower.dtype == torch.float32
    pts = _samples(x, eps, g, 1000)
    with torch.no_grad():
        z = model(pts.flatten(0, 1)).view(pts.shape[0], x.shape[0], -1)
    tol = _tol(lower, upper, dtype=torch.float32)
    assert (z >= lower - tol).all() and (z <= upper + tol).all()


@pytest.mark.parametrize("seed", range(12))
def test_eps_zero_gives_the_forward_pass_and_bounds_grow_with_eps(seed):
    model, x, y, _, _ = _random_case(seed)
    with torch.no_grad():
        logits = model(x)
    lower, upper = ibp.ibp_bounds(model, x, 0.0)
    torch.testing.assert_close(lower, logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(upper, logits, rtol=1e-12, atol=1e-12)
    margins = ibp.worst_case_margins(model, x, y, 0.0)
    true = logits.gather(1, y[:, None]) - logits
    off = torch.ones_like(true, dtype=torch.bool).scatter(1, y[:, None], False)
    torch.testing.assert_close(margins[off], true[off])
    assert torch.isinf(margins[~off]).all() and (margins[~off] > 0).all()
    assert torch.equal(ibp.certify(model, x, y, 0.0), logits.argmax(1) == y) or (true[off] == 0).any()
    # interval arithmetic is monotone under inclusion: a bigger box gives wider bounds
    prev_lo, prev_hi = lower, upper
    for eps in (0.01, 0.1, 0.5):
        lo, hi = ibp.ibp_bounds(model, x, eps)
        tol = _tol(lo, hi, dtype=x.dtype)
        assert (lo <= prev_lo + tol).all() and (hi >= prev_hi - tol).all()
        prev_lo, prev_hi = lo, hi


def test_per_example_eps_matches_separate_calls():
    model, x, y, _, _ = _random_case(3)
    x = torch.cat([x, x, x])[:4]
    y = torch.cat([y, y, y])[:4]
    eps = torch.tensor([0.0, 0.05, 0.2, 1.0], dtype=x.dtype)[: len(y)]
    lo, hi = ibp.ibp_bounds(model, x, eps)
    margins = ibp.worst_case_margins(model, x, y, eps)
    for i in range(len(y)):
        lo_i, hi_i = ibp.ibp_bounds(model, x[i:i + 1], float(eps[i]))
        torch.testing.assert_close((lo[i:i + 1], hi[i:i + 1]), (lo_i, hi_i))
        torch.testing.assert_close(margins[i:i + 1], ibp.worst_case_margins(model, x[i:i + 1], y[i:i + 1],
                                                                            float(eps[i])))


def test_layer_bounds_start_with_the_clipped_box_and_end_with_ibp_bounds():
    model, x, y, _, _ = _random_case(1)
    layers = ibp.ibp_layer_bounds(model, x, 0.1)
    assert len(layers) == len(model) + 1
    torch.testing.assert_close(layers[0], ((x - 0.1).clamp(0, 1), (x + 0.1).clamp(0, 1)))
    torch.testing.assert_close(layers[-1], ibp.ibp_bounds(model, x, 0.1))
    with torch.no_grad():
        h = x
        for (lo, hi), layer in zip(layers[1:], model):
            h = layer(h)
            assert lo.shape == h.shape and (lo <= h + 1e-12).all() and (h <= hi + 1e-12).all()


def test_no_clipping_with_domain_none():
    model = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
    x = torch.tensor([[0.0, 1.0]])
    lo, hi = ibp.ibp_bounds(model, x, 0.5)
    torch.testing.assert_close(lo, torch.tensor([[0.0, 0.5]]))
    torch.testing.assert_close(hi, torch.tensor([[0.5, 1.0]]))
    lo, hi = ibp.ibp_bounds(model, x * 4, 0.5, domain=None)
    torch.testing.assert_close(lo, torch.tensor([[-0.5, 3.5]]))
    torch.testing.assert_close(hi, torch.tensor([[0.5, 4.5]]))


def test_bounds_are_differentiable_and_follow_the_input():
    model, x, y, _, _ = _random_case(5)
    logits = ibp.worst_case_logits(model, x, y, 0.1)
    assert torch.equal(logits.gather(1, y[:, None]), torch.zeros(len(y), 1, dtype=x.dtype))
    loss = F.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert all(torch.isfinite(gr).all() for gr in grads) and any(gr.abs().sum() > 0 for gr in grads)
    # the robust loss upper-bounds the cross-entropy at every point of the box
    pts = _samples(x, 0.1, torch.Generator().manual_seed(0), 200)
    with torch.no_grad():
        ce = F.cross_entropy(model(pts.flatten(0, 1)), y.repeat(200), reduction="none").view(200, -1)
    robust = F.cross_entropy(logits, y, reduction="none").detach()
    assert (ce <= robust + 1e-9).all()


def test_certified_accuracy_counts_certify_and_equals_clean_accuracy_at_zero():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 1, 4, 4, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::3] = (y[::3] + 1) % 3
    clean = attacks.accuracy_under_attack(model, (x, y), None)
    assert ibp.certified_accuracy(model, (x, y), 0.0, batch_size=7) == pytest.approx(clean)
    for eps in (0.001, 0.01, 0.05):
        expected = ibp.certify(model, x, y, eps).float().mean().item()
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
        assert ibp.certified_accuracy(model, (x, y), eps, batch_size=7) == pytest.approx(expected)
        assert ibp.certified_accuracy(model, loader, eps) == pytest.approx(expected)
        assert ibp.certified_accuracy(model, loader, eps) <= clean
    with pytest.raises(ValueError, match="no examples"):
        ibp.certified_accuracy(model, [], 0.1)
    with pytest.raises(ValueError, match="batch_size"):
        ibp.certified_accuracy(model, (x, y), 0.1, batch_size=0)


def test_bad_input_errors_name_the_problem():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(), nn.Linear(3, 2))
    x = torch.rand(2, 1, 2, 2)
    with pytest.raises(TypeError, match=r"layer 2 \(Dropout"):
        ibp.ibp_bounds(model, x, 0.1)
    nested = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)))
    with pytest.raises(TypeError, match=r"layer 2 \(BatchNorm1d"):
        ibp.ibp_bounds(nested, x, 0.1)
    good = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    for bad in (-0.1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="eps"):
            ibp.ibp_bounds(good, x, bad)
    with pytest.raises(ValueError, match="eps"):
        ibp.ibp_bounds(good, x, torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        ibp.ibp_bounds(good, x, torch.tensor([0.1, 0.1, 0.1]))
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
        ibp.ibp_bounds(good, x + 1, 0.1)
    with pytest.raises(ValueError, match="y must be int64"):
        ibp.worst_case_margins(good, x, torch.tensor([0, 1, 1]), 0.1)
    k = good(x).shape[1]
    for labels in ([0, k], [-1, 0]):  # out of range: a clear error, never W[-1] read silently
        for fold in (True, False):
            with pytest.raises(ValueError, match=rf"classes in \[0, {k}\)"):
                ibp.worst_case_margins(good, x, torch.tensor(labels), 0.1, fold_last=fold)
        with pytest.raises(ValueError, match="classes in"):
            ibp.certify(good, x, torch.tensor(labels), 0.1)
        with pytest.raises(ValueError, match="classes in"):
            ibp.margins_from_bounds(*ibp.ibp_bounds(good, x, 0.1), torch.tensor(labels))
    with pytest.raises(ValueError, match="lower <= upper"):
        ibp.interval_network(good, x, x - 0.1)
    with pytest.raises(TypeError, match="nn.Module"):
        ibp.ibp_bounds(lambda t: t, x, 0.1)
    with pytest.raises(RuntimeError):  # the model's own shape error: 5 inputs expected, 4 given
        ibp.ibp_bounds(nn.Sequential(nn.Flatten(), nn.Linear(5, 2)), x, 0.1)


@pytest.mark.parametrize("seed", range(6))
def test_inputs_are_never_modified(seed):
    # the propagation works in place on tensors it made; never on the caller's
    model, x, y, eps, _ = _random_case(seed)
    x_before = x.clone()
    lower, upper = (x - 0.1).clamp(0, 1), (x + 0.1).clamp(0, 1)
    saved = lower.clone(), upper.clone()
    with torch.no_grad():
        ibp.ibp_bounds(model, x, eps)
        ibp.ibp_bounds(model, x, eps, domain=None)
        ibp.worst_case_margins(model, x, y, eps)
        ibp.interval_network(model, lower, upper)
        ibp.interval_layer_bounds(model, lower, upper)
    ibp.interval_network(model, lower, upper)
    assert torch.equal(x, x_before)
    assert torch.equal(lower, saved[0]) and torch.equal(upper, saved[1])
    relu_only = nn.Sequential(nn.ReLU(), nn.Identity(), nn.Tanh())
    with torch.no_grad():
        ibp.interval_network(relu_only, lower - 0.5, upper - 0.5)
        lo, hi = ibp.interval_network(relu_only, lower, upper)
    assert torch.equal(lower, saved[0]) and torch.equal(upper, saved[1])
    torch.testing.assert_close((lo, hi), (torch.tanh(lower), torch.tanh(upper)))


def test_nan_inputs_are_rejected():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x = torch.rand(2, 1, 2, 2)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="domain"):
        ibp.ibp_bounds(model, x, 0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model, x, y, _, _ = _random_case(7, dtype=torch.float32)
    lo, hi = ibp.ibp_bounds(model, x, 0.1)
    lo_c, hi_c = ibp.ibp_bounds(model.cuda(), x.cuda(), 0.1)
    assert lo_c.device.type == "cuda"
    torch.testing.assert_close((lo_c.cpu(), hi_c.cpu()), (lo, hi), rtol=1e-4, atol=1e-5)
    assert ibp.certify(model, x.cuda(), y.cuda(), torch.full((len(y),), 0.1, device="cuda")).device.type == "cuda"


@pytest.mark.parametrize("seed", range(8))
def test_no_grad_fast_path_matches_and_leaves_inputs_alone(seed):
    """Under no_grad the propagation overwrites its own intermediate tensors (ibp._step):
    the bounds must equal the autograd path's, and the caller's x, lower, upper stay as they were."""
    model, x, y, eps, _ = _random_case(seed)
    x_before = x.clone()
    lower, upper = ibp.ibp_bounds(model, x, eps)
    margins = ibp.worst_case_margins(model, x, y, eps)
    with torch.no_grad():
        fast_lower, fast_upper = ibp.ibp_bounds(model, x, eps)
        fast_margins = ibp.worst_case_margins(model, x, y, eps)
        box = ibp.input_box(x, eps)
        box_before = [t.clone() for t in box]
        net_lower, net_upper = ibp.interval_network(model, *box)
        layer_bounds = ibp.interval_layer_bounds(model, *box)
    assert torch.equal(x, x_before)
    assert all(torch.equal(a, b) for a, b in zip(box, box_before))
    for fast, slow in [(fast_lower, lower), (fast_upper, upper), (net_lower, lower), (net_upper, upper),
                       (layer_bounds[-1][0], lower), (layer_bounds[-1][1], upper)]:
        torch.testing.assert_close(fast, slow.detach(), rtol=1e-12, atol=1e-12)
    finite = torch.isfinite(margins)
    torch.testing.assert_close(fast_margins[finite], margins.detach()[finite], rtol=1e-12, atol=1e-12)
    for lo, hi in layer_bounds:
        assert (lo <= hi).all()


@pytest.mark.parametrize("eps", [0.0, 1e-3, 0.1, 0.3, 0.5, 0.7, 2.0])
@pytest.mark.parametrize("domain", [(0.0, 1.0), (-1.0, 2.0), None])
def test_box_centre_radius_is_the_clipped_box(eps, domain):
    """The four-pass centre/radius of the input box equals (lower + upper) / 2 and
    (upper - lower) / 2 of input_box, edges included; eps = 0 gives x and 0 exactly."""
    gen = torch.Generator().manual_seed(int(eps * 1000) + (0 if domain is None else 7))
    lo, hi = (0.0, 1.0) if domain is None else domain
    x = lo + (hi - lo) * torch.rand(64, 3, 5, generator=gen, dtype=torch.float64)
    x[0, 0, :] = lo  # values exactly on the domain's edges, and within eps of them
    x[0, 1, :] = hi
    x[1, 0, :] = lo + eps / 3
    x[1, 1, :] = hi - eps / 3
    lower, upper = ibp.input_box(x, eps, domain=domain)
    with torch.no_grad():  # the four-pass form (under autograd the box is built end by end)
        centre, radius = intervals.box_centre_radius(x, eps, domain)
    torch.testing.assert_close(centre, (lower + upper) / 2, rtol=0, atol=1e-15)
    torch.testing.assert_close(radius, (upper - lower) / 2, rtol=0, atol=1e-15)
    assert (radius >= 0).all()
    if eps == 0.0:
        assert torch.equal(centre, x) and not radius.any()
    xf = x.float()  # float32: the same up to rounding
    lower, upper = ibp.input_box(xf, eps, domain=domain)
    with torch.no_grad():
        centre, radius = intervals.box_centre_radius(xf, eps, domain)
    torch.testing.assert_close(centre, (lower + upper) / 2, rtol=0, atol=4e-7 * (1 + abs(hi)))
    torch.testing.assert_close(radius, (upper - lower) / 2, rtol=0, atol=4e-7 * (1 + abs(hi)))


def _sampled_logits_inside(model: nn.Module, x: Tensor, eps: float, lower: Tensor, upper: Tensor) -> bool:
    """Whether model(x') lies in [lower, upper] (up to rounding) at 2000 random points x' of each box."""
    lo, hi = ibp.input_box(x, eps)
    points = lo + (hi - lo) * torch.rand((2000, *x.shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = model(points.flatten(0, 1)).view(2000, x.shape[0], -1)
    return bool(((z >= lower - 1e-5) & (z <= upper + 1e-5)).all())


def test_bounds_follow_every_change_of_the_weights():
    """|W| is computed afresh at every call: the bounds stay sound after an optimizer step, an
    in-place edit through ``.data`` (which moves no version counter), a replaced weight, and a
    call under ``torch.inference_mode()``; afterwards, gradients still flow through the bounds."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    x = torch.rand(3, 4)
    with torch.no_grad():
        ibp.ibp_bounds(model, x, 0.1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model(x).square().sum().backward()
    opt.step()
    with torch.no_grad():
        assert _sampled_logits_inside(model, x, 0.1, *ibp.ibp_bounds(model, x, 0.1))
        model[0].weight.data.mul_(-3)
        assert _sampled_logits_inside(model, x, 0.1, *ibp.ibp_bounds(model, x, 0.1))
        model[2].weight = nn.Parameter(torch.randn(2, 6))
        assert _sampled_logits_inside(model, x, 0.1, *ibp.ibp_bounds(model, x, 0.1))
    model.requires_grad_(False)
    with torch.inference_mode():
        ibp.ibp_bounds(model, x, 0.1)
    model.requires_grad_(True)
    lower, _ = ibp.ibp_bounds(model, x.clone().requires_grad_(), 0.1)
    lower.sum().backward()
    assert model[0].weight.grad is not None and torch.isfinite(model[0].weight.grad).all()


class _Normalized(nn.Sequential):
    """An input normalization inside the container's forward: IBP would not see it."""

    def forward(self, x):
        return super().forward((x - 0.5) / 0.25)


class _Scaled(nn.Linear):
    def forward(self, x):
        return 10 * super().forward(x)


class _Tagged(nn.Linear):
    """A subclass that changes nothing in the forward pass: accepted."""


def test_a_model_whose_forward_pass_is_not_its_layers_formulas_is_refused():
    """Certifying such a model from its layers' weights would certify another function (a review
    found 48 of 200 inputs 'certified' for a class the model does not predict)."""
    from course_lib import verification

    torch.manual_seed(0)
    x, y = torch.rand(20, 4), torch.zeros(20, dtype=torch.int64)
    altered = {
        "Sequential subclass": _Normalized(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)),
        "Linear subclass": nn.Sequential(_Scaled(4, 8), nn.ReLU(), nn.Linear(8, 3)),
        "nested": nn.Sequential(nn.Sequential(_Scaled(4, 8)), nn.ReLU(), nn.Linear(8, 3)),
    }
    hooked = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    hooked[0].register_forward_pre_hook(lambda module, args: (args[0] * 2,))
    altered["pre-hook"] = hooked
    hooked = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    hooked.register_forward_hook(lambda module, args, out: out + 1)
    altered["hook"] = hooked
    for name, model in altered.items():
        for call in (lambda: ibp.ibp_bounds(model, x, 0.1), lambda: ibp.certify(model, x, y, 0.1),
                     lambda: ibp.certified_accuracy(model, (x, y), 0.1), lambda: verification.as_one_hidden_layer(model)):
            with pytest.raises(TypeError, match="overrides|hooks"):
                call()
    handle = nn.modules.module.register_module_forward_hook(lambda module, args, out: out)
    try:
        with pytest.raises(TypeError, match="global forward hooks"):
            ibp.ibp_bounds(nn.Sequential(nn.Linear(4, 3)), x, 0.1)
    finally:
        handle.remove()
    plain = nn.Sequential(_Tagged(4, 8), nn.ReLU(), nn.Linear(8, 3))  # no override: same function
    lower, upper = ibp.ibp_bounds(plain, x, 0.0)
    torch.testing.assert_close(lower, plain(x))
    torch.testing.assert_close(upper, plain(x))


def test_eps_may_be_a_numpy_scalar_or_a_zero_dim_tensor():
    import numpy as np

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.rand(6, 1, 2, 2)
    eps = np.float32(0.1)
    reference = ibp.ibp_bounds(model, x, float(eps))
    for same in (eps, torch.tensor(float(eps)), np.float64(eps)):
        for got, want in zip(ibp.ibp_bounds(model, x, same), reference):
            assert torch.equal(got, want)
        assert torch.equal(ibp.certify(model, x, torch.zeros(6, dtype=torch.int64), same),
                           ibp.certify(model, x, torch.zeros(6, dtype=torch.int64), float(eps)))


# ---------------------------------------------------------------------------
# the layer table: one entry adds a type to IBP, sound IBP and the verifier
# ---------------------------------------------------------------------------

class _Gain(nn.Module):
    """A toy layer: a fixed elementwise gain (an affine map with a diagonal W, some entries < 0)."""

    def __init__(self, gain: Tensor):
        super().__init__()
        self.register_buffer("gain", gain)

    def forward(self, x):
        return x * self.gain


@pytest.fixture
def toy_layers():
    from course_lib import layers

    layers.register_affine(_Gain, lambda layer, x, W, b: x * W, weight=lambda layer: layer.gain,
                           bias=lambda layer: None, fan_in=lambda layer: 1)
    layers.register_monotone(nn.LeakyReLU)
    yield layers
    layers.unregister(_Gain)
    layers.unregister(nn.LeakyReLU)


@pytest.mark.parametrize("seed", range(30))
def test_a_registered_toy_layer_is_bounded_by_ibp_sound_ibp_and_the_verifier(toy_layers, seed):
    from course_lib import verification

    g = torch.Generator().manual_seed(seed)
    d, m, k = 2 + seed % 3, 3 + seed % 5, 2 + seed % 3
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, m), _Gain(torch.randn(m, generator=g)), nn.LeakyReLU(0.1 + seed / 100),
                          nn.Linear(m, k)).double()
    x = torch.rand(3, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (3,), generator=g)
    eps = [0.0, 0.02, 0.1, 0.4][seed % 4]
    z = model(box_samples(x, eps, g, 800).flatten(0, 1)).detach().view(800, 3, k)
    for sound in (False, True):
        lower, upper = ibp.ibp_bounds(model, x, eps, sound=sound)
        assert (z >= lower - 1e-12).all() and (z <= upper + 1e-12).all()
        margins = ibp.worst_case_margins(model, x, y, eps, sound=sound).scatter(1, y[:, None], -math.inf)
        assert (z.gather(2, y.view(1, -1, 1).expand(800, -1, 1)) - z >= margins - 1e-12).all()
    lo, hi = (x[0] - eps).clamp(0, 1).numpy(), (x[0] + eps).clamp(0, 1).numpy()
    c = torch.zeros(k, dtype=torch.float64)
    c[0], c[1] = 1.0, -1.0
    true = (z[:, 0] @ c).min().item()
    for fold in (False, True):
        assert verification.ibp_lower_bound(model, lo, hi, c.numpy(), fold=fold) <= true + 1e-12


def test_an_unregistered_layer_is_an_error_naming_it(toy_layers):
    from course_lib import verification

    model = nn.Sequential(nn.Linear(2, 3), nn.ELU(), nn.Linear(3, 2))
    x = torch.rand(2, 2)
    for call in (lambda: ibp.ibp_bounds(model, x, 0.1), lambda: ibp.ibp_bounds(model, x, 0.1, sound=True),
                 lambda: verification.ibp_lower_bound(model, [0, 0], [1, 1], [1, -1])):
        with pytest.raises(TypeError, match=r"layer 1 \(ELU"):
            call()
    toy_layers.unregister(nn.LeakyReLU)
    with pytest.raises(TypeError, match="LeakyReLU"):
        ibp.ibp_bounds(nn.Sequential(nn.LeakyReLU()), x, 0.1)
    assert nn.ReLU in ibp.SUPPORTED and _Gain in ibp.SUPPORTED


# ---------------------------------------------------------------------------
# the argument policy and the docstrings' examples
# ---------------------------------------------------------------------------

def _policy_cases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x, y = torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 0, 1])
    same = lambda a, b: all(torch.equal(p, q) for p, q in zip(a, b))  # noqa: E731
    return {
        "ibp_bounds eps": (lambda v: ibp.ibp_bounds(model, x, v), "eps", 0.1, same),
        "sound ibp_bounds eps": (lambda v: ibp.ibp_bounds(model, x, v, sound=True), "eps", 0.1, same),
        "input_box eps": (lambda v: ibp.input_box(x, v), "eps", 0.1, same),
        "ibp_layer_bounds eps": (lambda v: ibp.ibp_layer_bounds(model, x, v)[-1], "eps", 0.1, same),
        "worst_case_margins eps": (lambda v: ibp.worst_case_margins(model, x, y, v), "eps", 0.1, torch.equal),
        "worst_case_logits eps": (lambda v: ibp.worst_case_logits(model, x, y, v).detach(), "eps", 0.1, torch.equal),
        "certify eps": (lambda v: ibp.certify(model, x, y, v), "eps", 0.1, torch.equal),
        "certified_accuracy eps": (lambda v: ibp.certified_accuracy(model, (x, y), v), "eps", 0.1, None),
        "certified_accuracy batch_size": (lambda v: ibp.certified_accuracy(model, (x, y), 0.1, batch_size=v),
                                          "batch_size", 3, None),
        "interval_affine W": (lambda v: ibp.interval_affine(2.0, 4.0, v), "W", 5.0, same),
        "interval_affine lower": (lambda v: ibp.interval_affine(v, 4.0, 5.0), "lower", 2.0, same),
        "interval_relu upper": (lambda v: ibp.interval_relu(-1.0, v), "upper", 2.0, same),
    }


@pytest.mark.parametrize("case", list(_policy_cases()))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples_run():
    import doctest

    from course_lib import intervals, layers, rounding, verification

    for module in (ibp, layers, intervals, rounding, verification):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__
