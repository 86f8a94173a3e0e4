"""Backdoor defences (course_lib/backdoor_defences.py): spectral signatures, activation clustering, scoring.

The independent computations: the scores against the top eigenvector of each class's scatter
matrix (numpy), precision and recall against Python sets; planted outliers along a known
direction and a planted cluster on synthetic data; and lecture 7's BadNets poisoning of the
course's CNN, where the known poison indices say what the defences should find.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib import backdoor, models
from course_lib import backdoor_defences as bd
from course_lib.data import load_dataset
from course_lib.train import train


def _classes(seed: int, n: int = 90, dim: int = 6, k: int = 3):
    gen = torch.Generator().manual_seed(seed)
    scale = torch.rand(dim, generator=gen, dtype=torch.float64)
    features = torch.randn(n, dim, generator=gen, dtype=torch.float64) * scale
    return features + 3 * torch.randn(1, dim, generator=gen, dtype=torch.float64), torch.randint(k, (n,), generator=gen)


def _planted(seed: int, clean: int = 400, planted: int = 20, dim: int = 30, shift: float = 8.0):
    """Clean N(0, I) points plus a group shifted by ``shift`` along a known unit direction u."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(dim, generator=gen, dtype=torch.float64)
    u /= u.norm()
    x = torch.randn(clean + planted, dim, generator=gen, dtype=torch.float64)
    x[clean:] += shift * u
    perm = torch.randperm(clean + planted, generator=gen)
    return x[perm], torch.nonzero(perm >= clean).flatten()


# ---------------------------------------------------------------- spectral signatures

@pytest.mark.parametrize("seed", range(10))
def test_scores_match_the_top_eigenvector_of_each_class(seed):
    features, labels = _classes(seed)
    scores = bd.spectral_signature_scores(features, labels)
    x, y = features.numpy(), labels.numpy()
    for c in np.unique(y):
        centred = x[y == c] - x[y == c].mean(0)
        values, vectors = np.linalg.eigh(centred.T @ centred)  # ascending: the last is the top
        expected = (centred @ vectors[:, -1]) ** 2
        np.testing.assert_allclose(scores[labels == c].numpy(), expected, rtol=1e-9, atol=1e-9)
        assert scores[labels == c].sum().item() == pytest.approx(values[-1], rel=1e-9)  # sigma_1^2


def test_scores_keep_dtype_device_and_give_zero_to_a_lone_example():
    features = torch.tensor([[1.0, 2.0], [3.0, 1.0], [0.0, 0.0], [5.0, 5.0]])
    scores = bd.spectral_signature_scores(features, torch.tensor([0, 0, 0, 1]))
    assert scores.dtype == torch.float32 and scores[3] == 0 and (scores >= 0).all()


@pytest.mark.parametrize("seed", range(5))
def test_planted_outliers_along_a_direction_get_the_top_scores(seed):
    x, planted = _planted(seed)
    labels = torch.zeros(len(x), dtype=torch.int64)
    scores = bd.spectral_signature_scores(x, labels)
    assert set(scores.topk(len(planted)).indices.tolist()) == set(planted.tolist())
    keep = bd.spectral_filter(x, labels, len(planted))
    assert (~keep).sum() == 30 and not keep[planted].any()  # 1.5 x 20 removed, every planted one among them
    assert bd.precision_recall(~keep, planted) == (pytest.approx(20 / 30), 1.0)


def test_spectral_filter_removes_the_count_per_class_with_ties_by_index():
    features, labels = _classes(3, n=60)
    for expected in (0, 1, 3, 7, 100):
        keep = bd.spectral_filter(features, labels, expected)
        count = math.floor(1.5 * expected + 0.5)
        for c in labels.unique():
            in_class = labels == c
            assert (~keep[in_class]).sum() == min(count, int(in_class.sum()))
            scores = bd.spectral_signature_scores(features, labels)[in_class]
            if 0 < count < int(in_class.sum()):
                assert scores[~keep[in_class]].min() >= scores[keep[in_class]].max()
    tied = bd.spectral_filter(torch.tensor([[1.0], [-1.0], [1.0], [-1.0]]), torch.zeros(4, dtype=torch.int64), 1,
                              factor=2.0)
    assert tied.tolist() == [False, False, True, True]


