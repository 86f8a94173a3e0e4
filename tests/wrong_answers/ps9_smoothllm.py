"""Plausible wrong answers to ps9_smoothllm that pass the visible tests but not the hidden ones.

Each entry: name -> (solution cell replaced, the one test cell it must fail, code).
tests/grading/test_assignments.py autogrades each and checks it loses exactly that test's points.
The visible tests compare the perturbations with the reference on a few prompts whose M = m q / 100
is a whole number, one fresh generator per call; vote on odd numbers of copies whose compliant
answers are mostly alike; and check the guarantee on a few odd N of at most 25. The hidden tests do
the rest: hundreds of prompts and fractional q (where the rounding of M shows), nine copies drawn
from one generator (where a skipped draw shows), ties with even N, varied answers, and N up to 10,001.
"""

_CHECKS = '''\
    if not text:
        raise ValueError("text must be a non-empty string")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
'''

_VOTE_HEAD = '''\
def majority_vote(responses, is_refusal, rng):
    if len(responses) == 0:
        raise ValueError("responses must not be empty")
'''

_DSP_HEAD = '''\
def defense_success_probability(num_copies, q, prompt_len, suffix_len, k):
    if num_copies < 1:
        raise ValueError(f"num_copies must be >= 1, got {num_copies}")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    if prompt_len < 1:
        raise ValueError(f"prompt_len must be >= 1, got {prompt_len}")
    if not 0 <= suffix_len <= prompt_len:
        raise ValueError(f"suffix_len must be in [0, prompt_len], got {suffix_len}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    M = int(prompt_len * q / 100)
    hits = sum(math.comb(suffix_len, j) * math.comb(prompt_len - suffix_len, M - j)
               for j in range(k, min(M, suffix_len) + 1))
    alpha = hits / math.comb(prompt_len, M)
'''

WRONG_ANSWERS = {
    "bug_swap_rounds_m_up": ("random_swap", "test_random_swap", '''\
def random_swap(text, q, rng):
''' + _CHECKS + '''\
    m = len(text)
    chars = list(text)
    for i in rng.sample(range(m), math.ceil(m * q / 100)):  # BUG: "at least q percent": M rounded up
        chars[i] = rng.choice(ALPHABET)
    return "".join(chars)
'''),
    "bug_patch_skips_the_draw_when_nothing_changes": ("random_patch", "test_random_patch", '''\
def random_patch(text, q, rng):
''' + _CHECKS + '''\
    m = len(text)
    width = int(m * q / 100)
    if width == 0:
        return text  # BUG: the right string, but the start is not drawn: the next copy's draws shift
    start = rng.randint(0, m - width)
    chars = list(text)
    chars[start:start + width] = [rng.choice(ALPHABET) for _ in range(width)]
    return "".join(chars)
'''),
    "bug_insert_rounds_m": ("random_insert", "test_random_insert", '''\
def random_insert(text, q, rng):
''' + _CHECKS + '''\
    m = len(text)
    chars = list(text)
    for i in rng.sample(range(m), round(m * q / 100)):  # BUG: M rounded to the nearest, not down
        chars.insert(i, rng.choice(ALPHABET))
    return "".join(chars)
'''),
    "bug_vote_tie_is_a_jailbreak": ("majority_vote", "test_majority_vote", _VOTE_HEAD + '''\
    verdicts = [not is_refusal(r) for r in responses]
    jailbroken = sum(verdicts) / len(verdicts) >= 0.5  # BUG: half is enough: a tie counts as jailbroken
    majority = [r for r, v in zip(responses, verdicts) if v == jailbroken]
    return jailbroken, rng.choice(majority)
'''),
    "bug_vote_most_common_response": ("majority_vote", "test_majority_vote", _VOTE_HEAD + '''\
    from collections import Counter

    top = Counter(responses).most_common(1)[0][0]  # BUG: the most frequent string decides, not the count of verdicts
    jailbroken = not is_refusal(top)
    majority = [r for r in responses if (not is_refusal(r)) == jailbroken]
    return jailbroken, rng.choice(majority)
'''),
    "bug_dsp_tie_is_a_failure": ("defense_success_probability", "test_defense_success_probability",
                                 _DSP_HEAD + '''\
    # BUG: a strict majority of safe copies (N // 2 + 1), but a tie of an even N is a refusal, so a success
    return float(scipy.stats.binom.sf(num_copies // 2, num_copies, alpha))
'''),
    "bug_dsp_float_overflow": ("defense_success_probability", "test_defense_success_probability", _DSP_HEAD + '''\
    # BUG: exact for small N, but math.comb(N, t) no longer fits a float beyond N of about 1,030
    return float(sum(math.comb(num_copies, t) * alpha ** t * (1 - alpha) ** (num_copies - t)
                     for t in range(math.ceil(num_copies / 2), num_copies + 1)))
'''),
}
