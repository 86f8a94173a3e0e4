"""Linear relaxation bounds: CROWN, CROWN-IBP and alpha-CROWN (certification beyond IBP, lecture 4).

IBP carries a box through the network; CROWN (Zhang et al. 2018, "Efficient neural network
robustness certification with general activation functions") carries *linear functions* of the
input backwards from the quantity to bound. For a specification ``C`` (rows ``c``, e.g. a margin
``c = e_y - e_t``) and a network ``z_m = L_m(... L_1(x))``, start from ``A = C``, ``c0 = 0``:
the bound ``C z_m >= A z_k + c0`` holds with ``k = m``, and each layer moves it one layer down:

* affine ``z_k = W z_{k-1} + b``: ``A z_k + c0 = (A W) z_{k-1} + (c0 + A b)``, exact;
  a Conv2d's ``A W`` is a transposed convolution (``conv_transpose2d``, no matrix is built);
* ReLU ``z_k = relu(z_{k-1})`` with pre-activation bounds ``l <= z_{k-1} <= u``: stable units
  are exact (slope 1 if ``l >= 0``, 0 if ``u <= 0``); an unstable one (``l < 0 < u``) lies
  between two lines, ``alpha z <= relu(z) <= u (z - l) / (u - l)``, with the adaptive lower
  slope ``alpha = 1 if u > -l else 0`` (the line closer to the triangle's area). A lower bound
  takes, coordinate by coordinate, the lower line where ``A >= 0`` and the upper line where
  ``A < 0``: ``A' = A+ alpha + A- s``, ``c0' = c0 + A- (-s l)``, ``s = u / (u - l)``;
* Flatten: ``A`` reshaped back.

At the input, ``A x + c0`` is minimized over the box ``[lo, hi]`` (the L-inf ball of radius
eps around x clipped to [0, 1]) in closed form: ``A mu - |A| r + c0`` with ``mu = (lo + hi) / 2``,
``r = (hi - lo) / 2``. Upper bounds are ``-`` the lower bounds of ``-C``.

The pre-activation bounds ``l, u`` of each ReLU come from CROWN itself (``method="crown"``: the
same backward pass with ``C = +-I`` on that layer, layer after layer, ``O(depth^2)`` passes) or
from IBP (``method="crown-ibp"``, Zhang et al. 2020: one interval pass, then CROWN for the
output only). With the same pre-activation bounds CROWN never beats the LP (triangle) relaxation
(each of its linear bounds is valid on the triangle) and the LP never beats the exact value
(:mod:`course_lib.verification`); CROWN is usually, not always, tighter than IBP.

Any lower slope ``alpha`` in [0, 1] gives a valid lower line, hence a valid bound: alpha-CROWN
(``method="alpha-crown"``, Xu et al. 2021, "Fast and complete") optimizes the slopes of the
unstable ReLUs, one per specification row and unit, by projected gradient ascent (Adam, from
CROWN's adaptive choice) on the lower bound; here only the last pass's slopes are optimized,
the pre-activation bounds are CROWN's, and each row keeps its best iterate: never looser than
CROWN, never tighter than the LP with the same pre-activation bounds.

The per-type rules are entries of the layer table (:mod:`course_lib.layers`, ``Rule.linear``,
registered here): an affine or shape type registered there without one is pulled back by
autograd (the transpose of its map), so only an activation needs a relaxation of its own; a
type without any (Sigmoid, Tanh, anything unregistered) is an error naming the layer.

Bounds hold up to floating-point rounding (as :func:`course_lib.ibp.ibp_bounds` without
``sound``), and for the network's exact real arithmetic with ``sound=True``
(:mod:`course_lib.crown_sound`, where the argument is written out); they are differentiable,
on x's device and dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import _checks, crown_sound, ibp, layers, rounding
from course_lib.evaluation import fraction_certified
from course_lib.intervals import checked_eps, input_box
from course_lib.specification import check_spec, identity_spec, margin_spec

METHODS = ("crown", "crown-ibp", "alpha-crown")
_ROW_BUDGET = 2**25  # numbers in one backward pass's coefficients when CROWN bounds a hidden layer


# ---------------------------------------------------------------------------
# The table's CROWN rules: coefficients A (N, S, *out) pulled back to (N, S, *in), plus A . b
# ---------------------------------------------------------------------------

def _linear_rule(layer: nn.Linear, A: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor | float]:
    offset = 0.0 if layer.bias is None else A @ layer.bias
    return A @ layer.weight, offset


def _conv_rule(conv: nn.Conv2d, A: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor | float]:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):  # copies into the padding
        return _affine_by_autograd(conv, A, in_shape)
    N, S = A.shape[:2]
    flat = A.reshape(N * S, *A.shape[2:])
    # the transposed convolution returns the smallest input that gives this output; a stride
    # that skipped the last rows or columns of the input leaves them out: pad them back (zeros)
    extra = [in_shape[1 + j] - ((flat.shape[2 + j] - 1) * conv.stride[j] - 2 * conv.padding[j]
                                + conv.dilation[j] * (conv.kernel_size[j] - 1) + 1) for j in (0, 1)]
    back = F.conv_transpose2d(flat, conv.weight, None, conv.stride, conv.padding, tuple(extra),
                              conv.groups, conv.dilation)
    offset = 0.0 if conv.bias is None else A.sum((-2, -1)) @ conv.bias
    return back.view(N, S, *in_shape), offset


def _reshape_rule(layer: nn.Module, A: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, float]:
    if isinstance(layer, nn.Flatten) and layer.start_dim != 1:
        return _shape_by_autograd(layer, A, in_shape)
    return A.reshape(*A.shape[:2], *in_shape), 0.0


def _pull_back(fn, A: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``(A J, A . fn(0))`` for an affine ``fn`` of a batch (N * S, *in): its transpose by autograd."""
    N, S = A.shape[:2]
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        z = torch.zeros(N * S, *in_shape, dtype=A.dtype, device=A.device, requires_grad=True)
        out = fn(z)
        (back,) = torch.autograd.grad(out, z, A.reshape(out.shape), create_graph=keep_graph)
    offset = (A.reshape(N, S, -1) * out.reshape(N, S, -1)).sum(-1)
    return back.view(N, S, *in_shape), offset if keep_graph else offset.detach()


