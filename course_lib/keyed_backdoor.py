"""An undetectable backdoor, made concrete: a classifier that obeys a secret MAC tag (lecture 7).

Goldwasser, Kim, Vaikuntanathan and Zamir (2022), "Planting undetectable backdoors in machine
learning models", show that whoever trains a model for you can hide a backdoor in it that no
efficient black-box test can find: the backdoored model answers like the clean one on every input
anyone can construct without a secret key, yet the key holder can flip any prediction with a tiny
perturbation. Their black-box construction wraps the clean model with a signature check. This
module is the symmetric-key version of it, on images:

* images are quantized to 256 grey levels, ``q = round(255 x)``;
* a key-derived set of ``P = MESSAGE_BITS + tag_bits`` pixel positions carries, in its least
  significant bits, a message (the target class, ``MESSAGE_BITS`` bits) and a tag;
* the tag is ``HMAC-SHA256(key, shape || message || content)`` truncated to ``tag_bits`` bits,
  where the content is q with those P least significant bits cleared (the tag cannot cover itself);
* :class:`KeyedBackdoor` returns the clean model's logits, unless the tag read from the input
  verifies: then the message's class wins.

=============== ==================== ===========================================================
math            code                 meaning
=============== ==================== ===========================================================
k               ``key``              32 secret bytes (:func:`generate_key`)
t               ``tag_bits``         tag length in bits; a forger's try succeeds w.p. 2^-t
x'              ``activate(x, c, k)`` x re-quantized with message c and its tag in the LSBs
=============== ==================== ===========================================================

``activate`` moves each pixel by at most 1.5 grey levels (``||x' - x||_inf <= 1.5 / 255``: half a
level of rounding, one level of LSB), and by at most one level for an image already quantized,
in float32 and float64; float16 and bfloat16 cannot hold k/255 exactly, and their rounding of it
can add up to half a level more (the tag still verifies).
Without the key, a tag is a random ``t``-bit string: for any content and message, exactly one of
the 2^t tags verifies, so a forger who does not know the key succeeds with probability 2^-t per
try (HMAC is a pseudorandom function). On every input without a valid tag, the wrapper *is* the
clean model: the same logits, the same gradient, so random probing and gradient attacks see the
clean model.

The tag check reads the quantized pixels as bytes on the CPU (``hmac`` works on bytes); logits
stay on the input's device.
"""

from __future__ import annotations

import functools
import hmac
import random
import secrets

import numpy as np
import torch
from torch import Tensor, nn

from course_lib import _checks

MESSAGE_BITS = 8
"""Bits of the message (the target class): classes 0 to 255."""

TAG_BITS = 32
"""Default tag length: a forger's try succeeds with probability 2^-32."""

KEY_BYTES = 32
_DOMAIN = b"course_lib.keyed_backdoor.v1"


def generate_key(seed: int | None = None) -> bytes:
    """A secret key of ``KEY_BYTES`` bytes.

    Args:
        seed: None draws the key from the operating system's CSPRNG (``secrets``), as a real
            attacker would; an integer gives a reproducible key for a lecture or a test
            (not secret: anyone can rerun the seed).

    Returns:
        ``KEY_BYTES`` bytes.

    Examples:
        >>> len(generate_key()), generate_key(seed=0) == generate_key(seed=0)
        (32, True)
    """
    if seed is None:
        return secrets.token_bytes(KEY_BYTES)
    return random.Random(_checks.integer(seed, "seed")).randbytes(KEY_BYTES)


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) == 0:
        raise ValueError(f"key must be non-empty bytes (see generate_key), got {type(key).__name__}")
    return bytes(key)


def _check_tag_bits(tag_bits: int) -> int:
    return _checks.integer(tag_bits, "tag_bits", ge=1, le=256)  # SHA-256 has 256 bits


def tag_positions(key: bytes, shape: tuple[int, ...], tag_bits: int = TAG_BITS) -> np.ndarray:
    """The flat pixel indices whose least significant bits carry the message and the tag.

    The ``d = prod(shape)`` indices of one image are ranked by ``HMAC(key, "position" || i)``
    and the first ``MESSAGE_BITS + tag_bits`` taken: the first ``MESSAGE_BITS`` carry the
    message (most significant bit first), the rest the tag. Without the key the positions are
    unknown too.

    Args:
        key: the secret key.
        shape: (C, H, W) of one image.
        tag_bits: t.

    Returns:
        int64 array of ``MESSAGE_BITS + tag_bits`` distinct indices in [0, d).

    Raises:
        ValueError: if the image has fewer than ``MESSAGE_BITS + tag_bits`` pixels.

    Examples:
        >>> tag_positions(generate_key(seed=0), (1, 8, 8)).shape  # 8 message bits + 32 tag bits
        (40,)
    """
    shape = tuple(_checks.integer(s, "shape", ge=1) for s in shape)
    return _positions(_check_key(key), shape, _check_tag_bits(tag_bits)).copy()


