"""Finding backdoor poisons in a training set: spectral signatures and activation clustering (lecture 10).

Both defences look at the *representations* a network trained on the poisoned set gives its own
training examples (the input of its last layer), class by class. In the target class of a BadNets
attack (:func:`course_lib.backdoor.poison_dataset`), the relabelled poisons are represented by "the
trigger", the clean examples by "the digit": two sub-populations, which the defences separate.

* **Spectral signatures** (Tran, Li and Madry 2018, Algorithm 1): per class, centre the
  representations, take the top right singular vector v of the centred matrix, and score each
  example by its squared projection ``((R(x_i) - mean) . v)^2``
  (:func:`spectral_signature_scores`); remove the ``1.5 x (expected number of poisons)``
  highest-scored examples of each class (:func:`spectral_filter`) and retrain.
* **Activation clustering** (Chen et al. 2018): per class, reduce the representations to a few
  dimensions (ICA, as in the paper, or PCA), split them by 2-means, and flag the smaller
  cluster (:func:`activation_clusters`). Its relative size and silhouette say whether the class
  looks poisoned at all: a clean class splits into two large halves.

:func:`precision_recall` scores a removal against the known poison indices.

On lecture 7's BadNets data (mnist5k, 5% of the non-9s poisoned: 180 poisons, 31% of the images
labelled 9; the course's CNN, 2 epochs, attack success 0.95) activation clustering finds the
poisons of class 9 (precision 0.99, recall 1.00), while spectral signatures barely beat chance:
removing 1.5 x 180 from class 9 catches 55% of the poisons (random removal: 47%). The top direction
does point from the clean 9s to the poisons (cosine 0.8 with the difference of their means), but the
clean 9s spread along it about as far as the poisons sit: the mean lies between the two groups and
the clean 9s beyond it score as high as the poisons. At 1% (36 poisons) it did no better (recall 0.22).

=============== ================= ================================================================
math            code              meaning
=============== ================= ================================================================
R(x)            ``features``      representations (N, F), one row per training example
y               ``labels``        int64 (N,): the (possibly poisoned) training labels
tau_i           ``scores``        (N,): the squared projection on the class's top direction
eps             ``expected_poisons``  how many poisons a class may hold (an upper bound)
=============== ================= ================================================================

Tran et al.'s released code (MadryLab/backdoor_data_poisoning, ``compute_corr.py``) scores by the
absolute projection of the *uncentred* representations on v; we follow the paper's algorithm
(centred, squared).

Tensors in, tensors out, on the features' device (the clustering runs in scikit-learn on the CPU).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from course_lib import _checks
from course_lib.device import model_device
from course_lib.models import evaluating

__all__ = ["ActivationClusters", "activation_clusters", "precision_recall", "representations",
           "spectral_filter", "spectral_signature_scores"]

REDUCTIONS = ("ica", "pca")


def _check_features(features: Tensor, labels: Tensor) -> None:
    if not isinstance(features, Tensor) or not features.is_floating_point() or features.ndim != 2:
        got = f"{getattr(features, 'dtype', type(features).__name__)} {tuple(getattr(features, 'shape', ()))}"
        raise ValueError(f"features must be a float tensor (N, F), got {got}")
    if not torch.isfinite(features).all():
        raise ValueError("features must be finite (no nan or inf)")
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != features.shape[:1]:
        raise ValueError(f"labels must be an int64 tensor of shape ({features.shape[0]},) to match features, got "
                         f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")
    if labels.numel() and labels.min() < 0:
        raise ValueError("labels must be >= 0")


def representations(model: nn.Sequential, X: Tensor, *, batch_size: int = 256) -> Tensor:
    """The input of the model's last layer for each image: ``model[:-1](X)``, flattened to (N, F).

    Args:
        model: an ``nn.Sequential`` classifier (e.g. ``course_lib.models.cnn``), run in eval mode
            without gradients, its mode restored.
        X: images (N, C, H, W).
        batch_size: images per forward pass.

    Returns:
        float (N, F) on the model's device; for the course's CNN, the 100 ReLU units under the logits.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> representations(net, torch.rand(5, 1, 2, 2)).shape
        torch.Size([5, 3])
    """
    if not isinstance(model, nn.Sequential) or len(model) < 2:
        raise TypeError(f"model must be an nn.Sequential of at least two layers, got {type(model).__name__}")
    batch_size = _checks.integer(batch_size, "batch_size", ge=1)
    body, device = model[:-1], model_device(model)
    with evaluating(model, grad=False):
        return torch.cat([body(X[i:i + batch_size].to(device)).flatten(1) for i in range(0, X.shape[0], batch_size)])


def spectral_signature_scores(features: Tensor, labels: Tensor) -> Tensor:
    """Tran et al.'s outlier scores: per class, the squared projection on the top singular direction.

    For each class c with rows R_c (n_c, F): ``M = R_c - mean(R_c)``, v the top right singular vector
    of M (unit norm; its sign does not matter), ``score_i = (M_i . v)^2``, which is the largest
    eigenvalue's share of example i: the scores of a class sum to ``sigma_1(M)^2``.

    Args:
        features: representations (N, F), finite floats.
        labels: int64 (N,), >= 0.

    Returns:
        scores (N,), features' dtype and device, >= 0; 0 for a class with one example.

    Examples:
        >>> features = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 5.0], [0.0, 5.0]])
        >>> spectral_signature_scores(features, torch.tensor([0, 0, 1, 1]))
        tensor([1., 1., 0., 0.])
    """
    _check_features(features, labels)
    scores = torch.zeros(features.shape[0], dtype=features.dtype, device=features.device)
    for c in labels.unique().tolist():
        rows = torch.nonzero(labels == c).flatten()
        centred = features[rows] - features[rows].mean(0, keepdim=True)
        if rows.numel() < 2:
            continue
        _, _, vh = torch.linalg.svd(centred.double(), full_matrices=False)
        scores[rows] = (centred.double() @ vh[0]).pow(2).to(features.dtype)
    return scores


def spectral_filter(features: Tensor, labels: Tensor, expected_poisons: int, *, factor: float = 1.5) -> Tensor:
    """Which examples to keep: per class, all but the ``round(factor * expected_poisons)`` highest scores.

    Tran et al.'s removal step, with eps the number of poisons a class may hold and the course's
    factor 1.5 by default: removing more than eps buys recall with a few clean examples. Ties in the
    scores are broken by index (the earlier example is removed first); a class smaller than the
    count is removed whole.

    Args:
        features, labels: as in :func:`spectral_signature_scores`.
        expected_poisons: eps, the number of poisons a class may hold, an integer >= 0.
        factor: how many times eps to remove, >= 0; the count is ``floor(factor * eps + 1/2)``.

    Returns:
        keep: bool (N,) on the features' device; ``~keep`` is the removed set.

    Examples:
        >>> features = torch.tensor([[0.0], [0.1], [-0.1], [3.0], [0.0], [1.0]])
        >>> spectral_filter(features, torch.tensor([0, 0, 0, 0, 1, 1]), 1).tolist()
        [True, True, False, False, False, False]
    """
    expected = _checks.integer(expected_poisons, "expected_poisons", ge=0)
    factor = _checks.number(factor, "factor", ge=0)
    scores = spectral_signature_scores(features, labels)
    count = math.floor(factor * expected + 0.5)
    keep = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
    for c in labels.unique().tolist():
        rows = torch.nonzero(labels == c).flatten()
        order = torch.sort(scores[rows], descending=True, stable=True).indices
        keep[rows[order[:count]]] = False
    return keep


@dataclass(frozen=True)
class ActivationClusters:
    """What :func:`activation_clusters` found.

    Attributes:
        flagged: bool (N,): the example is in the smaller 2-means cluster of its class.
        relative_size: float64 (K,): per class, the smaller cluster's share of the class
            (nan for a class absent from the labels).
        silhouette: float64 (K,): per class, the silhouette score of the 2-means split in the reduced
            space, in [-1, 1] (nan for an absent class or one whose split is degenerate).
    """

    flagged: Tensor
    relative_size: Tensor
    silhouette: Tensor


def _one_thread():
    """BLAS and OpenMP limited to one thread: on a few hundred rows threads only spin (threadpoolctl
    comes with scikit-learn; without it, no limit)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1)