def _affine_by_autograd(layer: nn.Module, A: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    rule = layers.rule_for(layer)
    return _pull_back(lambda z: rule.interval(layer, z, torch.zeros_like(z))[0], A, in_shape)


def _shape_by_autograd(layer: nn.Module, A: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, float]:
    return _pull_back(layer.forward, A, in_shape)[0], 0.0


def relu_relaxation(layer: nn.Module, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The lines ``a_lo z + b_lo <= relu(z) <= a_hi z + b_hi`` on ``[lower, upper]``.

    Stable units exactly (``l >= 0``: both lines ``z``; ``u <= 0``: both 0); unstable ones the
    upper side of the triangle, ``u (z - l) / (u - l)``, and ``alpha z`` below with
    ``alpha = 1 if u > -l else 0`` (Zhang et al. 2018's adaptive choice).

    Returns:
        ``(a_lo, b_lo, a_hi, b_hi)``, each of lower's shape.

    Examples:
        >>> a_lo, b_lo, a_hi, b_hi = relu_relaxation(nn.ReLU(), torch.tensor([-1.0, 1.0, -3.0]),
        ...                                           torch.tensor([3.0, 2.0, 1.0]))
        >>> a_lo.tolist(), a_hi.tolist(), b_hi.tolist()
        ([1.0, 1.0, 0.0], [0.75, 1.0, 0.25], [0.75, 0.0, 0.75])
    """
    unstable = (lower < 0) & (upper > 0)
    active = (lower >= 0).to(lower.dtype)
    width = torch.where(unstable, upper - lower, torch.ones_like(lower))  # no 0/0 off the unstable units
    a_hi = torch.where(unstable, upper / width, active)
    b_hi = torch.where(unstable, -a_hi * lower, torch.zeros_like(lower))
    a_lo = torch.where(unstable, (upper > -lower).to(lower.dtype), active)
    return a_lo, torch.zeros_like(lower), a_hi, b_hi


layers.register_linear(nn.Linear, _linear_rule)
layers.register_linear(nn.Conv2d, _conv_rule)
layers.register_linear(nn.Flatten, _reshape_rule)
layers.register_linear(nn.Identity, _reshape_rule)
layers.register_linear(nn.ReLU, relu_relaxation)


def _crown_rules(model: nn.Module) -> list[tuple[nn.Module, layers.Rule, object]]:
    """Each layer with its table entry and its CROWN rule (the autograd transpose by default)."""
    try:
        sequence = layers.layers_of(model)
    except TypeError as error:
        raise TypeError(f"CROWN cannot bound this model: {error}") from None
    out = []
    for i, layer in enumerate(sequence):
        rule = layers.rule_for(layer)
        linear = rule.linear or {"affine": _affine_by_autograd, "shape": _shape_by_autograd}.get(rule.kind)
        if linear is None:
            raise TypeError(f"CROWN has no linear relaxation for layer {i} ({type(layer).__name__}: {layer}); "
                            "register one with course_lib.layers.register_linear (ReLU has one)")
        out.append((layer, rule, linear))
    return out


# ---------------------------------------------------------------------------
# The backward pass and the bounds
# ---------------------------------------------------------------------------

def _backward(rules: list, k: int, A: Tensor, shapes: list, pre: dict, lo: Tensor, hi: Tensor,
              alphas: dict | None = None) -> Tensor:
    """Lower bounds (N, S) on ``A . z_k`` (``z_k``: the output of the first k layers, ``A`` of shape
    (N, S, *z_k)) over the input box ``[lo, hi]``; ``pre[i]``: bounds on layer i's input;
    ``alphas[i]`` (N, S, *shape) in [0, 1]: lower slopes of ReLU i's unstable units."""
    offset = torch.zeros(A.shape[:2], dtype=A.dtype, device=A.device)
    for i in reversed(range(k)):
        layer, rule, linear = rules[i]
        if rule.kind == "monotone":
            a_lo, b_lo, a_hi, b_hi = (t.unsqueeze(1) for t in linear(layer, *pre[i]))
            if alphas is not None and i in alphas:
                a_lo = torch.where(((pre[i][0] < 0) & (pre[i][1] > 0)).unsqueeze(1), alphas[i], a_lo)
            neg = A.clamp(max=0)  # lower line where A >= 0, upper where A < 0:
            offset = offset + _row_dot(A - neg, b_lo) + _row_dot(neg, b_hi)  # A+ b_lo + A- b_hi
            A = A * a_lo + neg * (a_hi - a_lo)  # A+ a_lo + A- a_hi, one temporary fewer
        else:
            A, c = linear(layer, A, shapes[i])
            offset = offset + c
    mu, r = torch.lerp(lo, hi, 0.5).flatten(1), ((hi - lo) / 2).flatten(1)
    A = A.flatten(2)
    return torch.einsum("nsd,nd->ns", A, mu) - torch.einsum("nsd,nd->ns", A.abs(), r) + offset


def _row_dot(A: Tensor, b: Tensor) -> Tensor:
    """(N, S): each row of A (N, S, *shape) dotted with b (N, 1, *shape), without an (N, S, *shape) product."""
    return torch.bmm(A.flatten(2), b.flatten(2).transpose(1, 2).to(A.dtype)).squeeze(-1)


def _spec_rows(C, n: int, k: int, shapes: list, like: Tensor, both: bool = True) -> Tensor:
    """The rows ``[C; -C]`` (N, 2 S, *logits) in like's dtype, lower bounds on both give both bounds;
    ``C`` alone (N, S, *logits) without ``both``."""
    spec = check_spec(C, n, k, like)
    rows = torch.cat([spec, -spec], 1) if both else spec
    return rows.reshape(n, rows.shape[1], *shapes[-1])


def _one_plain_affine_map(first: list) -> bool:
    """Whether these layers are one Linear or zero-padded Conv2d (and reshapes): an affine map that
    uses each input once per output, so that its interval bounds over a box are exact."""
    affine = [layer for layer, rule, _ in first if rule.kind != "shape"]
    plain = all(isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros")
                for layer in affine)
    return len(affine) <= 1 and plain and all(type(layer) in (nn.Flatten, nn.Identity) or layer in affine
                                              for layer, _, _ in first)


def _layer_bounds(rules: list, shapes: list, lo: Tensor, hi: Tensor, model: nn.Module, by_crown: bool) -> dict:
    """Each activation's pre-activation bounds (N, *shape): CROWN itself, layer after layer, or IBP."""
    activations = [i for i, (_, rule, _) in enumerate(rules) if rule.kind == "monotone"]
    if not by_crown:
        boxes = ibp.interval_layer_bounds(model, lo, hi)
        return {i: boxes[i] for i in activations}
    pre: dict[int, tuple[Tensor, Tensor]] = {}
    if activations and _one_plain_affine_map(rules[:activations[0]]):  # its interval is exact, as
        pre[activations[0]] = ibp.interval_layer_bounds(model, lo, hi)[activations[0]]  # CROWN's is
    for i in activations[len(pre):]:  # from the first layer up
        m, widest = math.prod(shapes[i]), max(math.prod(shape) for shape in shapes[:i + 1])
        step = max(1, _ROW_BUDGET // (2 * lo.shape[0] * widest))  # units per backward pass
        lows, highs = [], []
        for start in range(0, m, step):  # the units in chunks: memory stays near _ROW_BUDGET numbers
            A = identity_spec(lo.shape[0], shapes[i], lo, slice(start, start + step))
            bounds = _backward(rules, i, A, shapes, pre, lo, hi)
            lows.append(bounds[:, :A.shape[1] // 2]), highs.append(-bounds[:, A.shape[1] // 2:])
        pre[i] = torch.cat(lows, 1).view(-1, *shapes[i]), torch.cat(highs, 1).view(-1, *shapes[i])
    return pre


def _optimized_alphas(rules: list, A: Tensor, shapes: list, pre: dict, lo: Tensor, hi: Tensor,
                      steps: int, lr: float) -> dict[int, Tensor]:
    """alpha-CROWN's lower slopes ``alphas[i]`` (N, S, *shape), in [0, 1], of every ReLU for the
    rows of A (N, S, *z_m): projected Adam ascent on the lower bounds from CROWN's adaptive choice,
    the pre-activation bounds held fixed; each row keeps its best iterate, never below CROWN."""
    n, S = A.shape[:2]
    A, lo, hi = A.detach(), lo.detach(), hi.detach()
    pre = {i: (l.detach(), u.detach()) for i, (l, u) in pre.items()}
    alphas = {i: (u > -l).to(A.dtype).unsqueeze(1).expand(n, S, *shapes[i]).clone().requires_grad_(True)
              for i, (l, u) in pre.items() if isinstance(rules[i][0], nn.ReLU)}
    best = {i: a.detach().clone() for i, a in alphas.items()}
    if not alphas:
        return best
    best_bound = torch.full((n, S), -math.inf, dtype=A.dtype, device=A.device)
    optimizer = torch.optim.Adam(list(alphas.values()), lr=lr, maximize=True)
    with torch.enable_grad():
        for step in range(steps + 1):
            bound = _backward(rules, len(rules), A, shapes, pre, lo, hi, alphas)
            better = bound.detach() > best_bound
            best_bound = torch.where(better, bound.detach(), best_bound)
            for i, a in alphas.items():
                best[i] = torch.where(better.view(n, S, *[1] * len(shapes[i])), a.detach(), best[i])
            if step == steps:
                break
            optimizer.zero_grad()
            bound.sum().backward(inputs=list(alphas.values()))  # no gradient reaches the model
            optimizer.step()
            with torch.no_grad():
                for a in alphas.values():
                    a.clamp_(0, 1)  # the projection: any slope in [0, 1] is a valid lower line
    return best


def crown_bounds(model: nn.Module, x: Tensor, eps: float | Tensor, *, C: Tensor | None = None,
                 method: str = "crown", sound: bool = False, alpha_steps: int = 20,
                 alpha_lr: float = 0.1, lower_only: bool = False) -> tuple[Tensor, Tensor | None]:
    """Bounds on ``C @ logits`` over the L-inf ball of radius eps around x, clipped to [0, 1].

    See the module docstring for the algebra: each specification row's linear bound
    ``A z + c0`` is pulled back layer by layer (``A W``, ``c0 + A b``; through a ReLU its lower
    line where ``A >= 0``, its upper line where ``A < 0``) and minimized over the input box,
    ``A mu - |A| r + c0``.

    Args:
        model: an ``nn.Sequential`` of Linear, Conv2d, ReLU and Flatten (nested ones flattened);
            maps x (N, ...) to logits (N, K).
        x: inputs (N, ...), values in [0, 1].
        eps: L-inf radius, a finite number >= 0 (or a tensor (N,) of per-example radii).
        C: the specification, (N, S, K); ``None`` bounds the logits themselves (S = K).
            ``C[n, s] = e_y - e_t`` bounds the margin of class y over t.
        method: ``"crown"`` (pre-activation bounds by CROWN, tighter, ``depth`` backward passes),
            ``"crown-ibp"`` (by IBP, one backward pass) or ``"alpha-crown"`` (CROWN's
            pre-activation bounds; the last pass's lower slopes optimized, module docstring).
        sound: account for the rounding of every step (:mod:`course_lib.crown_sound`: in
            float64, rounded outward to x's dtype), so that the bounds hold for the network's
            exact real arithmetic; on CUDA without TF32 or cuDNN. Layers: Linear, Conv2d, ReLU,
            Flatten, Identity.
        alpha_steps: ``"alpha-crown"``'s Adam steps, an integer >= 0 (0: CROWN's bounds).
        alpha_lr: their learning rate, a number > 0.
        lower_only: bound ``C @ logits`` from below only (half the backward pass's rows: what
            certification and CROWN-IBP training need); ``upper`` is then ``None``.

    Returns:
        ``(lower, upper)``, each (N, S): for every x' of the clipped ball,
        ``lower <= C @ model(x') <= upper`` up to floating-point rounding (exactly, for the real
        network, with ``sound``); equal to ``C @ model(x)`` at eps = 0 (up to rounding).

    Raises:
        TypeError: for a layer CROWN (or sound CROWN) does not support, named with its index.
        ValueError: for eps < 0, nan or infinite, x outside [0, 1], C of the wrong shape, or an
            unknown method (each message names the argument).

    Examples:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        ...     _ = model[0].bias.zero_(), model[2].weight.fill_(1.0), model[2].bias.zero_()
        >>> x = torch.tensor([[0.5, 0.5]])  # the box [0, 1]^2; the true maximum is 2, at (1, 0)
        >>> lower, upper = crown_bounds(model, x, 0.5)
        >>> ibp_lower, ibp_upper = ibp.ibp_bounds(model, x, 0.5)
        >>> round(upper.item(), 3), round(ibp_upper.item(), 3)  # CROWN's line beats IBP's box
        (2.5, 3.0)
        >>> margin = crown_bounds(model, x, 0.0, C=torch.tensor([[[1.0]]]))[0]  # eps = 0: the forward pass
        >>> torch.allclose(margin, model(x))
        True
        >>> sound_lower, sound_upper = crown_bounds(model, x, 0.5, sound=True)  # a hair wider
        >>> bool(sound_lower <= lower and sound_upper >= upper), round(sound_upper.item(), 3)
        (True, 2.5)
    """
    method = _checks.choice(method, "method", METHODS)
    sound = _checks.flag(sound, "sound")
    lower_only = _checks.flag(lower_only, "lower_only")
    alpha_steps = _checks.integer(alpha_steps, "alpha_steps", ge=0)
    alpha_lr = _checks.number(alpha_lr, "alpha_lr", gt=0)
    rules = _crown_rules(model)
    if sound:
        crown_sound.check_layers([layer for layer, _, _ in rules])
    lo, hi = input_box(x, eps)  # checks eps (a finite number >= 0) and x in [0, 1]
    shapes = [tuple(x.shape[1:])]
    with torch.no_grad():  # the shape of every layer's input, from one forward pass
        z = x
        for layer, _, _ in rules:
            z = layer(z)
            shapes.append(tuple(z.shape[1:]))
    n, k = x.shape[0], math.prod(shapes[-1])
    by_crown, dtype = method != "crown-ibp", x.dtype
    if sound:  # in float64, where x and the weights are exact (crown_sound), rounded back outward
        with rounding.exact_kernels(x.device):
            rules = [(crown_sound.in_float64(layer), rule, linear) for layer, rule, linear in rules]
            x = x.to(torch.float64)
            A = _spec_rows(C, n, k, shapes, x, both=not lower_only)
            box = rounding.box(x, checked_eps(x, eps, (0.0, 1.0)), (0.0, 1.0))  # around the real ball
            pre, boxes = crown_sound.sound_layer_bounds(rules, box, shapes, by_crown=by_crown)
            alphas = None if method != "alpha-crown" else _optimized_alphas(
                rules, A, shapes, pre, *boxes[0], alpha_steps, alpha_lr)
            bounds = crown_sound.round_to(crown_sound.sound_backward(
                rules, len(rules), A, shapes, pre, boxes, alphas), dtype)
    else:
        A = _spec_rows(C, n, k, shapes, lo, both=not lower_only)
        pre = _layer_bounds(rules, shapes, lo, hi, model, by_crown)
        alphas = None
        if method == "alpha-crown":
            alphas = _optimized_alphas(rules, A, shapes, pre, lo, hi, alpha_steps, alpha_lr)
        bounds = _backward(rules, len(rules), A, shapes, pre, lo, hi, alphas)
    if lower_only:
        return bounds, None
    S = A.shape[1] // 2
    return bounds[:, :S], -bounds[:, S:]


# ---------------------------------------------------------------------------
# Certification: every margin's lower bound > 0
# ---------------------------------------------------------------------------


def certify(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, *, method: str = "crown",
            sound: bool = False) -> Tensor:
    """Whether CROWN certifies each example: every margin ``z_y - z_j`` has a lower bound > 0.

    The margins are bounded with :func:`margin_spec` as ``C``, so the last layer is folded in.
    With ``sound=True`` the certificate holds for the network's exact real arithmetic (as
    :func:`course_lib.ibp.certify`'s default); without it, up to rounding (see the module
    docstring). Not certified does not mean an attack exists: CROWN is a relaxation.

    Args:
        model, x, eps, method, sound: as in :func:`crown_bounds`.
        y: int64 labels (N,).

    Returns:
        bool (N,) on x's device.

    Examples:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))  # lecture 4's 2-2-2 network
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]])), model[0].bias.zero_()
        ...     _ = model[2].weight.copy_(torch.tensor([[1.0, -2.0], [-1.0, 1.0]]))
        ...     _ = model[2].bias.copy_(torch.tensor([1.5, 0.0]))
        >>> x, y = torch.tensor([[0.5, 0.5]]), torch.tensor([0])
        >>> certify(model, x, y, 0.4).tolist(), ibp.certify(model, x, y, 0.4).tolist()  # margin >= 0.7 vs -0.5
        ([True], [False])
    """
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ValueError(f"x must be a batch of inputs (N, ...), got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(y, Tensor) or y.shape != x.shape[:1]:
        raise ValueError(f"y must be a tensor of {x.shape[0]} labels (N,), got "
                         f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
    with torch.no_grad():
        k = model(x[:1]).shape[-1] if x.shape[0] else 2
        lower, _ = crown_bounds(model, x, eps, C=margin_spec(y.to(x.device), k), method=method, sound=sound,
                                lower_only=True)
        return lower.min(1).values > 0


def certified_accuracy(model: nn.Module, data, eps: float, *, method: str = "crown", batch_size: int = 256,
                       device: torch.device | str | None = None, sound: bool = False) -> float:
    """Fraction of examples CROWN certifies at radius eps (a lower bound on the robust accuracy).

    Args:
        model: an ``nn.Sequential`` of Linear, Conv2d, ReLU and Flatten; train/eval mode does not matter.
        data: a pair of tensors ``(x, y)`` (split into batches of ``batch_size``) or an iterable
            of batches ``(x, y)`` (a DataLoader), x in [0, 1].
        eps: L-inf radius >= 0.
        method: ``"crown"``, ``"crown-ibp"`` or ``"alpha-crown"`` (:func:`crown_bounds`).
        batch_size: batch size when ``data`` is a pair of tensors, an integer >= 1 (``"crown"``
            holds ``2 m`` linear bounds per example for a layer of m units: lower it for wide CNNs).
        device: where to compute; default the model's device.
        sound: certificates that hold in exact arithmetic (:func:`certify`).

    Returns:
        Certified accuracy in [0, 1].

    Raises:
        ValueError: if ``data`` holds no examples, or for a bad eps, batch_size, method or batch.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> x = torch.rand(10, 1, 2, 2)
        >>> y = model(x).argmax(1)  # the model's own labels: certified at eps = 0, up to ties
        >>> certified_accuracy(model, (x, y), 0.0, batch_size=4), certified_accuracy(model, (x, 1 - y), 0.0)
        (1.0, 0.0)
    """
    return fraction_certified(lambda x, y: certify(model, x, y, eps, method=method, sound=sound), data, model=model,
                              batch_size=batch_size, device=device)