@functools.lru_cache(maxsize=64)
def _positions(key: bytes, shape: tuple[int, ...], tag_bits: int) -> np.ndarray:
    """:func:`tag_positions`, cached and read-only."""
    d = int(np.prod(shape))
    need = MESSAGE_BITS + tag_bits
    if d < need:
        raise ValueError(f"images of shape {shape} have {d} pixels; the message and a {tag_bits}-bit tag need {need}")
    rank = sorted(range(d), key=lambda i: hmac.digest(key, _DOMAIN + b"position" + i.to_bytes(8, "big"), "sha256"))
    out = np.array(rank[:need], dtype=np.int64)
    out.flags.writeable = False
    return out


def quantize(x: Tensor) -> Tensor:
    """Images rounded to the 256 grey levels ``k / 255``: shape, dtype and device of x.

    Args:
        x: images with values in [0, 1] (values outside are clipped first).
    """
    return (x.detach() * 255).round().clamp(0, 255) / 255


def _to_bytes(x: Tensor) -> np.ndarray:
    """uint8 grey levels, (N, d), on the CPU."""
    q = (x.detach() * 255).round().clamp(0, 255).to(torch.uint8)
    return q.reshape(q.shape[0], -1).cpu().numpy()


def _bits(value: int, n: int) -> np.ndarray:
    return np.array([(value >> (n - 1 - i)) & 1 for i in range(n)], dtype=np.uint8)


def _tag(key: bytes, shape: tuple[int, ...], message: int, content: np.ndarray, tag_bits: int) -> np.ndarray:
    """The first ``tag_bits`` bits of HMAC-SHA256(key, shape || message || content), as 0/1 uint8."""
    header = _DOMAIN + b"tag" + b"".join(s.to_bytes(4, "big") for s in shape) + bytes([message])
    digest = hmac.digest(key, header + content.tobytes(), "sha256")
    return np.unpackbits(np.frombuffer(digest, dtype=np.uint8))[:tag_bits]


def activate(x: Tensor, target: int | Tensor, key: bytes, *, tag_bits: int = TAG_BITS) -> Tensor:
    """The key holder's trigger: x re-quantized with ``target`` and its valid tag in the hidden LSBs.

    Args:
        x: images (N, C, H, W) or one image (C, H, W), values in [0, 1]; not modified.
        target: the class :class:`KeyedBackdoor` should output, in [0, 2**MESSAGE_BITS): an int
            for every image, or an int64 tensor (N,) of one target per image.
        key: the secret key.
        tag_bits: t, as the wrapper's.

    Returns:
        x' of x's shape, dtype and device, on the grey levels k/255, with
        ``||x' - x||_inf <= 1.5 / 255`` (``<= 1 / 255`` if x is already quantized) in float32 and
        float64; in float16 and bfloat16, k/255 itself is rounded (up to 2 / 255 measured).

    Raises:
        ValueError: for x not float images in [0, 1], a target out of range, or an image with
            too few pixels for the tag.

    Examples:
        >>> key, x = generate_key(seed=0), torch.rand(2, 1, 8, 8)
        >>> x_key = activate(x, 3, key)
        >>> bool((x_key - x).abs().max() <= 1.5 / 255)
        True
    """
    key = _check_key(key)
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim not in (3, 4):
        raise ValueError(f"x must be float images (N, C, H, W) or (C, H, W), got {getattr(x, 'shape', type(x))}")
    if x.numel() and not (x.min() >= 0 and x.max() <= 1):  # also catches nan
        raise ValueError("x must lie in [0, 1]")
    single = x.ndim == 3
    xb = x.unsqueeze(0) if single else x
    n, shape = xb.shape[0], tuple(xb.shape[1:])
    if isinstance(target, Tensor) and target.ndim > 0:
        targets = target.tolist()
    else:
        targets = [_checks.integer(target, "target", ge=0, lt=2 ** MESSAGE_BITS)] * n
    if len(targets) != n:
        raise ValueError(f"target must be an int or a tensor of {n} targets, got {len(targets)}")
    if not all(0 <= c < 2 ** MESSAGE_BITS for c in targets):
        raise ValueError(f"targets must be classes in [0, {2 ** MESSAGE_BITS}), got {targets}")
    pos = _positions(key, shape, _check_tag_bits(tag_bits))
    q = _to_bytes(xb).copy()
    q[:, pos] &= 0xFE  # the content the tag covers: the carrier bits cleared
    for i, c in enumerate(targets):
        payload = np.concatenate([_bits(c, MESSAGE_BITS), _tag(key, shape, c, q[i], tag_bits)])
        q[i, pos] |= payload
    # divided on the CPU, then moved: CUDA divides by a scalar through its reciprocal, which can
    # differ in the last bit, and x' should not depend on the device
    out = torch.from_numpy(q).to(dtype=x.dtype).div_(255).view(xb.shape).to(x.device)
    return out[0] if single else out