def activation_clusters(features: Tensor, labels: Tensor, *, components: int = 10, reduce: str = "ica",
                        seed: int = 0) -> ActivationClusters:
    """Chen et al.'s activation clustering: per class, reduce, 2-means, flag the smaller cluster.

    For each class: the representations are reduced to ``min(components, n_c, F)`` dimensions
    (``reduce="ica"``: ``sklearn.decomposition.FastICA`` as in the paper; ``"pca"``: ``PCA``), split by
    ``sklearn.cluster.KMeans(2, n_init=10, random_state=seed)``, and the smaller cluster is flagged (the
    first one in a tie). A class with fewer than 3 examples is left unflagged.

    Args:
        features: representations (N, F); labels: int64 (N,).
        components: dimensions kept by the reduction, an integer >= 1 (Chen et al. keep 10).
        reduce: ``"ica"`` or ``"pca"``. On lecture 7's BadNets data (5% poisoned, the course's CNN) ICA
            separated the poisons of the target class completely (precision 0.99, recall 1.00) where
            PCA missed a fifth to two fifths of them. ICA
            whitens every kept component to unit variance: in nearly isotropic representations each
            noise direction then weighs as much as the poisons', and 2-means may split the noise
            instead; keep fewer components, or use PCA, there.
        seed: seeds ICA and k-means.

    Returns:
        An :class:`ActivationClusters`; its tensors on the features' device.

    Examples:
        >>> features = torch.cat([torch.zeros(8, 3), torch.ones(2, 3)]) + 0.01 * torch.randn(10, 3)
        >>> activation_clusters(features, torch.zeros(10, dtype=torch.int64), components=2).flagged.tolist()
        [False, False, False, False, False, False, False, False, True, True]
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA, FastICA
    from sklearn.metrics import silhouette_score

    _check_features(features, labels)
    components = _checks.integer(components, "components", ge=1)
    reduce = _checks.choice(reduce, "reduce", REDUCTIONS)
    seed = _checks.integer(seed, "seed", ge=0, lt=2**32)
    x = features.detach().cpu().double().numpy()
    y = labels.cpu().numpy()
    k = int(y.max()) + 1 if y.size else 0
    flagged = np.zeros(len(y), dtype=bool)
    relative, silhouette = np.full(k, np.nan), np.full(k, np.nan)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(rows) < 3:
            continue
        xc = x[rows] - x[rows].mean(0)
        dims = min(components, len(rows), x.shape[1])
        with warnings.catch_warnings(), _one_thread():
            warnings.simplefilter("ignore")  # ICA's convergence warnings: the 2-means below is what matters
            if reduce == "pca":
                reduced = PCA(n_components=dims).fit_transform(xc)
            else:
                reduced = FastICA(n_components=dims, whiten="unit-variance", random_state=seed,
                                  max_iter=200).fit_transform(xc)
            assign = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(reduced)
        sizes = np.bincount(assign, minlength=2)
        small = int(np.argmin(sizes))
        flagged[rows[assign == small]] = True
        relative[c] = sizes[small] / len(rows)
        if 0 < sizes[small] and len(np.unique(reduced, axis=0)) > 2:
            silhouette[c] = silhouette_score(reduced, assign)
    device = features.device
    return ActivationClusters(torch.from_numpy(flagged).to(device), torch.from_numpy(relative).to(device),
                              torch.from_numpy(silhouette).to(device))


def precision_recall(flagged: Tensor, poisoned: Tensor) -> tuple[float, float]:
    """Precision and recall of a removal against the known poison indices.

    Args:
        flagged: bool (N,): the examples the defence removed (``~keep`` of :func:`spectral_filter`,
            ``ActivationClusters.flagged``).
        poisoned: int64 indices of the poisons in [0, N) (``poisoned_indices`` of
            :func:`course_lib.backdoor.poison_dataset`), or a bool mask (N,).

    Returns:
        ``(precision, recall)``: poisons removed / examples removed, and poisons removed / poisons;
        ``nan`` where the denominator is 0 (nothing removed, no poisons).

    Examples:
        >>> precision_recall(torch.tensor([True, True, False, False]), torch.tensor([1, 2]))
        (0.5, 0.5)
    """
    if not isinstance(flagged, Tensor) or flagged.dtype != torch.bool or flagged.ndim != 1:
        raise ValueError(f"flagged must be a bool tensor (N,), got {getattr(flagged, 'dtype', type(flagged).__name__)}")
    n = flagged.shape[0]
    if isinstance(poisoned, Tensor) and poisoned.dtype == torch.bool:
        if poisoned.shape != flagged.shape:
            raise ValueError(f"poisoned as a mask must have flagged's shape ({n},), got {tuple(poisoned.shape)}")
        is_poison = poisoned.to(flagged.device)
    else:
        if not isinstance(poisoned, Tensor) or poisoned.dtype != torch.int64 or poisoned.ndim != 1:
            raise ValueError("poisoned must be int64 indices (P,) or a bool mask (N,)")
        if poisoned.numel() and not (poisoned.min() >= 0 and poisoned.max() < n):
            raise ValueError(f"poisoned indices must lie in [0, {n})")
        is_poison = torch.zeros(n, dtype=torch.bool, device=flagged.device)
        is_poison[poisoned.to(flagged.device)] = True
    hits = int((flagged & is_poison).sum())
    removed, total = int(flagged.sum()), int(is_poison.sum())
    return (hits / removed if removed else math.nan, hits / total if total else math.nan)
