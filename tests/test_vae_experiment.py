"""The ablation helper: AUROC equals scikit-learn's, rows and table are complete and seeded."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from helpers.vae import experiment


def test_auroc_matches_sklearn_with_ties_and_nan():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 60).astype(float), rng.integers(1, 6, 40).astype(float)
    want = roc_auc_score(np.r_[np.zeros(60), np.ones(40)], np.r_[a, b])
    # exact rank sums (rankdata's half-integers) vs sklearn's float64 trapezoid: ~1e-15 apart (rel 1e-6)
    assert experiment.auroc(a, b) == pytest.approx(want)
    # a NaN counts as the worst case for the model: the most anomalous normal image, the least
    # anomalous anomaly; it cannot help, and a model that gives NaN on every anomaly scores 0
    a2 = a.copy()
    a2[0] = np.nan
    assert experiment.auroc(a2, b) == pytest.approx(experiment.auroc(np.r_[a[1:], np.inf], b))
    assert experiment.auroc(a2, b) <= experiment.auroc(a, b)
    b2 = b.copy()
    b2[:5] = np.nan
    assert experiment.auroc(a, b2) == pytest.approx(experiment.auroc(a, np.r_[np.full(5, -np.inf), b[5:]]))
    assert experiment.auroc(a, b2) < experiment.auroc(a, b)
    assert experiment.auroc(a, np.full(40, np.nan)) == 0.0


def _bars(n, seed, vertical=True):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), np.float32)
    for k in range(n):
        c = rng.integers(8, 18)
        if vertical:
            x[k, 4:24, c:c + 3] = 1
        else:
            x[k, c:c + 3, 4:24] = 1
    return x[..., None]


def test_run_ablation_rows_table_and_models():
    models = []
    kw = dict(n_crops=256, epochs=1, batch_size=64, seeds=[0, 1], progress=False, tag="toy")
    rows = experiment.run_ablation(_bars(10, 0), _bars(6, 1), _bars(6, 2, vertical=False),
                                   keep_models=models, scores=("full", "M", "SE"), **kw)
    assert len(models) == 2 and len(rows) == 2 * 3 * 2 and models[0].history["loss"]
    assert {r["score"] for r in rows} == {"full", "M", "SE"} and {r["image"] for r in rows} == {"max", "mean"}
    assert all(0.0 <= r["auroc"] <= 1.0 for r in rows)
    again = experiment.run_ablation(_bars(10, 0), _bars(6, 1), _bars(6, 2, vertical=False),
                                    scores=("full", "M", "SE"), **kw)
    assert [r["auroc"] for r in rows] == [r["auroc"] for r in again]  # seeded: same numbers
    summary = experiment.summarise(rows)
    assert len(summary[("toy", "M", "max")]["values"]) == 2
    text = experiment.table(rows)
    assert "M only (new)" in text and len(text.splitlines()) == 1 + 3 * 2
