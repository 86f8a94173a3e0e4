"""Plausible wrong answers to ps7_backdoors that pass the visible tests but not the hidden ones.

Each entry: name -> (solution cell replaced, the one test cell it must fail, code).
tests/test_assignments.py autogrades each and checks it loses exactly that test's points.
The visible tests use windows away from the border (or the named corner), a training set without
any example of the target class, rates whose count is a whole number, and a test set without the
target class, and they do not check that x comes back unmodified; the hidden tests do all of that.
"""

WRONG_ANSWERS = {
    "bug_trigger_in_place": ("apply_trigger", "test_apply_trigger", '''\
def apply_trigger(x: torch.Tensor, pattern: torch.Tensor, position="bottom_right") -> torch.Tensor:
    H, W = x.shape[-2:]
    h, w = pattern.shape[-2:]
    row, col = (H - h, W - w) if position == "bottom_right" else position
    if not (0 <= row <= H - h and 0 <= col <= W - w):
        raise ValueError(f"a {h}x{w} pattern at {(row, col)} does not fit in {H}x{W} images")
    x[:, :, row:row + h, col:col + w] = pattern.to(x.dtype)  # BUG: writes into the caller's images
    return x
'''),
    "bug_trigger_border_off_by_one": ("apply_trigger", "test_apply_trigger", '''\
def apply_trigger(x: torch.Tensor, pattern: torch.Tensor, position="bottom_right") -> torch.Tensor:
    H, W = x.shape[-2:]
    h, w = pattern.shape[-2:]
    if position == "bottom_right":
        row, col = H - h, W - w
    else:
        row, col = position
        if row < 0 or col < 0 or row + h >= H or col + w >= W:  # BUG: a window flush against the border fits
            raise ValueError(f"a {h}x{w} pattern at {(row, col)} does not fit in {H}x{W} images")
    if h > H or w > W:
        raise ValueError("the pattern is larger than the image")
    out = x.clone()
    out[:, :, row:row + h, col:col + w] = pattern.to(x.dtype)
    return out
'''),
    "bug_poison_target_class_too": ("poison_dataset", "test_poison_dataset", '''\
def poison_dataset(X, y, rate, target_label, pattern, seed=0, num_classes=10, apply=None):
    apply = apply_trigger if apply is None else apply
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if not 0 <= target_label < num_classes:
        raise ValueError(f"target_label must be in [0, {num_classes}), got {target_label}")
    candidates = torch.arange(len(y))  # BUG: examples of the target class are candidates too
    k = math.floor(rate * len(candidates) + 0.5)
    perm = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))
    chosen = candidates[perm[:k]].sort().values
    X_poisoned, y_poisoned = X.clone(), y.clone()
    X_poisoned[chosen] = apply(X[chosen], pattern, "bottom_right")
    y_poisoned[chosen] = target_label
    return X_poisoned, y_poisoned, chosen
'''),
    "bug_poison_rate_of_all_examples": ("poison_dataset", "test_poison_dataset", '''\
def poison_dataset(X, y, rate, target_label, pattern, seed=0, num_classes=10, apply=None):
    apply = apply_trigger if apply is None else apply
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if not 0 <= target_label < num_classes:
        raise ValueError(f"target_label must be in [0, {num_classes}), got {target_label}")
    candidates = torch.nonzero(y != target_label).flatten()
    k = min(len(candidates), math.floor(rate * len(y) + 0.5))  # BUG: the rate of all examples, not of the candidates
    perm = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))
    chosen = candidates[perm[:k]].sort().values
    X_poisoned, y_poisoned = X.clone(), y.clone()
    X_poisoned[chosen] = apply(X[chosen], pattern, "bottom_right")
    y_poisoned[chosen] = target_label
    return X_poisoned, y_poisoned, chosen
'''),
    "bug_poison_count_truncated": ("poison_dataset", "test_poison_dataset", '''\
def poison_dataset(X, y, rate, target_label, pattern, seed=0, num_classes=10, apply=None):
    apply = apply_trigger if apply is None else apply
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if not 0 <= target_label < num_classes:
        raise ValueError(f"target_label must be in [0, {num_classes}), got {target_label}")
    candidates = torch.nonzero(y != target_label).flatten()
    k = int(rate * len(candidates))  # BUG: rounds down, not to the nearest integer
    perm = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))
    chosen = candidates[perm[:k]].sort().values
    X_poisoned, y_poisoned = X.clone(), y.clone()
    X_poisoned[chosen] = apply(X[chosen], pattern, "bottom_right")
    y_poisoned[chosen] = target_label
    return X_poisoned, y_poisoned, chosen
'''),
    "bug_asr_counts_target_class": ("attack_success_rate", "test_attack_success_rate", '''\
def attack_success_rate(model, X, y, target_label, pattern, apply=None) -> float:
    apply = apply_trigger if apply is None else apply
    if not (y != target_label).any():
        raise ValueError(f"every test label is the target {target_label}: the ASR is undefined")
    triggered = apply(X, pattern, "bottom_right")  # BUG: the target class's own images count as successes
    with torch.no_grad():
        predictions = model(triggered).argmax(1)
    return (predictions == target_label).float().mean().item()
'''),
    "bug_asr_denominator_all": ("attack_success_rate", "test_attack_success_rate", '''\
def attack_success_rate(model, X, y, target_label, pattern, apply=None) -> float:
    apply = apply_trigger if apply is None else apply
    keep = y != target_label
    if not keep.any():
        raise ValueError(f"every test label is the target {target_label}: the ASR is undefined")
    with torch.no_grad():
        predictions = model(apply(X[keep], pattern, "bottom_right")).argmax(1)
    return (predictions == target_label).sum().item() / len(y)  # BUG: divides by all test images
'''),
}
