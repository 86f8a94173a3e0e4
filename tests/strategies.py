"""Shared random cases for the tests: small random ``nn.Sequential`` models of Linear, Conv2d,
ReLU (Sigmoid, Tanh) and Flatten, input batches in [0, 1] with pixels on the faces of the cube,
and random boxes. Test files import these instead of building their own."""

from __future__ import annotations

import math

import torch
from torch import nn


def random_case(seed: int, dtype: torch.dtype = torch.float64):
    """A random MLP (even seeds) or CNN (odd seeds) of random depth, widths and activations, a
    batch ``x`` in [0, 1] with pixels on the faces (clipping the box matters), labels ``y``, a
    radius ``eps`` from 0 to 2 (by seed) and the generator that drew them, for more draws.

    Returns:
        ``(model, x, y, eps, generator)``.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rint = lambda a, b: int(torch.randint(a, b, (), generator=g))  # noqa: E731
    k = rint(2, 6)
    acts = [nn.ReLU, nn.ReLU, nn.Tanh, nn.Sigmoid]
    if seed % 2 == 0:  # MLP on (d,) or (1, h, w)
        shape = (rint(1, 9),) if seed % 4 == 0 else (1, rint(2, 4), rint(2, 4))
        layers, width = ([] if len(shape) == 1 else [nn.Flatten()]), math.prod(shape)
        for _ in range(rint(0, 4)):
            w = rint(2, 20)
            layers += [nn.Linear(width, w), acts[rint(0, 4)]()]
            width = w
        layers.append(nn.Linear(width, k))
    else:  # CNN
        c, h = rint(1, 3), rint(4, 8)
        shape = (c, h, h)
        ch = rint(2, 5)
        layers = [nn.Conv2d(c, ch, 3, stride=rint(1, 3), padding=rint(0, 2)), acts[rint(0, 4)]()]
        if seed % 3 == 0:
            layers += [nn.Conv2d(ch, ch, 2, padding=1), nn.ReLU()]
        layers.append(nn.Flatten())
        with torch.no_grad():
            width = nn.Sequential(*layers)(torch.zeros(1, *shape)).shape[1]
        layers += [nn.Linear(width, rint(3, 12)), nn.ReLU()]
        layers.append(nn.Linear(layers[-2].out_features, k))
    model = nn.Sequential(*layers).to(dtype)
    n = rint(1, 5)
    x = torch.rand(n, *shape, generator=g, dtype=dtype)
    x[x < 0.2] = 0.0  # on the faces of [0, 1]: clipping the box matters
    x[x > 0.8] = 1.0
    eps = [0.0, 0.01, 0.05, 0.1, 0.3, 2.0][seed % 6]
    y = torch.randint(0, k, (n,), generator=g)
    return model, x, y, eps, g


def box_samples(x: torch.Tensor, eps: float, g: torch.Generator, count: int) -> torch.Tensor:
    """Uniform points of the box ``[x - eps, x + eps]`` clipped to [0, 1] around each example,
    a quarter of them at random corners: (count, N, ...)."""
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    u = torch.rand(count, *x.shape, generator=g, dtype=x.dtype)
    u[: count // 4] = u[: count // 4].round()
    return lo + u * (hi - lo)


def random_box(seed: int, shape: tuple[int, ...], *, width: float = 1.0, dtype: torch.dtype = torch.float64):
    """A random box ``(lower, upper)`` of ``shape``: lower normal, upper = lower + U[0, width)."""
    g = torch.Generator().manual_seed(seed)
    lower = torch.randn(*shape, generator=g, dtype=dtype)
    return lower, lower + width * torch.rand(*shape, generator=g, dtype=dtype)


def small_model(seed: int, kind: str, shape=(1, 6, 6), classes=4) -> nn.Module:
    """A tiny seeded classifier of images ``shape``: a one-conv CNN (``kind="cnn"``) or a 16-unit MLP."""
    torch.manual_seed(seed)
    if kind == "cnn":
        return nn.Sequential(nn.Conv2d(shape[0], 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(3 * shape[1] * shape[2], classes))
    from course_lib import models
    return models.mlp(shape, classes, hidden=(16,))


def image_batch(seed: int, n=8, shape=(1, 6, 6), classes=4) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded images in [0, 1] with random labels; the first lies on the box's face 0, the second on 1."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=gen)
    x[0] = 0.0  # examples on the box's faces: clipping must be active somewhere
    x[1] = 1.0
    return x, torch.randint(0, classes, (n,), generator=gen)


def classified_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 36-16-3 MLP, four 6x6 images (the first on the box's face 0) and the model's own labels,
    so every example starts correctly classified: the widgets' tests draw attacks on it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 3))
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 6, 6, generator=gen)
    x[0] = 0.0  # on the box's face: clipping is active
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y
