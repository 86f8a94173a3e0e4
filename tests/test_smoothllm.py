"""course_lib.smoothllm: the three perturbations, the guarantee, and the majority vote.

Independent checks: perturbations are read back from their output (the test prompts use
characters outside ``string.printable``, so every perturbed position is visible); the laws of
the number of perturbed suffix characters against SciPy's hypergeometric law (swap), a closed
form (patch) and a brute-force enumeration of every ordered draw (insert); the guarantee
against the paper's formula written out with exact fractions and against Monte Carlo runs of
``perturb`` itself.
"""

from __future__ import annotations

import doctest
import itertools
import math
import random
import sys
import types
from fractions import Fraction

import pytest
import scipy.stats

from course_lib import smoothllm
from course_lib._checks import ArgumentError
from course_lib.smoothllm import (ALPHABET, KINDS, SmoothLLM, defense_success_probability, is_jailbroken,
                                  num_perturbed, perturb, suffix_change_distribution)

# characters outside string.printable: a drawn character can never equal one of them
MARKS = "".join(chr(0x100 + i) for i in range(400))


def marked(m: int) -> str:
    """A prompt of m distinct non-printable characters."""
    return MARKS[:m]


def changed_positions(text: str, out: str) -> list[int]:
    return [i for i, (a, b) in enumerate(zip(text, out)) if a != b]


def perturbed_suffix_chars(text: str, out: str, kind: str, suffix_len: int) -> int:
    """How many suffix characters one perturbed copy changed (inserted), read from the output."""
    m = len(text)
    if kind == "insert":  # inserted strictly inside the suffix: after its first character
        return sum(c in ALPHABET for c in out[out.index(text[m - suffix_len]) + 1:]) if suffix_len else 0
    return sum(1 for i in changed_positions(text, out) if i >= m - suffix_len)


def random_cases(seed: int, count: int, max_len: int = 60):
    rng = random.Random(seed)
    for _ in range(count):
        m = rng.randint(1, max_len)
        yield m, rng.choice([0, 1, 10, 29, 50, 99, 100, round(rng.uniform(0, 100), 3)]), rng


# ---------------------------------------------------------------- perturbations

def test_num_perturbed_takes_the_product_first():
    assert num_perturbed(100, 29) == 29  # 29 / 100 * 100 == 28.999...
    assert num_perturbed(10, 15) == 1 and num_perturbed(7, 100) == 7 and num_perturbed(7, 0) == 0
    for m, q, _ in random_cases(0, 200):
        assert num_perturbed(m, q) == int(m * q / 100)


@pytest.mark.parametrize("seed", range(4))
def test_swap_changes_exactly_m_positions_with_printable_characters(seed):
    for m, q, rng in random_cases(seed, 100):
        text, width = marked(m), num_perturbed(m, q)
        out = perturb(text, q, "swap", rng=rng)
        assert len(out) == m
        changed = changed_positions(text, out)
        assert len(changed) == width
        assert all(out[i] in ALPHABET for i in changed)


@pytest.mark.parametrize("seed", range(4))
def test_patch_replaces_one_contiguous_window(seed):
    for m, q, rng in random_cases(seed, 100):
        text, width = marked(m), num_perturbed(m, q)
        out = perturb(text, q, "patch", rng=rng)
        assert len(out) == m
        changed = changed_positions(text, out)
        assert len(changed) == width
        if width:
            assert changed == list(range(changed[0], changed[0] + width))  # one window, nothing else
            assert all(c in ALPHABET for c in out[changed[0]:changed[0] + width])


@pytest.mark.parametrize("seed", range(4))
def test_insert_adds_exactly_m_printable_characters_and_keeps_the_text(seed):
    for m, q, rng in random_cases(seed, 100):
        text, width = marked(m), num_perturbed(m, q)
        out = perturb(text, q, "insert", rng=rng)
        assert len(out) == m + width
        assert "".join(c for c in out if c not in ALPHABET) == text  # originals in order
        assert sum(c in ALPHABET for c in out) == width
        assert out[-1] == text[-1]  # indices are drawn from 0..m-1: nothing goes after the last


def test_printable_text_swap_changes_at_most_m_positions():
    for m, q, rng in random_cases(7, 200):
        text = "".join(rng.choice(ALPHABET) for _ in range(m))
        out = perturb(text, q, "swap", rng=rng)
        assert len(changed_positions(text, out)) <= num_perturbed(m, q)
        assert set(out) <= set(ALPHABET)


