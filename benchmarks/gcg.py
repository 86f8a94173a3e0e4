"""Speed of one GCG step (course_lib.jailbreak) against the model work it cannot avoid.

Run: ``.venv/bin/python benchmarks/gcg.py [--rounds 15] [--device cpu|cuda]``.

One GCG step on P prompts with ``batch`` candidates needs one forward and backward of the P
attacked sequences (the gradient w.r.t. the suffix's one-hot indicators) and one forward of
the ``batch`` x P candidate sequences. The ``floor`` contender does exactly that model work on
pre-built token tensors (the backward w.r.t. the input embeddings), and nothing else: no
tokenization, no top-k, no sampling, no bookkeeping. Each round times ``gcg_attack(...,
steps=1)`` and the floor in alternating order; the script prints the median over rounds of the
per-round ratio GCG / floor (target <= 1.2), for one prompt and for a universal suffix over
four prompts. On a CPU it times one thread (see ``timing.bench_device``).
"""

from __future__ import annotations

import argparse
import statistics

import torch

import course_lib.chat_zoo as chat_zoo
import course_lib.jailbreak as jb
import course_lib.language_model as lm
from timing import bench_device, timed  # benchmarks/timing.py


def floor_inputs(prompts, suffix_len, batch, device):
    """Token tensors of the gradient pass (P rows) and of the candidate pass (batch * P rows)."""
    target = lm.encode(jb.TARGET).tolist()
    prefixes = [lm.encode(p + " ").tolist() for p in prompts]
    suffix = lm.encode("!" * suffix_len).to(device)
    current = jb._sequences(prefixes, suffix[None], target)
    candidates = jb._sequences(prefixes, suffix.repeat(batch, 1), target)
    return current, candidates, len(target)


def floor(model, current, candidates, target_len):
    """One forward + backward of the current sequences, one forward of the candidates."""
    embeds = model.tok(current).detach().requires_grad_(True)
    loss = jb._target_ce(model(current, inputs_embeds=embeds), current, target_len).mean()
    torch.autograd.grad(loss, embeds)
    with torch.no_grad():
        jb._target_ce(model(candidates), candidates, target_len)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--device", default=None, help="default: course_lib.get_device()")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--suffix-len", type=int, default=12)
    args = parser.parse_args()
    device = bench_device(args.device)
    model = chat_zoo.load(device=device)
    harmful = [p for p, _, h in lm.corpus("test") if h]
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"suffix_len {args.suffix_len}, torch {torch.__version__}")
    for prompts in (harmful[:1], harmful[:4]):
        current, candidates, target_len = floor_inputs(prompts, args.suffix_len, args.batch, device)
        gen = torch.Generator(device=device).manual_seed(0)
        contenders = {
            "gcg step": lambda: jb.gcg_attack(model, prompts, suffix_len=args.suffix_len, steps=1,
                                              batch=args.batch, generator=gen),
            "floor": lambda: floor(model, current, candidates, target_len),
        }
        for fn in contenders.values():  # warm-up
            fn()
        ratios, ours = [], []
        for r in range(args.rounds):
            order = ["gcg step", "floor"] if r % 2 == 0 else ["floor", "gcg step"]
            t = {name: timed(contenders[name], device) for name in order}
            ratios.append(t["gcg step"] / t["floor"])
            ours.append(t["gcg step"])
        print(f"P = {len(prompts)}: GCG step {statistics.median(ours) * 1e3:7.1f} ms | "
              f"GCG step / floor = {statistics.median(ratios):.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
