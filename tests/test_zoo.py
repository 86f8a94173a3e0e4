"""course_lib.zoo: the recipes train for real, the files round-trip, the shipped weights are what the docs say."""

import math
from dataclasses import replace

import pytest
import torch

from course_lib import attacks, data, models, zoo

pytestmark = pytest.mark.train

SHIPPED = [name for name, recipe in zoo.RECIPES.items() if recipe.shipped]


@pytest.fixture(scope="module")
def mnist5k():
    return data.load_dataset("mnist5k")


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_recipes_are_the_documented_ones():
    assert set(zoo.RECIPES) == set(zoo.DOCUMENTED_ACCURACY)
    for name, recipe in zoo.RECIPES.items():
        assert recipe.name == name and recipe.dataset == "mnist5k" and recipe.model == "cnn"
        assert (recipe.eps, recipe.epochs, recipe.batch_size, recipe.lr, recipe.seed) == (0.3, 20, 128, 1e-3, 0)
        assert recipe.ramp_epochs == (0 if recipe.method == "standard" else 2)
        assert recipe.shipped == (recipe.method != "standard")
    assert zoo.RECIPES["mnist5k_pgd"].pgd_steps == 7


def test_each_recipe_builds_the_attack_it_names(mnist5k):
    x, y = mnist5k.test.tensors[0][:8], mnist5k.test.tensors[1][:8]
    model = models.cnn(mnist5k.input_shape, mnist5k.num_classes)
    assert zoo.RECIPES["mnist5k_standard"].attack() is None
    assert zoo.RECIPES["mnist5k_fgsm"].attack() is attacks.fgsm
    got = zoo.RECIPES["mnist5k_fgsm_rs"].attack()(model, x, y, 0.3)
    want = attacks.pgd(model, x, y, 0.3, 1.25 * 0.3, 1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, want)
    got = zoo.RECIPES["mnist5k_pgd"].attack()(model, x, y, 0.3)
    want = attacks.pgd(model, x, y, 0.3, 2.5 * 0.3 / 7, 7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, want)
    loss = zoo.RECIPES["mnist5k_pgd"].batch_loss(batches_per_epoch=32)
    assert loss.ramp_batches == 64 and loss.eps == 0.3


def test_shortened_pgd_recipe_trains_for_real_and_reproduces_the_shipped_first_epoch():
    """One epoch of the PGD-AT recipe, from scratch: the ramp, the history, and the shipped record's epoch 1."""
    recipe = zoo.RECIPES["mnist5k_pgd"]
    init = _flat(recipe.new_model((1, 28, 28), 10))
    model, history = zoo.train_recipe(recipe, epochs=1)
    assert not model.training
    assert not torch.equal(_flat(model), init)
    assert history["eps_per_batch"] == pytest.approx([0.3 * t / 64 for t in range(32)])
    assert history["eps"] == pytest.approx([0.3 * 31 / 64])
    for key in ("loss", "accuracy", "natural", "fgsm", "pgd"):
        assert len(history[key]) == 1
    assert 0 <= history["pgd"][0] <= history["natural"][0] <= 1
    # the shipped weights were made by this code: its first epoch is the record's first epoch
    shipped = zoo.load_record("mnist5k_pgd")["history"]
    assert history["loss"][0] == pytest.approx(shipped["loss"][0], rel=1e-3)
    assert history["natural"][0] == pytest.approx(shipped["natural"][0], abs=0.01)


def test_training_is_deterministic():
    short = replace(zoo.RECIPES["mnist5k_fgsm_rs"], epochs=1)
    a, hist_a = zoo.train_recipe(short, monitor=False)
    b, hist_b = zoo.train_recipe(short, monitor=False)
    assert torch.equal(_flat(a), _flat(b))
    assert hist_a["loss"] == hist_b["loss"]


