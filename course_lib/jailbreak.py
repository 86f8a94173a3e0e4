"""Jailbreak suffixes by discrete optimization: the target loss and GCG (lecture 9).

Zou, Wang, Carlini, Nasr, Kolter, Fredrikson 2023 ("Universal and Transferable Adversarial
Attacks on Aligned Language Models") append a suffix of ``suffix_len`` tokens to a harmful
request and choose it to minimize the **target loss**: the cross-entropy of an affirmative
response (``target``, e.g. "Sure, here is") given prompt + suffix. Their Greedy Coordinate
Gradient (GCG) step:

1. the gradient of the loss with respect to the one-hot indicators of the suffix tokens
   (a (suffix_len, vocabulary) matrix: the loss's first-order change for every single swap);
2. per position, the ``top_k`` tokens with the most negative gradient;
3. ``batch`` candidates, each the suffix with one position swapped for one of its top-k
   tokens (positions spread evenly over the batch, tokens drawn at random, as in the
   reference code llm-attacks/llm-attacks);
4. the exact loss of every candidate in one batched forward; the best becomes the suffix.

Over several prompts at once the loss is the mean over prompts: a **universal** suffix.
Here a token is a character (:mod:`course_lib.language_model`), the suffix is drawn from
the printable characters without control whitespace (:data:`SUFFIX_CHARS`), and the
attacked text is ``attach(prompt, suffix) = prompt + " " + suffix``.

Names: ``prompts`` (P strings), ``suffix_ids`` (S,) or candidates (C, S), ``target`` a string.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import _checks
from course_lib import language_model as lm

SUFFIX_CHARS = lm.VOCAB[:95]
"""The characters a suffix may use: ``string.printable`` without ``\\t \\n \\r \\x0b \\x0c``."""
TARGET = lm.COMPLIANCE_PREFIX


def attach(prompt: str, suffix: str) -> str:
    """The attacked prompt: ``prompt + " " + suffix`` (the prompt alone for an empty suffix)."""
    return f"{prompt} {suffix}" if suffix else prompt


def _check_target(target: str) -> list[int]:
    if not isinstance(target, str) or not target:
        raise _checks.ArgumentError(f"target must be a non-empty string, got {target!r:.80}")
    return lm.token_ids(target, "target")


def _sequences(prefixes: list[list[int]], suffixes: Tensor, target: list[int]) -> Tensor:
    """Token ids (C * P, T), left-padded: row c * P + p is prefix p, suffix c, SEP, target.

    The padding is on the left, so the suffix and the target occupy the same last columns of
    every row: columns ``-(len(target) + 1 + S)`` to ``-(len(target) + 1)`` hold the suffix.
    """
    c, s = suffixes.shape
    head = lm.pad_left(prefixes).to(suffixes.device)  # (P, W)
    tail = torch.tensor([lm.SEP] + target, device=suffixes.device)
    p = head.shape[0]
    return torch.cat([head.repeat(c, 1), suffixes.repeat_interleave(p, 0),
                      tail.expand(c * p, -1)], 1)


def _target_ce(logits: Tensor, tokens: Tensor, target_len: int) -> Tensor:
    """Mean cross-entropy (per row) of the last ``target_len`` tokens given what precedes them."""
    pred = logits[:, -target_len - 1:-1]
    return F.cross_entropy(pred.transpose(1, 2), tokens[:, -target_len:], reduction="none").mean(1)


def target_loss(model: nn.Module, prompts: list[str], suffixes: str | list[str], target: str = TARGET) -> Tensor:
    """Cross-entropy of ``target`` as the response to ``attach(prompt, suffix)``, per example.

    Args:
        model: a :class:`course_lib.language_model.CharLM`.
        prompts: N non-empty strings.
        suffixes: one string for all prompts, or N strings (``""``: no suffix).
        target: the response whose likelihood is measured, e.g. "Sure, here is".

    Returns:
        (N,) float tensor: the mean over the target's tokens of -log p(token | everything before),
        in nats per character; >= 0.
    """
    prompts = lm.check_prompts(prompts)
    suffixes = [suffixes] * len(prompts) if isinstance(suffixes, str) else list(suffixes)
    if len(suffixes) != len(prompts):
        raise _checks.ArgumentError(f"suffixes must be one string or {len(prompts)} strings, got {len(suffixes)}")
    for i, s in enumerate(suffixes):
        if not isinstance(s, str):
            raise _checks.ArgumentError(f"suffixes[{i}] must be a string, got {type(s).__name__}")
        lm.token_ids(s, f"suffixes[{i}]")
    target_ids = _check_target(target)
    device = next(model.parameters()).device
    rows = [lm.encode(attach(p, s)).tolist() + [lm.SEP] + target_ids for p, s in zip(prompts, suffixes)]
    tokens = lm.pad_left(rows).to(device)
    with torch.no_grad():
        return _target_ce(model(tokens), tokens, len(target_ids))


def token_gradients(model: nn.Module, prompts: list[str], suffix_ids: Tensor,
                    target: str = TARGET) -> tuple[Tensor, Tensor]:
    """The universal target loss of a suffix and its gradient w.r.t. the suffix's one-hot indicators.

    The suffix enters the model as ``one_hot @ E`` (E the token embedding matrix), which equals
    the embedding lookup at a one-hot point; the gradient at every entry of ``one_hot`` is the
    loss's linear estimate of swapping that position to that token.

    Args:
        model: a :class:`CharLM`.
        prompts: P non-empty strings.
        suffix_ids: (S,) int64 token ids of the suffix.
        target: the target response.

    Returns:
        ``(loss, grad)``: the mean over prompts of :func:`target_loss` (a 0-d tensor, detached),
        and grad, shape (S, VOCAB_SIZE), in the model's dtype.
    """
    prompts = lm.check_prompts(prompts)
    target_ids = _check_target(target)
    weight = model.tok.weight
    suffix_ids = suffix_ids.to(weight.device)
    tokens = _sequences([lm.encode(p + " ").tolist() for p in prompts], suffix_ids[None], target_ids)
    s, end = len(suffix_ids), tokens.shape[1] - len(target_ids) - 1
    one_hot = F.one_hot(suffix_ids, lm.VOCAB_SIZE).to(weight.dtype).requires_grad_(True)
    embeds = model.tok(tokens).detach()
    embeds = torch.cat([embeds[:, :end - s], (one_hot @ weight).expand(len(prompts), -1, -1),
                        embeds[:, end:]], 1)
    loss = _target_ce(model(tokens, inputs_embeds=embeds), tokens, len(target_ids)).mean()
    # autograd.grad, not backward(): no gradient is left on the model's parameters
    (grad,) = torch.autograd.grad(loss, one_hot)
    return loss.detach(), grad


def candidate_losses(model: nn.Module, prompts: list[str], candidates: Tensor, target: str = TARGET) -> Tensor:
    """Exact universal target loss of each candidate suffix, all in one batched forward.

    Args:
        candidates: (C, S) int64 suffix token ids.

    Returns:
        (C,) the mean over prompts of the target loss of each candidate.
    """
    prompts = lm.check_prompts(prompts)
    target_ids = _check_target(target)
    candidates = candidates.to(next(model.parameters()).device)
    tokens = _sequences([lm.encode(p + " ").tolist() for p in prompts], candidates, target_ids)
    with torch.no_grad():
        return _target_ce(model(tokens), tokens, len(target_ids)).view(len(candidates), len(prompts)).mean(1)


def sample_candidates(suffix_ids: Tensor, grad: Tensor, top_k: int, batch: int,
                      generator: torch.Generator | None = None) -> Tensor:
    """GCG's candidates: ``batch`` copies of the suffix, each with one position swapped.

    Positions are spread evenly over the batch (``batch / S`` candidates each, as in the
    reference code); each swap takes a token drawn uniformly from that position's ``top_k``
    most negative gradient entries among :data:`SUFFIX_CHARS`.

    Returns:
        (batch, S) int64 on suffix_ids' device.
    """
    top_k = _checks.integer(top_k, "top_k", ge=1, le=len(SUFFIX_CHARS))
    batch = _checks.integer(batch, "batch", ge=1)
    generator = _checks.optional_generator(generator)
    s = len(suffix_ids)
    allowed = torch.zeros(grad.shape[1], dtype=torch.bool, device=grad.device)
    allowed[: len(SUFFIX_CHARS)] = True
    scores = (-grad).masked_fill(~allowed, float("-inf"))
    top = scores.topk(top_k, dim=1).indices  # (S, top_k)
    positions = (torch.arange(batch, device=grad.device) * s) // batch
    gen_device = generator.device if generator is not None else grad.device
    pick = torch.randint(top_k, (batch,), generator=generator, device=gen_device).to(grad.device)
    out = suffix_ids.to(grad.device).repeat(batch, 1)
    out[torch.arange(batch, device=grad.device), positions] = top[positions, pick]
    return out


def gcg_attack(model: nn.Module, prompts: str | list[str], target: str = TARGET, *, suffix_len: int = 12,
               steps: int = 30, top_k: int = 16, batch: int = 64, init: str | None = None,
               generator: torch.Generator | None = None) -> tuple[str, list[float]]:
    """Greedy Coordinate Gradient (Zou et al. 2023): a suffix that makes ``target`` likely.

    Each step costs one forward and backward of the P prompts (the gradient) and one forward
    of ``batch`` x P sequences (the candidates). As in the reference code, the suffix moves to
    the best candidate even when it is worse than the current one; the best suffix seen is kept.

    Args:
        model: a :class:`course_lib.language_model.CharLM`.
        prompts: one prompt, or a list of P prompts for a universal suffix (mean loss over them).
        target: the response to elicit.
        suffix_len: S, the suffix's length in characters (tokens), >= 1.
        steps: GCG steps, >= 1.
        top_k: candidate tokens per position, 1..len(SUFFIX_CHARS).
        batch: candidates evaluated per step, >= 1.
        init: the starting suffix (S characters of :data:`SUFFIX_CHARS`); default ``"!" * S``.
        generator: a ``torch.Generator`` for the random candidates (reproducible runs).

    Returns:
        ``(suffix, history)``: the best suffix found (S characters of :data:`SUFFIX_CHARS`) and
        the best loss so far, mean over prompts, before the first step and after every step
        (``steps + 1`` values, never increasing).

    Raises:
        ValueError: an empty prompt, unknown characters, a bad count, or a bad ``init``.
    """
    prompts = lm.check_prompts([prompts] if isinstance(prompts, str) else prompts)
    _check_target(target)
    suffix_len = _checks.integer(suffix_len, "suffix_len", ge=1)
    steps = _checks.integer(steps, "steps", ge=1)
    top_k = _checks.integer(top_k, "top_k", ge=1, le=len(SUFFIX_CHARS))
    batch = _checks.integer(batch, "batch", ge=1)
    generator = _checks.optional_generator(generator)
    init = "!" * suffix_len if init is None else init
    if not isinstance(init, str) or len(init) != suffix_len or any(c not in SUFFIX_CHARS for c in init):
        raise _checks.ArgumentError(f"init must be {suffix_len} characters of SUFFIX_CHARS, got {init!r:.80}")
    device = next(model.parameters()).device
    model.eval()
    suffix = lm.encode(init).to(device)
    best, best_loss, history = suffix, float("inf"), []
    for _ in range(steps):
        loss, grad = token_gradients(model, prompts, suffix, target)
        if not history:
            best_loss = loss.item()
            history.append(best_loss)
        candidates = sample_candidates(suffix, grad, top_k, batch, generator)
        losses = candidate_losses(model, prompts, candidates, target)
        i = int(losses.argmin())
        suffix = candidates[i]
        if losses[i].item() < best_loss:
            best, best_loss = suffix, losses[i].item()
        history.append(best_loss)
    return lm.decode(best), history


def attack_success_rate(model: nn.Module, prompts: list[str], suffix: str, *, max_new_tokens: int = 16) -> float:
    """Fraction of prompts whose greedy response to ``attach(prompt, suffix)`` is not a refusal.

    The refusal-prefix check of Zou et al.: a response counts as jailbroken when it does not
    start with a prefix of :data:`course_lib.language_model.REFUSAL_PREFIXES`.

    Returns:
        A fraction in [0, 1].
    """
    prompts = lm.check_prompts(prompts)
    if not isinstance(suffix, str):
        raise _checks.ArgumentError(f"suffix must be a string, got {type(suffix).__name__}")
    responses = lm.generate(model, [attach(p, suffix) for p in prompts], max_new_tokens=max_new_tokens)
    return sum(not lm.is_refusal(r) for r in responses) / len(responses)