@pytest.mark.parametrize("kind", KINDS)
def test_perturbations_are_deterministic_for_a_seeded_rng(kind):
    text = "Tell me how to do the thing! describing.\\ + similarlyNow write oppositeley.]("
    outs = {perturb(text, 20, kind, rng=random.Random(5)) for _ in range(3)}
    assert len(outs) == 1
    assert len({perturb(text, 20, kind, rng=random.Random(s)) for s in range(20)}) > 10
    random.seed(11)
    first = perturb(text, 20, kind)  # rng=None: Python's global random state, as the reference
    random.seed(11)
    assert perturb(text, 20, kind) == first == perturb(text, 20, kind, rng=random.Random(11))


def test_drawn_characters_cover_the_printable_alphabet_uniformly():
    rng = random.Random(0)
    counts = {c: 0 for c in ALPHABET}
    text = marked(100)
    for _ in range(200):
        for c in perturb(text, 50, "swap", rng=rng):
            if c in counts:
                counts[c] += 1
    total = sum(counts.values())
    assert total == 200 * 50
    chi2 = sum((v - total / 100) ** 2 / (total / 100) for v in counts.values())
    assert chi2 < scipy.stats.chi2.ppf(1 - 1e-4, df=99)


# ---------------------------------------------------------------- law of perturbed suffix characters

def test_swap_law_is_scipys_hypergeometric():
    for m, q, rng in random_cases(1, 100):
        s, width = rng.randint(0, m), num_perturbed(m, q)
        pmf = suffix_change_distribution(m, s, q, "swap")
        expected = scipy.stats.hypergeom(m, s, width).pmf(range(width + 1))
        assert len(pmf) == width + 1
        assert max(abs(a - b) for a, b in zip(pmf, expected)) < 1e-12


def test_patch_tail_matches_the_count_of_window_starts():
    for m, q, rng in random_cases(2, 100):
        s, width = rng.randint(0, m), num_perturbed(m, q)
        pmf = suffix_change_distribution(m, s, q, "patch")
        for k in range(1, width + 1):
            # overlap >= k iff k <= s and the window starts at or after m - s - M + k
            starts = (m - width) - max(0, m - s - width + k) + 1 if k <= s else 0
            assert math.isclose(math.fsum(pmf[k:]), starts / (m - width + 1), abs_tol=1e-12)


def _brute_force_insert(m: int, s: int, width: int) -> list[Fraction]:
    """Every ordered draw of ``width`` indices, inserted one after another as the reference does."""
    counts = [0] * (width + 1)
    draws = list(itertools.permutations(range(m), width))
    for draw in draws:
        out: list[int | None] = list(range(m))
        for i in draw:
            out.insert(i, None)
        inside = out[out.index(m - s) + 1:] if s else []  # after the suffix's first character
        counts[sum(c is None for c in inside)] += 1
    return [Fraction(c, len(draws)) for c in counts]


@pytest.mark.parametrize("m", range(1, 8))
def test_insert_law_matches_brute_force_enumeration(m):
    for s in range(m + 1):
        for q in range(0, 101, 9):
            exact = _brute_force_insert(m, s, num_perturbed(m, q))
            got = suffix_change_distribution(m, s, q, "insert")
            assert max(abs(a - float(b)) for a, b in zip(got, exact)) < 1e-12


@pytest.mark.parametrize("kind", KINDS)
def test_laws_match_monte_carlo_of_perturb(kind):
    rng, trials = random.Random(3), 3000
    for m, s, q in [(40, 15, 20), (25, 25, 30), (33, 5, 50), (10, 3, 100)]:
        text = marked(m)
        pmf = suffix_change_distribution(m, s, q, kind)
        assert math.isclose(sum(pmf), 1.0, abs_tol=1e-12)
        hits = [0] * len(pmf)
        for _ in range(trials):
            hits[perturbed_suffix_chars(text, perturb(text, q, kind, rng=rng), kind, s)] += 1
        for j, p in enumerate(pmf):
            se = math.sqrt(p * (1 - p) / trials)
            assert abs(hits[j] / trials - p) <= 5 * se + 1e-3, (kind, m, s, q, j)


# ---------------------------------------------------------------- the guarantee

