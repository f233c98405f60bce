"""The PatchCore article's own code, kept for comparison - NOT the book's
implementation.

The PatchCore article this book rebuilds (a walk-through of Roth et al.,
"Towards Total Recall in Industrial Anomaly Detection", CVPR 2022) uses the
community implementation that copies ``kCenterGreedy`` from Google's
active-learning repository (https://github.com/google/active-learning,
``sampling_methods/kcenter_greedy.py``, Copyright 2017 Google Inc., Apache
License 2.0). The class below reproduces that code's logic line by line
(printing removed, the abstract base class inlined) so the book can run it,
time it and show its start-point behaviour. The helpers in this package
(:mod:`.sampler`, :mod:`.features`, :mod:`.scorer`) are the tested, faster
versions; the tests check that both select the same points.

Start-point bug: ``select_batch_`` picks a random first centre only when
``self.already_selected is None``, but ``__init__`` sets it to ``[]`` and the
article passes ``already_selected=[]``, so the first step computes
``np.argmax(self.min_distances)`` with ``min_distances = None``:
``np.argmax(None)`` is ``0``. The selection therefore always starts at patch 0
(the top-left patch of the first image).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors


class kCenterGreedy:  # noqa: N801 - the original name
    """Greedy k-center selection, as in google/active-learning (via the
    PatchCore article)."""

    def __init__(self, X, y, seed, metric="euclidean"):
        self.X = X
        self.y = y
        self.flat_X = self.flatten_X()
        self.name = "kcenter"
        self.features = self.flat_X
        self.metric = metric
        self.min_distances = None
        self.n_obs = self.X.shape[0]
        self.already_selected = []

    def flatten_X(self):
        shape = self.X.shape
        flat_X = self.X
        if len(shape) > 2:
            flat_X = np.reshape(self.X, (shape[0], np.prod(shape[1:])))
        return flat_X

    def update_distances(
        self, cluster_centers, only_new=True, reset_dist=False
    ):
        """Update min distances given cluster centers."""
        if reset_dist:
            self.min_distances = None
        if only_new:
            cluster_centers = [
                d for d in cluster_centers if d not in self.already_selected
            ]
        if cluster_centers:
            # Update min_distances for all examples given new cluster center.
            x = self.features[cluster_centers]
            dist = pairwise_distances(self.features, x, metric=self.metric)
            if self.min_distances is None:
                self.min_distances = np.min(dist, axis=1).reshape(-1, 1)
            else:
                self.min_distances = np.minimum(self.min_distances, dist)

    def select_batch(self, model, already_selected, N, **kwargs):
        return self.select_batch_(
            model=model, already_selected=already_selected, N=N, **kwargs
        )

    def select_batch_(self, model, already_selected, N, **kwargs):
        """Diversity promoting active learning method that greedily forms a
        batch to minimize the maximum distance to a cluster center among all
        unlabeled datapoints."""
        try:
            # Assumes that the transform function takes
            # in original data and not flattened data.
            self.features = model.transform(self.X)
            self.update_distances(
                already_selected, only_new=False, reset_dist=True
            )
        except Exception:
            self.update_distances(
                already_selected, only_new=True, reset_dist=False
            )

        new_batch = []
        for _ in range(N):
            if self.already_selected is None:
                # Initialize centers with a randomly selected datapoint
                ind = np.random.choice(np.arange(self.n_obs))
            else:
                ind = np.argmax(self.min_distances)
            # New examples should not be in already selected since those points
            # should have min_distance of zero to a cluster center.
            assert ind not in already_selected
            self.update_distances([ind], only_new=True, reset_dist=False)
            new_batch.append(ind)
        self.already_selected = already_selected
        return new_batch


def reshape_embedding(embedding):
    """The article's flattening of ``[b, C, H, W]`` into a list of
    ``C``-vectors (a Python triple loop)."""
    embedding_list = []
    for k in range(embedding.shape[0]):
        for i in range(embedding.shape[2]):
            for j in range(embedding.shape[3]):
                embedding_list.append(embedding[k, :, i, j])
    return embedding_list


def article_patch_scores(
    embedding_test: np.ndarray,
    embedding_coreset: np.ndarray,
    n_neighbors: int = 9,
):
    """The article's test step: fit a ball tree on the memory bank *for every
    test image*, then query."""
    nbrs = NearestNeighbors(
        n_neighbors=n_neighbors, algorithm="ball_tree", metric="minkowski", p=2
    )
    nbrs.fit(embedding_coreset)
    score_patches, _ = nbrs.kneighbors(embedding_test)
    return score_patches


def article_image_score(score_patches: np.ndarray) -> float:
    """The article's image score, as the community code it builds on computes
    eq. 7.

    ``score_patches`` are the article's ``[P, k]`` distances of each test patch
    to its ``k`` nearest bank patches (:func:`article_patch_scores`). The code
    takes the row of the test patch with the largest nearest distance, ``N_b``,
    and weights the max by ``1 - max(exp(N_b)) / sum(exp(N_b))``: the weight of
    that test patch's *farthest* of its ``k`` neighbours, not the paper's
    neighbourhood of ``m*``.
    """
    N_b = score_patches[np.argmax(score_patches[:, 0])]
    w = 1 - (np.max(np.exp(N_b)) / np.sum(np.exp(N_b)))
    return float(w * max(score_patches[:, 0]))