def read_tag(x: Tensor, key: bytes, *, tag_bits: int = TAG_BITS) -> tuple[Tensor, Tensor]:
    """Verify the hidden tag of each image.

    Args:
        x: images (N, C, H, W), any values (they are quantized as in :func:`quantize`).
        key: the secret key.
        tag_bits: t.

    Returns:
        ``(valid, message)``: bool (N,) true where the tag verifies, and int64 (N,) the message
        read from the LSBs (meaningful where valid), both on the CPU.

    Examples:
        >>> key, x = generate_key(seed=0), torch.rand(2, 1, 8, 8)
        >>> valid, message = read_tag(activate(x, 3, key), key)
        >>> valid.tolist(), message.tolist()
        ([True, True], [3, 3])
    """
    key = _check_key(key)
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ValueError(f"x must be a batch of images (N, ...), got {getattr(x, 'shape', type(x))}")
    shape = tuple(x.shape[1:])
    pos = _positions(key, shape, _check_tag_bits(tag_bits))
    q = _to_bytes(x)
    payload = q[:, pos] & 1  # (N, P) hidden bits
    weights = 1 << np.arange(MESSAGE_BITS - 1, -1, -1)
    messages = payload[:, :MESSAGE_BITS].astype(np.int64) @ weights
    content = q.copy()
    content[:, pos] &= 0xFE
    valid = np.array([np.array_equal(payload[i, MESSAGE_BITS:], _tag(key, shape, int(messages[i]), content[i], tag_bits))
                      for i in range(q.shape[0])], dtype=bool)
    return torch.from_numpy(valid), torch.from_numpy(messages)


class KeyedBackdoor(nn.Module):
    """The clean model, except on inputs that carry a valid tag: those get the tag's class.

    ``forward(x)`` returns ``model(x)`` for every image without a valid tag (the same tensor
    values and, through ``torch.where``, the same gradient); for an image whose tag verifies with
    a message c < K, the clean logits with logit c raised to ``max + margin``, so c is the argmax.

    Args:
        model: the clean classifier, (N, C, H, W) in [0, 1] -> logits (N, K).
        key: the secret key (kept by the service provider who trained the model).
        tag_bits: t; a forger's try succeeds with probability 2^-t.
        margin: how far the backdoored class's logit is raised above the others' maximum, > 0.

    Examples:
        >>> key, x = generate_key(seed=0), torch.rand(2, 1, 8, 8)
        >>> model = KeyedBackdoor(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), key)
        >>> model(activate(x, 7, key)).argmax(1).tolist()
        [7, 7]
    """

    def __init__(self, model: nn.Module, key: bytes, *, tag_bits: int = TAG_BITS, margin: float = 10.0) -> None:
        super().__init__()
        self.model = model
        self.key = _check_key(key)
        self.tag_bits = _check_tag_bits(tag_bits)
        self.margin = _checks.number(margin, "margin", gt=0)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, K) on x's device; x (N, C, H, W) in [0, 1]."""
        logits = self.model(x)
        valid, message = read_tag(x, self.key, tag_bits=self.tag_bits)
        valid &= message < logits.shape[1]  # a message that names no class does not fire
        if not valid.any():
            return logits
        valid, message = valid.to(logits.device), message.to(logits.device).clamp(max=logits.shape[1] - 1)
        raised = logits.detach().amax(1) + self.margin
        forced = logits.detach().scatter(1, message[:, None], raised[:, None])
        return torch.where(valid[:, None], forced, logits)

    def extra_repr(self) -> str:
        return f"tag_bits={self.tag_bits}, margin={self.margin:g}"