def test_make_weights_and_load_round_trip(tmp_path):
    # a recipe of our own on the 8x8 digits: the same code path as the shipped ones, in seconds
    short = replace(zoo.RECIPES["mnist5k_fgsm"], name="digits_fgsm", dataset="digits", eps=0.1, epochs=2)
    path = tmp_path / "short.pt"
    assert zoo.make_weights(short, path=path) == path
    record = zoo.load_record(short, path=path)
    assert record["recipe"]["epochs"] == 2 and record["input_shape"] == [1, 8, 8]
    assert all(t.dtype == torch.float16 for t in record["state_dict"].values())
    assert len(record["history"]["pgd"]) == 2 and "eps_per_batch" not in record["history"]
    model = zoo.load(short, path=path)
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
    # the record's accuracies are those of the model load() returns
    digits = data.load_dataset("digits")
    assert zoo.robust_accuracies(model, digits.test.tensors, short.eps) == record["test_accuracy"]
    assert record["test_accuracy"]["natural"] > 0.5
    # a file made by another recipe is refused, and load() retrains instead of using it
    with pytest.raises(ValueError, match="another recipe"):
        zoo.load_record(replace(short, lr=2e-3), path=path)
    # a missing file is trained and written
    other = replace(short, epochs=1, method="standard", ramp_epochs=0)
    missing = tmp_path / "missing.pt"
    with pytest.warns(UserWarning, match="retraining"):
        zoo.load(other, path=path)  # stale: made by `short`
    assert zoo.load_record(other, path=path)["recipe"]["method"] == "standard"
    zoo.load(other, path=missing)
    assert missing.exists()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_and_have_the_documented_accuracies(name, mnist5k):
    path = zoo.weights_path(name)
    assert path.exists(), f"{path} is missing: run python -m course_lib.zoo --retrain {name}"
    assert path.stat().st_size < 400_000
    record = zoo.load_record(name)
    model = zoo.load(name)
    accuracy = zoo.robust_accuracies(model, mnist5k.test.tensors, zoo.RECIPES[name].eps)
    for key, documented in zoo.DOCUMENTED_ACCURACY[name].items():
        assert accuracy[key] == pytest.approx(record["test_accuracy"][key], abs=0.005), (name, key)
        assert accuracy[key] == pytest.approx(documented, abs=0.01), (name, key)
    assert len(record["history"]["pgd"]) == zoo.RECIPES[name].epochs


def test_shipped_weights_total_under_a_megabyte():
    total = sum(zoo.weights_path(name).stat().st_size for name in SHIPPED)
    assert total < 1024 ** 2, total


def test_robust_accuracies_match_direct_computation(mnist5k):
    torch.manual_seed(0)
    model = models.mlp(mnist5k.input_shape, mnist5k.num_classes, hidden=(16,))
    x, y = mnist5k.test.tensors[0][::20], mnist5k.test.tensors[1][::20]
    got = zoo.robust_accuracies(model, (x, y), 0.1, pgd_steps=5, seed=3)
    with torch.no_grad():
        natural = (model(x).argmax(1) == y).float().mean().item()
        fgsm = (model(attacks.fgsm(model, x, y, 0.1)).argmax(1) == y).float().mean().item()
        x_pgd = attacks.pgd(model, x, y, 0.1, 2.5 * 0.1 / 5, 5, generator=torch.Generator().manual_seed(3))
        pgd = (model(x_pgd).argmax(1) == y).float().mean().item()
    assert math.isclose(got["natural"], natural, abs_tol=1e-6)
    assert math.isclose(got["fgsm"], fgsm, abs_tol=1e-6)
    assert math.isclose(got["pgd"], pgd, abs_tol=1e-6)


def test_monitor_subset_mixes_the_classes(mnist5k):
    x, y = zoo.monitor_subset(mnist5k.test)
    assert x.shape == (500, 1, 28, 28) and y.unique().numel() == 10
    x2, _ = zoo.monitor_subset(mnist5k.test)
    assert torch.equal(x, x2)


