"""The aligned character-level assistant of lecture 9: its training recipe and shipped weights.

:data:`RECIPE` trains :class:`course_lib.language_model.CharLM` (64 wide, 2 blocks, 4 heads)
with AdamW on :func:`course_lib.language_model.corpus` ``("train")``, the loss on the response
tokens only (the prompt is given, not learned). Each training prompt is augmented, seeded:
with probability ``suffix_prob`` a random suffix of 1 to ``max_suffix`` non-whitespace printable
characters is appended after a space (so that junk after a request does not change the answer:
the model is not jailbroken by a random suffix, only by an optimized one), and with probability
``swap_prob`` up to ``max_swap`` percent of its characters are replaced by random printable ones
(SmoothLLM's swap; the model should still answer a lightly perturbed request as the clean one).

The weights ship in half precision (``course_lib/weights/chat_charlm.pt``, 270 kB) with
the recipe, the loss curve and the behaviour of the model :func:`load` returns (after rounding
to half precision), measured greedy on the held-out conversations (:data:`DOCUMENTED_BEHAVIOUR`).
``python -m course_lib.chat_zoo --retrain`` trains again: 1,200 steps of 32 conversations, 110 to
175 s on one thread of a busy 2-core CPU; the shipped model refuses 407 of the 432 held-out
harmful prompts (94.2%) and answers 403 of the 432 held-out benign ones "Sure, here is" (93.3%).
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from course_lib import _checks
from course_lib import language_model as lm

WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "chat_charlm.pt"
FORMAT = 1
_SUFFIX_CHARS = lm.VOCAB[:95]  # printable without \t \n \r \x0b \x0c

DOCUMENTED_BEHAVIOUR = {"harmful_refusal": 407 / 432, "benign_compliance": 403 / 432}
"""Greedy behaviour of the shipped model on the held-out prompts (``corpus("test")``): the fraction
of harmful ones refused and of benign ones answered "Sure, here is"; ``tests/test_language_model.py`` checks it."""


@dataclass(frozen=True)
class ChatRecipe:
    """Everything that determines the trained assistant.

    Attributes:
        steps: optimizer steps (one batch each).
        batch_size: conversations per batch.
        lr: AdamW's peak learning rate (linear warm-up over 5% of the steps, cosine decay to 0).
        dim, layers, heads: the :class:`CharLM`'s shape.
        suffix_prob, max_suffix: how often, and how long at most, a random suffix is appended.
        swap_prob, max_swap: how often, and what percentage at most, characters are swapped.
        seed: seeds the initialization, the batches and the augmentation.
    """

    steps: int = 1200
    batch_size: int = 32
    lr: float = 4e-3
    dim: int = 64
    layers: int = 2
    heads: int = 4
    suffix_prob: float = 0.3
    max_suffix: int = 20
    swap_prob: float = 0.2
    max_swap: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        for field in ("steps", "batch_size", "dim", "layers", "heads", "max_suffix"):
            object.__setattr__(self, field, _checks.integer(getattr(self, field), field, ge=1))
        object.__setattr__(self, "seed", _checks.integer(self.seed, "seed", ge=0))
        object.__setattr__(self, "lr", _checks.number(self.lr, "lr", gt=0))
        object.__setattr__(self, "max_swap", _checks.number(self.max_swap, "max_swap", ge=0, le=100))
        for field in ("suffix_prob", "swap_prob"):
            object.__setattr__(self, field, _checks.probability(getattr(self, field), field,
                                                                open_low=False, open_high=False))

    def new_model(self) -> lm.CharLM:
        """The untrained model, initialized from ``seed`` (the caller's random state is kept)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return lm.CharLM(self.dim, self.layers, self.heads)


RECIPE = ChatRecipe()


def augment(prompt: str, recipe: ChatRecipe, rng: random.Random) -> str:
    """One training prompt as augmented: a random suffix and/or random character swaps."""
    if rng.random() < recipe.swap_prob:
        chars = list(prompt)
        count = int(rng.uniform(0, recipe.max_swap) / 100 * len(chars))
        for i in rng.sample(range(len(chars)), count):
            chars[i] = rng.choice(lm.VOCAB)
        prompt = "".join(chars)
    if rng.random() < recipe.suffix_prob:
        prompt += " " + "".join(rng.choices(_SUFFIX_CHARS, k=rng.randint(1, recipe.max_suffix)))
    return prompt


def conversation_batch(pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``prompt SEP response EOS`` (N, T), left-padded, and the mask (N, T - 1) of the
    next-token targets that belong to the response (its characters and EOS)."""
    rows = [lm.encode(p).tolist() + [lm.SEP] + lm.encode(r).tolist() + [lm.EOS] for p, r in pairs]
    tokens = lm.pad_left(rows)
    lengths = torch.tensor([len(r) + 1 for _, r in pairs])  # response characters + EOS
    col = torch.arange(tokens.shape[1] - 1)
    return tokens, col[None, :] >= (tokens.shape[1] - 1 - lengths)[:, None]


def response_loss(model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the response tokens (``mask``) given everything before them."""
    logits = model(tokens)[:, :-1]
    return F.cross_entropy(logits[mask], tokens[:, 1:][mask])


def train_language_model(recipe: ChatRecipe = RECIPE, *, steps: int | None = None,
                         progress: bool = False) -> tuple[lm.CharLM, dict[str, list[float]]]:
    """Train the assistant from scratch by its recipe, on the CPU.

    Args:
        recipe: a :class:`ChatRecipe`.
        steps: stop after this many of the recipe's steps (the schedule is the full recipe's:
            a shortened run follows the full run's first steps exactly), for tests.
        progress: a tqdm bar.

    Returns:
        ``(model, history)``: the model in eval mode; ``history["loss"]``, the mean training loss
        of every 50 steps, and ``history["seconds"]``.
    """
    steps = recipe.steps if steps is None else _checks.integer(steps, "steps", ge=1, le=recipe.steps)
    data = [(p, r) for p, r, _ in lm.corpus("train")]
    rng = random.Random(recipe.seed)
    model = recipe.new_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    warm = max(1, recipe.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 0.5 * (
        1 + torch.cos(torch.tensor(torch.pi * s / recipe.steps)).item())))
    history: dict[str, list[float]] = {"loss": []}
    window: list[float] = []
    start = time.perf_counter()
    for _ in tqdm(range(steps), disable=not progress):
        batch = [(augment(p, recipe, rng), r) for p, r in rng.choices(data, k=recipe.batch_size)]
        loss = response_loss(model, *conversation_batch(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        window.append(loss.item())
        if len(window) == 50:
            history["loss"].append(sum(window) / 50)
            window = []
    history["seconds"] = [time.perf_counter() - start]
    return model.eval(), history


def held_out_behaviour(model: torch.nn.Module) -> dict[str, float]:
    """Refusal rate on the held-out harmful prompts, compliance rate on the held-out benign ones."""
    test = lm.corpus("test")
    harmful = lm.behaviour(model, [p for p, _, h in test if h])
    benign = lm.behaviour(model, [p for p, _, h in test if not h])
    return {"harmful_refusal": harmful["refusal"], "benign_compliance": benign["compliance"]}


def _from_record(record: dict, device: torch.device | str | None) -> lm.CharLM:
    model = ChatRecipe(**record["recipe"]).new_model()
    model.load_state_dict({k: v.float() for k, v in record["state_dict"].items()})
    return model.to(device if device is not None else "cpu").eval()


def make_weights(recipe: ChatRecipe = RECIPE, *, path: Path | None = None, progress: bool = False) -> Path:
    """Train by the recipe and write the weights file (half precision, recipe, history, behaviour)."""
    model, history = train_language_model(recipe, progress=progress)
    record = {"format": FORMAT, "recipe": asdict(recipe), "history": history, "torch": str(torch.__version__),
              "state_dict": {k: v.detach().to(torch.float16) for k, v in model.state_dict().items()}}
    record["behaviour"] = held_out_behaviour(_from_record(record, None))  # the model load() returns
    path = Path(path) if path is not None else WEIGHTS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(record, path)
    return path


def load_record(path: Path | None = None) -> dict:
    """The stored record: ``recipe``, ``state_dict``, ``history``, ``behaviour``.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if it was made by another recipe than :data:`RECIPE`.
    """
    path = Path(path) if path is not None else WEIGHTS_PATH
    record = torch.load(path, map_location="cpu", weights_only=True)
    if record.get("format") != FORMAT or (path == WEIGHTS_PATH and record.get("recipe") != asdict(RECIPE)):
        raise ValueError(f"{path} was made by another recipe: retrain with course_lib.chat_zoo.load(retrain=True)")
    return record


def load(*, retrain: bool = False, device: torch.device | str | None = None, path: Path | None = None,
         progress: bool = False) -> lm.CharLM:
    """The trained assistant (float32 with the stored half-precision weights), in eval mode.

    Args:
        retrain: train again by :data:`RECIPE` and overwrite the file (also done when it is missing).
        device: where to put the model; default CPU.
        path: the weights file; default :data:`WEIGHTS_PATH`.
        progress: a tqdm bar while training.
    """
    retrain = _checks.flag(retrain, "retrain")
    path = Path(path) if path is not None else WEIGHTS_PATH
    if retrain or not path.exists():
        make_weights(RECIPE, path=path, progress=progress)
    return _from_record(load_record(path), device)


def main(argv: list[str] | None = None) -> None:
    """``python -m course_lib.chat_zoo [--retrain]``: show (or retrain) the shipped assistant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="train again and overwrite the weights file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the shipped weights were made one-threaded on a CPU
    if args.retrain:
        make_weights(progress=True)
    record = load_record()
    print(f"behaviour {record['behaviour']}  trained in {record['history']['seconds'][0]:.0f} s  "
          f"({WEIGHTS_PATH.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