# ---------------------------------------------------------------- activation clustering

@pytest.mark.parametrize("reduce, components, planted", [("pca", 10, 45), ("ica", 5, 100)])
@pytest.mark.parametrize("seed", range(3))
def test_activation_clustering_recovers_a_planted_cluster(seed, reduce, components, planted):
    # ICA whitens every kept component to unit variance, so in isotropic noise each noise direction weighs as
    # much as the cluster's: with 10 of them 2-means prefers a balanced split of the noise; fewer components do
    gen = torch.Generator().manual_seed(seed)
    dim = 40
    u = torch.randn(dim, generator=gen, dtype=torch.float64)
    clean = torch.randn(300, dim, generator=gen, dtype=torch.float64)
    cluster = 0.5 * torch.randn(planted, dim, generator=gen, dtype=torch.float64) + 10 * u / u.norm()
    other = torch.randn(200, dim, generator=gen, dtype=torch.float64) + 10  # a second class, one blob
    features = torch.cat([clean, cluster, other])
    n0 = 300 + planted
    labels = torch.cat([torch.zeros(n0, dtype=torch.int64), torch.ones(200, dtype=torch.int64)])
    result = bd.activation_clusters(features, labels, components=components, reduce=reduce, seed=seed)
    assert torch.equal(result.flagged[:n0], torch.arange(n0) >= 300)
    assert result.relative_size[0].item() == pytest.approx(planted / n0)
    assert result.silhouette[0] > result.silhouette[1]  # the poisoned class splits cleanly, the blob does not
    assert result.relative_size[1] > 0.25


def test_activation_clusters_shapes_and_small_classes():
    features, labels = _classes(0, n=30, k=2)
    labels[0] = 3  # a class of one: never flagged; class 2 absent: nan
    result = bd.activation_clusters(features, labels, components=3)
    assert result.flagged.shape == (30,) and result.flagged.dtype == torch.bool and not result.flagged[0]
    assert result.relative_size.shape == (4,)
    assert math.isnan(result.relative_size[2]) and math.isnan(result.relative_size[3])
    assert (result.relative_size[:2] <= 0.5).all()


# ---------------------------------------------------------------- precision and recall