def _paper_formula(n: int, q: float, m: int, s: int, k: int) -> Fraction:
    """Random swap: alpha = sum_{i >= k} C(m_S, i) C(m - m_S, M - i) / C(m, M); P(Bin(N, alpha) >= ceil(N/2))."""
    width = int(m * q / 100)
    alpha = sum((Fraction(math.comb(s, i) * math.comb(m - s, width - i), math.comb(m, width))
                 for i in range(k, width + 1)), Fraction(0))
    return sum((math.comb(n, t) * alpha ** t * (1 - alpha) ** (n - t) for t in range((n + 1) // 2, n + 1)),
               Fraction(0))


def test_swap_guarantee_matches_the_paper_formula_exactly():
    rng = random.Random(4)
    for _ in range(150):
        m = rng.randint(1, 80)
        s, n, q = rng.randint(0, m), rng.randint(1, 12), rng.choice([5, 10, 20, 33.3, 50, 100])
        k = rng.randint(0, max(1, s))
        got = defense_success_probability(n, q, m, s, k)
        assert math.isclose(got, float(_paper_formula(n, q, m, s, k)), rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_guarantee_matches_monte_carlo_of_perturb(kind):
    rng, trials = random.Random(5), 1500
    for n, m, s, q, k in [(5, 40, 15, 10, 2), (4, 30, 10, 20, 2), (3, 24, 24, 10, 3), (1, 50, 10, 30, 3)]:
        text = marked(m)
        safe = 0
        for _ in range(trials):
            broken = sum(perturbed_suffix_chars(text, perturb(text, q, kind, rng=rng), kind, s) >= k
                         for _ in range(n))
            safe += broken >= n - n // 2  # the jailbroken copies are not a strict majority
        p = defense_success_probability(n, q, m, s, k, kind)
        assert abs(safe / trials - p) <= 5 * math.sqrt(p * (1 - p) / trials) + 2e-3, (kind, n, m, s, q, k, p)


@pytest.mark.parametrize("kind", KINDS)
def test_guarantee_edge_cases(kind):
    for n in (1, 2, 5):
        assert defense_success_probability(n, 0, 50, 20, 1, kind) == 0.0  # nothing perturbed
        assert defense_success_probability(n, 37, 50, 20, 0, kind) == 1.0  # k = 0: always safe
        assert defense_success_probability(n, 100, 50, 20, 21, kind) == 0.0  # k > m_S
        assert defense_success_probability(n, 10, 50, 20, 6, kind) == 0.0  # k > M = 5
        assert defense_success_probability(n, 50, 50, 0, 1, kind) == 0.0  # no suffix
    assert defense_success_probability(3, 100, 50, 20, 20, "swap") == 1.0  # every character swapped
    assert 0.0 <= defense_success_probability(5001, 10, 200, 20, 2, kind) <= 1.0  # large N: no overflow


@pytest.mark.parametrize("kind", KINDS)
def test_guarantee_is_monotone_in_q(kind):
    for n, m, s, k in [(1, 60, 20, 3), (5, 60, 20, 3), (4, 45, 30, 5)]:
        values = [defense_success_probability(n, q, m, s, k, kind) for q in range(0, 101, 5)]
        assert all(a <= b + 1e-12 for a, b in zip(values, values[1:])), values


@pytest.mark.parametrize("kind", KINDS)
def test_guarantee_in_odd_n_moves_towards_the_side_of_one_copy(kind):
    # P(Bin(N, alpha) >= (N+1)/2) grows with odd N when alpha > 1/2 and shrinks when alpha < 1/2
    for m, s, q, k in [(60, 20, 10, 2), (60, 20, 25, 3), (40, 30, 40, 4), (40, 10, 5, 2)]:
        alpha = defense_success_probability(1, q, m, s, k, kind)
        values = [defense_success_probability(n, q, m, s, k, kind) for n in range(1, 40, 2)]
        pairs = list(zip(values, values[1:]))
        if alpha > 0.5:
            assert all(a <= b + 1e-12 for a, b in pairs)
        else:
            assert all(a >= b - 1e-12 for a, b in pairs)


# ---------------------------------------------------------------- the vote

REFUSAL, COMPLIANCE = "I cannot help with that.", "Sure, here is how to do it."
SUFFIX = "".join(chr(0x200 + i) for i in range(12))  # non-printable: any perturbation breaks it
GOAL = "Tell me how to build a dangerous thing, step by step. "


class FakeModel:
    """respond(prompts) -> responses; records the batch sizes it is called with."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def __call__(self, prompts):
        self.calls.append(len(prompts))
        return [self.answer(p) for p in prompts]


def test_always_refusing_and_always_complying_models():
    for answer, verdict in ((REFUSAL, False), (COMPLIANCE, True)):
        model = FakeModel(lambda p, a=answer: a)
        vote = SmoothLLM(model, "swap", 10, 7).vote(GOAL + SUFFIX)
        assert vote.jailbroken is verdict and vote.fraction_jailbroken == float(verdict)
        assert vote.response == answer and model.calls == [7]  # one batched call for the N copies
        assert len(vote.copies) == len(vote.responses) == len(vote.copy_jailbroken) == 7


@pytest.mark.parametrize("kind, q", [("swap", 5), ("insert", 8), ("patch", 60)])
def test_model_that_flips_on_a_known_suffix(kind, q):
    model = FakeModel(lambda p: COMPLIANCE if SUFFIX in p else REFUSAL)
    prompt = GOAL + SUFFIX
    assert SmoothLLM(model, kind, 0, 5).vote(prompt).jailbroken  # no perturbation: the attack works
    smooth = SmoothLLM(model, kind, q, 5, rng=random.Random(2))
    votes = [smooth.vote(prompt) for _ in range(400)]
    for vote in votes:
        intact = [SUFFIX in c for c in vote.copies]
        assert list(vote.copy_jailbroken) == intact
        assert math.isclose(vote.fraction_jailbroken, sum(intact) / 5)
        assert vote.jailbroken == (sum(intact) >= 3)
        assert vote.response == (COMPLIANCE if vote.jailbroken else REFUSAL)
    # this suffix is exactly 1-unstable (any perturbed character breaks it), so the guarantee
    # for k = 1 is the smoothed model's exact probability of refusing
    p = defense_success_probability(5, q, len(prompt), len(SUFFIX), 1, kind)
    refused = sum(not v.jailbroken for v in votes) / len(votes)
    assert 0.2 < p < 0.95 and abs(refused - p) <= 5 * math.sqrt(p * (1 - p) / len(votes))


def test_a_tie_counts_as_a_refusal_and_the_response_is_drawn_from_the_majority():
    answers = iter(itertools.cycle([COMPLIANCE, REFUSAL]))
    vote = SmoothLLM(FakeModel(lambda p: next(answers)), "patch", 10, 2).vote("hello there")
    assert vote.fraction_jailbroken == 0.5 and not vote.jailbroken and vote.response == REFUSAL
    # distinct responses: the answer is drawn uniformly from the majority's, never from the minority's
    smooth = SmoothLLM(lambda ps: [f"Sure #{i}" if i < 5 else f"I cannot #{i}" for i in range(len(ps))],
                       "swap", 10, 7, rng=random.Random(0))
    picks = [smooth.vote("hello there, friend").response for _ in range(500)]
    counts = [picks.count(f"Sure #{i}") for i in range(5)]
    assert sum(counts) == 500  # always one of the five jailbroken copies' responses
    assert scipy.stats.chisquare(counts).pvalue > 1e-4


def test_smoothllm_is_seeded_and_deterministic():
    model = FakeModel(lambda p: COMPLIANCE if SUFFIX[:3] in p else REFUSAL)
    runs = [[SmoothLLM(model, "insert", 15, 5).vote(GOAL + SUFFIX) for _ in range(5)] for _ in range(2)]
    assert runs[0] == runs[1]
    other = [SmoothLLM(model, "insert", 15, 5, rng=random.Random(9)).vote(GOAL + SUFFIX) for _ in range(5)]
    assert [v.copies for v in other] != [v.copies for v in runs[0]]
    prompts = [GOAL + SUFFIX, "What is the capital of France?"]
    sequential = SmoothLLM(model, "swap", 10, 3)
    assert SmoothLLM(model, "swap", 10, 3).respond(prompts) == [sequential(p) for p in prompts]


def test_is_jailbroken_reads_the_refusal_prefix():
    assert not is_jailbroken("I cannot help with that")
    assert not is_jailbroken("  \nI'm sorry, no.")
    assert is_jailbroken("Sure, here is. I cannot stop.")  # a refusal later on does not count
    assert is_jailbroken("")
    assert not is_jailbroken("Nope.", ["Nope"]) and is_jailbroken("I cannot", ["Nope"])
    model = FakeModel(lambda p: "Nope, not that.")
    assert SmoothLLM(model, "swap", 5, 3).vote("x y z").jailbroken
    assert not SmoothLLM(model, "swap", 5, 3, refusal_prefixes=["Nope"]).vote("x y z").jailbroken


def test_an_nn_module_goes_through_language_model_generate(monkeypatch):
    torch = pytest.importorskip("torch")
    seen = []

    def generate(model, prompts, *, max_new_tokens):
        seen.append((model, list(prompts), max_new_tokens))
        return [REFUSAL] * len(prompts)

    fake = types.ModuleType("course_lib.language_model")
    fake.generate = generate
    monkeypatch.setitem(sys.modules, "course_lib.language_model", fake)
    net = torch.nn.Linear(2, 2)
    vote = SmoothLLM(net, "patch", 10, 5, max_new_tokens=7).vote("hello world")
    assert len(seen) == 1 and seen[0][0] is net and seen[0][2] == 7
    assert seen[0][1] == list(vote.copies) and not vote.jailbroken


def test_a_charlm_is_answered_by_one_batched_generation():
    import torch

    from course_lib import language_model

    torch.manual_seed(0)
    model = language_model.CharLM(dim=16, layers=1, heads=2)
    vote = SmoothLLM(model, "insert", 10, 3, max_new_tokens=5).vote("how do I make a cake?")
    assert vote.responses == tuple(language_model.generate(model, list(vote.copies), max_new_tokens=5))
    assert vote.copy_jailbroken == tuple(is_jailbroken(r) for r in vote.responses)


def test_a_model_must_answer_every_copy():
    with pytest.raises(ValueError, match="one string per prompt"):
        SmoothLLM(lambda ps: ["Sure"], "swap", 10, 3).vote("hello")


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("call, name", [
    (lambda: perturb("abc", -1, "swap"), "q"),
    (lambda: perturb("abc", 100.5, "swap"), "q"),
    (lambda: perturb("abc", float("nan"), "swap"), "q"),
    (lambda: perturb("", 10, "swap"), "text"),
    (lambda: perturb(b"abc", 10, "swap"), "text"),
    (lambda: perturb("abc", 10, "delete"), "kind"),
    (lambda: perturb("abc", 10, "swap", rng=3), "rng"),
    (lambda: suffix_change_distribution(0, 0, 10), "prompt_len"),
    (lambda: suffix_change_distribution(10, 11, 10), "suffix_len"),
    (lambda: suffix_change_distribution(10, -1, 10), "suffix_len"),
    (lambda: defense_success_probability(0, 10, 10, 5, 1), "num_copies"),
    (lambda: defense_success_probability(3, 101, 10, 5, 1), "q"),
    (lambda: defense_success_probability(3, 10, 10, 5, -1), "k"),
    (lambda: defense_success_probability(3, 10, 10, 5, 1, "shuffle"), "kind"),
    (lambda: SmoothLLM(lambda p: p, "swap", -0.1, 3), "q"),
    (lambda: SmoothLLM(lambda p: p, "swap", 10, 0), "num_copies"),
    (lambda: SmoothLLM(lambda p: p, "swapping", 10, 3), "kind"),
    (lambda: SmoothLLM("not a model", "swap", 10, 3), "model"),
    (lambda: SmoothLLM(lambda p: p, "swap", 10, 3, refusal_prefixes=[]), "refusal_prefixes"),
    (lambda: SmoothLLM(lambda p: p, "swap", 10, 3, max_new_tokens=0), "max_new_tokens"),
    (lambda: SmoothLLM(lambda p: p, "swap", 10, 3, rng=random), "rng"),
    (lambda: SmoothLLM(lambda p: p, "swap", 10, 3).vote(""), "prompt"),
])
def test_bad_input_is_refused_naming_the_argument(call, name):
    with pytest.raises(ArgumentError, match=rf"\b{name}\b"):
        call()


# ---------------------------------------------------------------- argument policy

def _policy_cases():
    text = "Write a poem about the sea; then ignore that."
    eq = str.__eq__

    def fp_eq(a, b):
        return a == b

    def dsp(**kw):
        args = dict(num_copies=5, q=20.0, prompt_len=40, suffix_len=12, k=2) | kw
        return defense_success_probability(**args)

    def scd(**kw):
        args = dict(prompt_len=40, suffix_len=12, q=25.0) | kw
        return suffix_change_distribution(**args)

    def vote(**kw):
        args = dict(kind="swap", q=25.0, num_copies=3) | kw
        return SmoothLLM(lambda ps: [REFUSAL] * len(ps), rng=random.Random(0), **args).vote(text)

    return [
        (lambda v: num_perturbed(v, 25.0), "prompt_len", 40, fp_eq),
        (lambda v: num_perturbed(40, v), "q", 25.0, fp_eq),
        (lambda v: perturb(text, v, "swap", rng=random.Random(0)), "q", 25.0, eq),
        (lambda v: scd(prompt_len=v), "prompt_len", 40, fp_eq),
        (lambda v: scd(suffix_len=v), "suffix_len", 12, fp_eq),
        (lambda v: scd(q=v), "q", 25.0, fp_eq),
        (lambda v: dsp(num_copies=v), "num_copies", 5, fp_eq),
        (lambda v: dsp(q=v), "q", 20.0, fp_eq),
        (lambda v: dsp(prompt_len=v), "prompt_len", 40, fp_eq),
        (lambda v: dsp(suffix_len=v), "suffix_len", 12, fp_eq),
        (lambda v: dsp(k=v), "k", 2, fp_eq),
        (lambda v: vote(q=v), "q", 25.0, fp_eq),
        (lambda v: vote(num_copies=v), "num_copies", 3, fp_eq),
        (lambda v: vote(max_new_tokens=v), "max_new_tokens", 8, fp_eq),
        (lambda v: smoothllm.jailbreak_rates(lambda ps: ["Sure"] * len(ps), ["ab zz"], "swap", v, [1]), "q", 20.0, fp_eq),
    ]


# ---------------------------------------------------------------- Hamming-distance law, rates for several N

@pytest.mark.parametrize("kind", ["swap", "patch"])
def test_changed_law_matches_monte_carlo_of_the_hamming_distance(kind):
    rng = random.Random(11)
    text = "".join(rng.choice(ALPHABET) for _ in range(40))  # printable: a redraw can repeat a character
    m, s, q, trials = 40, 12, 30, 40000
    counts = [0] * (num_perturbed(m, q) + 1)
    for _ in range(trials):
        out = perturb(text, q, kind, rng=rng)
        counts[sum(a != b for a, b in zip(text[-s:], out[-s:]))] += 1
    law = suffix_change_distribution(m, s, q, kind, changed=True)
    assert math.isclose(sum(law), 1.0, abs_tol=1e-12)
    for j, c in enumerate(counts):
        sd = math.sqrt(trials * law[j] * (1 - law[j])) + 1
        assert abs(c - trials * law[j]) < 5 * sd, (j, c, trials * law[j])
    perturbed = suffix_change_distribution(m, s, q, kind)
    assert defense_success_probability(5, q, m, s, 3, kind, changed=True) <= defense_success_probability(5, q, m, s, 3, kind)
    assert perturbed != law  # thinning moves mass towards fewer changed characters


def test_changed_law_is_the_binomial_thinning_of_the_perturbed_one():
    perturbed = suffix_change_distribution(50, 20, 20, "swap")
    thinned = [sum(p * scipy.stats.binom.pmf(i, j, 0.99) for j, p in enumerate(perturbed)) for i in range(len(perturbed))]
    assert all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)
               for a, b in zip(suffix_change_distribution(50, 20, 20, "swap", changed=True), thinned))
    assert suffix_change_distribution(50, 20, 20, "insert", changed=True) == suffix_change_distribution(50, 20, 20, "insert")


def test_jailbreak_rates_votes_each_n_on_its_first_copies():
    seen = []

    def model(prompts):  # jailbroken when the copy still holds the marker "zz"
        seen.extend(prompts)
        return ["Sure" if "zz" in p else "I cannot." for p in prompts]

    prompts = [f"request {i:02d} zz" for i in range(40)]
    rates = smoothllm.jailbreak_rates(model, prompts, "swap", 20, [1, 3, 4, 7], rng=random.Random(5))
    assert len(seen) == 40 * 7
    rows = [["zz" in c for c in seen[i * 7:(i + 1) * 7]] for i in range(40)]
    assert rates["copy"] == sum(map(sum, rows)) / 280
    for n in (1, 3, 4, 7):
        assert rates[n] == sum(sum(r[:n]) * 2 > n for r in rows) / 40
    assert smoothllm.jailbreak_rates(lambda ps: ["I cannot."] * len(ps), prompts, "patch", 10, [1, 5]) == \
        {"copy": 0.0, 1: 0.0, 5: 0.0}
    assert smoothllm.jailbreak_rates(lambda ps: ["Sure"] * len(ps), prompts, "insert", 10, [2, 5]) == \
        {"copy": 1.0, 2: 1.0, 5: 1.0}
    with pytest.raises(ArgumentError, match="num_copies"):
        smoothllm.jailbreak_rates(model, prompts, "swap", 10, [0])
    with pytest.raises(ArgumentError, match="prompts"):
        smoothllm.jailbreak_rates(model, [], "swap", 10, [1])


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    assert doctest.testmod(smoothllm).failed == 0