def test_bad_input():
    with pytest.raises(ValueError, match="name must be one of"):
        zoo.load("mnist5k_nope")
    with pytest.raises(ValueError, match="method"):
        zoo.Recipe("x", "trades")
    with pytest.raises(ValueError, match="epochs"):
        zoo.Recipe("x", "pgd", epochs=0)
    with pytest.raises(ValueError, match="ramp_epochs"):
        zoo.Recipe("x", "pgd", ramp_epochs=-1)
    with pytest.raises(ValueError, match="model"):
        zoo.Recipe("x", "pgd", model="resnet")


def test_load_leaves_the_callers_random_state_alone():
    """A lecture seeds, loads a shipped model, then draws: its draws must follow its own seed
    (load used to reseed torch, NumPy and random with the recipe's seed)."""
    import random

    import numpy as np

    draws = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        zoo.load("mnist5k_pgd")
        draws.append((torch.rand(1).item(), float(np.random.rand()), random.random()))
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        assert draws[-1] == (torch.rand(1).item(), float(np.random.rand()), random.random())
    assert draws[0] != draws[1]


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases():
    from torch import nn
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(3, (8,))
    split = TensorDataset(x, y)

    def acc(**kw):
        return zoo.robust_accuracies(model, (x, y), **(dict(eps=0.1, pgd_steps=3) | kw))

    def recipe(**kw):
        return zoo.Recipe("x", "pgd", **kw)

    # 16 tiny images under the recipe's data set's name: train_recipe's epochs checked in a blink
    from course_lib.data import DatasetSplits

    tiny = DatasetSplits("mnist5k", TensorDataset(torch.rand(16, 1, 4, 4), torch.arange(16) % 3), split,
                         ("a", "b", "c"))
    tiny_recipe = zoo.Recipe("tiny", "standard", model="mlp", batch_size=8, ramp_epochs=0, shipped=False)

    return [
        (lambda v: acc(eps=v), "eps", 0.1, None),
        (lambda v: acc(pgd_steps=v), "pgd_steps", 3, dict.__eq__),
        (lambda v: acc(pgd_alpha=v), "pgd_alpha", 0.05, None),
        (lambda v: acc(seed=v), "seed", 3, dict.__eq__),
        (lambda v: zoo.monitor_subset(split, v)[1], "size", 5, torch.equal),
        (lambda v: zoo.monitor_subset(split, 5, v)[1], "seed", 3, torch.equal),
        (lambda v: recipe(epochs=v), "epochs", 2, zoo.Recipe.__eq__),
        (lambda v: recipe(batch_size=v), "batch_size", 64, zoo.Recipe.__eq__),
        (lambda v: recipe(pgd_steps=v), "pgd_steps", 5, zoo.Recipe.__eq__),
        (lambda v: recipe(ramp_epochs=v), "ramp_epochs", 1, zoo.Recipe.__eq__),
        (lambda v: recipe(seed=v), "seed", 1, zoo.Recipe.__eq__),
        (lambda v: recipe(eps=v), "eps", 0.25, None),
        (lambda v: recipe(lr=v), "lr", 0.01, None),
        (lambda v: list(zoo.RECIPES["mnist5k_standard"].new_model((1, 8, 8), v).parameters())[-1].shape,
         "num_classes", 3, tuple.__eq__),
        (lambda v: zoo.train_recipe(tiny_recipe, epochs=v, monitor=False, data=tiny)[1]["loss"], "epochs", 1,
         list.__eq__),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_recipe_fields_are_stored_as_python_numbers():
    import numpy as np

    r = zoo.Recipe("x", "pgd", epochs=np.int64(3), eps=np.float64(0.25))
    assert type(r.epochs) is int and type(r.eps) is float and r == zoo.Recipe("x", "pgd", epochs=3, eps=0.25)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(zoo).failed == 0