@pytest.mark.parametrize("seed", range(10))
def test_precision_recall_match_set_counting(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 50
    flagged = torch.rand(n, generator=gen) < 0.3
    poisoned = torch.randperm(n, generator=gen)[: int(torch.randint(1, 20, (1,), generator=gen))]
    removed, bad = set(torch.nonzero(flagged).flatten().tolist()), set(poisoned.tolist())
    precision, recall = bd.precision_recall(flagged, poisoned)
    assert recall == pytest.approx(len(removed & bad) / len(bad))
    if removed:
        assert precision == pytest.approx(len(removed & bad) / len(removed))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[poisoned] = True
    assert bd.precision_recall(flagged, mask) == (precision, recall) or math.isnan(precision)


def test_precision_recall_undefined_cases_are_nan():
    p, r = bd.precision_recall(torch.zeros(4, dtype=torch.bool), torch.tensor([1]))
    assert math.isnan(p) and r == 0.0
    p, r = bd.precision_recall(torch.ones(4, dtype=torch.bool), torch.tensor([], dtype=torch.int64))
    assert p == 0.0 and math.isnan(r)


# ---------------------------------------------------------------- lecture 7's BadNets data

@pytest.fixture(scope="module")
def badnets():
    """mnist5k, 5% of the non-9s stamped with the 3x3 checkerboard and relabelled 9, the course's CNN, 2 epochs."""
    data = load_dataset("mnist5k")
    x, y = data.train.tensors
    xp, yp, poisoned = backdoor.poison_dataset(x, y, 0.05, 9, seed=0)
    torch.manual_seed(0)
    model = models.cnn(data.input_shape, 10)
    loader = DataLoader(TensorDataset(xp, yp), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    train(model, loader, epochs=2, progress=False)
    asr = backdoor.attack_success_rate(model, *data.test.tensors, 9)
    return backdoor.representations(model, xp), yp, poisoned, asr


def test_defences_find_lecture_7s_badnets_poisons(badnets):
    features, labels, poisoned, asr = badnets
    assert asr > 0.9 and len(poisoned) == 180  # the backdoor is in
    target = labels == 9
    clusters = backdoor.activation_clusters(features, labels)  # ICA to 10 dimensions, 2-means per class
    precision, recall = backdoor.precision_recall(clusters.flagged & target, poisoned)
    assert precision > 0.9 and recall > 0.9  # measured: 0.99 and 1.00
    assert clusters.relative_size[9].item() == pytest.approx(180 / int(target.sum()), abs=0.02)  # its poisons split off
    # spectral signatures on this small CNN: the poisons are 31% of the class, so the mean sits between the two
    # groups and clean 9s on the far side score high too; the poisons still score higher on average
    scores = backdoor.spectral_signature_scores(features, labels)
    is_poison = torch.zeros(len(labels), dtype=torch.bool)
    is_poison[poisoned] = True
    assert scores[is_poison].mean() > scores[target & ~is_poison].mean()
    keep = backdoor.spectral_filter(features, labels, len(poisoned))
    precision, recall = backdoor.precision_recall(~keep & target, poisoned)
    assert recall > 0.45  # measured 0.55: no better than a coin here (removing 270 of 580 at random: 0.47)


def test_representations_are_the_last_layers_input():
    torch.manual_seed(0)
    model = models.cnn((1, 8, 8), 10).train()
    x = torch.rand(7, 1, 8, 8)
    got = bd.representations(model, x, batch_size=3)
    model.eval()
    torch.testing.assert_close(got, model[:-1](x).detach())
    model.train()
    bd.representations(model, x)
    assert model.training
    with pytest.raises(TypeError, match="nn.Sequential"):
        bd.representations(nn.Linear(2, 2), x)


def test_backdoor_module_exports_them():
    for name in ("spectral_signature_scores", "spectral_filter", "activation_clusters", "precision_recall",
                 "representations"):
        assert getattr(backdoor, name) is getattr(bd, name)


def test_bad_inputs_name_the_argument():
    features, labels = _classes(0)
    with pytest.raises(ValueError, match="features"):
        bd.spectral_signature_scores(features[0], labels)
    with pytest.raises(ValueError, match="features must be finite"):
        bd.spectral_signature_scores(features * math.nan, labels)
    with pytest.raises(ValueError, match="labels"):
        bd.spectral_signature_scores(features, labels.float())
    with pytest.raises(ValueError, match="labels"):
        bd.spectral_signature_scores(features, labels[:-1])
    with pytest.raises(ValueError, match="expected_poisons"):
        bd.spectral_filter(features, labels, -1)
    with pytest.raises(ValueError, match="factor"):
        bd.spectral_filter(features, labels, 1, factor=-1.0)
    with pytest.raises(ValueError, match="components"):
        bd.activation_clusters(features, labels, components=0)
    with pytest.raises(ValueError, match="reduce"):
        bd.activation_clusters(features, labels, reduce="tsne")
    with pytest.raises(ValueError, match="flagged"):
        bd.precision_recall(torch.ones(3), torch.tensor([0]))
    with pytest.raises(ValueError, match="poisoned"):
        bd.precision_recall(torch.ones(3, dtype=torch.bool), torch.tensor([5]))


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases():
    features, labels = _classes(1, n=40)
    torch.manual_seed(0)
    model = models.cnn((1, 8, 8), 10)
    x = torch.rand(5, 1, 8, 8)

    def same_clusters(a, b):
        return torch.equal(a.flagged, b.flagged)

    return [
        (lambda v: bd.representations(model, x, batch_size=v), "batch_size", 2, torch.equal),
        (lambda v: bd.spectral_filter(features, labels, v), "expected_poisons", 3, torch.equal),
        (lambda v: bd.spectral_filter(features, labels, 3, factor=v), "factor", 1.5, torch.equal),
        (lambda v: bd.activation_clusters(features, labels, components=v, reduce="pca"), "components", 2,
         same_clusters),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    torch.manual_seed(0)
    assert doctest.testmod(bd).failed == 0
