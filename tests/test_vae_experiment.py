"""The ablation helper: AUROC equals scikit-learn's, rows and table are
complete and seeded."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from helpers.vae import experiment


def test_auroc_matches_sklearn_with_ties_and_nan():
    rng = np.random.default_rng(0)
    a, b = (
        rng.integers(0, 5, 60).astype(float),
        rng.integers(1, 6, 40).astype(float),
    )
    want = roc_auc_score(np.r_[np.zeros(60), np.ones(40)], np.r_[a, b])
    # exact rank sums (rankdata's half-integers) vs sklearn's float64
    # trapezoid: ~1e-15 apart (rel 1e-6)
    assert experiment.auroc(a, b) == pytest.approx(want)
    # a NaN counts as the worst case for the model: the most anomalous normal
    # image, the least anomalous anomaly; it cannot help, and a model that
    # gives NaN on every anomaly scores 0
    a2 = a.copy()
    a2[0] = np.nan
    assert experiment.auroc(a2, b) == pytest.approx(
        experiment.auroc(np.r_[a[1:], np.inf], b)
    )
    assert experiment.auroc(a2, b) <= experiment.auroc(a, b)
    b2 = b.copy()
    b2[:5] = np.nan
    assert experiment.auroc(a, b2) == pytest.approx(
        experiment.auroc(a, np.r_[np.full(5, -np.inf), b[5:]])
    )
    assert experiment.auroc(a, b2) < experiment.auroc(a, b)
    assert experiment.auroc(a, np.full(40, np.nan)) == 0.0


def _bars(n, seed, vertical=True):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), np.float32)
    for k in range(n):
        c = rng.integers(8, 18)
        if vertical:
            x[k, 4:24, c : c + 3] = 1
        else:
            x[k, c : c + 3, 4:24] = 1
    return x[..., None]


def test_run_ablation_rows_table_and_models():
    models = []
    kw = dict(
        n_crops=256,
        epochs=1,
        batch_size=64,
        seeds=[0, 1],
        progress=False,
        tag="toy",
    )
    rows = experiment.run_ablation(
        _bars(10, 0),
        _bars(6, 1),
        _bars(6, 2, vertical=False),
        keep_models=models,
        scores=("full", "M", "SE"),
        **kw,
    )
    assert (
        len(models) == 2
        and len(rows) == 2 * 3 * 2
        and models[0].history["loss"]
    )
    assert {r["score"] for r in rows} == {"full", "M", "SE"} and {
        r["image"] for r in rows
    } == {"max", "mean"}
    assert all(0.0 <= r["auroc"] <= 1.0 for r in rows)
    again = experiment.run_ablation(
        _bars(10, 0),
        _bars(6, 1),
        _bars(6, 2, vertical=False),
        scores=("full", "M", "SE"),
        **kw,
    )
    # seeded: same numbers
    assert [r["auroc"] for r in rows] == [r["auroc"] for r in again]
    summary = experiment.summarise(rows)
    assert len(summary[("toy", "M", "max")]["values"]) == 2
    text = experiment.table(rows)
    assert "M only (new)" in text and len(text.splitlines()) == 1 + 3 * 2
    md = experiment.table(rows, markdown=True).splitlines()
    assert md[1] == "|---|---|---|---|---|---|" and len(md) == 2 + 3 * 2
    values = " ".join(
        f"{a:.3f}" for a in summary[("toy", "M", "max")]["values"]
    )
    assert any(
        line.startswith("| toy | M only (new) | max |")
        and line.endswith(f"| {values} |")
        for line in md
    )


def test_dequantised_arm_trains_with_fresh_noise_and_scores_bin_centres(
    monkeypatch,
):
    from helpers.vae import crops, workers
    from helpers.vae.model import TrainResult

    jobs_seen, scored = [], []

    def fake_train_many(jobs, **_kw):
        jobs_seen.extend(jobs)
        return [
            TrainResult(
                model=None,
                history={"loss": [0.0], "seconds": [], "median_sigma2": [1.0]},
            )
            for _ in jobs
        ]

    def fake_evaluate(_model, normal, anomaly, scores, hows):
        scored.append((normal, anomaly))
        return [{"score": "M", "image": "max", "auroc": 0.5}]

    monkeypatch.setattr(workers, "train_many", fake_train_many)
    monkeypatch.setattr(experiment, "evaluate", fake_evaluate)
    normal, anomaly = _bars(3, 1), _bars(3, 2, vertical=False)
    arms = [
        dict(
            train_images=_bars(4, 0),
            normal=normal,
            anomaly=anomaly,
            tag=t,
            **extra,
        )
        for t, extra in (("clean", {}), ("dequantised", {"dequantise": True}))
    ]
    experiment.run_ablations(
        arms, n_crops=16, epochs=1, batch_size=8, seeds=[0], progress=False
    )
    clean_job, deq_job = jobs_seen
    # the crops handed to training are clean in both arms: the dequantised job
    # redraws its noise per epoch
    assert np.array_equal(clean_job["crops"], deq_job["crops"])
    assert deq_job.get("dequantise") is True and "dequantise" not in clean_job
    assert np.array_equal(scored[0][0], normal) and np.array_equal(
        scored[1][0], crops.bin_centre(normal)
    )
    assert np.array_equal(scored[1][1], crops.bin_centre(anomaly))


def test_compare_is_a_paired_t_test_and_verdicts_follow_it():
    from scipy import stats

    def rows_of(tag, m, full):
        return [
            {"tag": tag, "seed": s, "score": sc, "image": "max", "auroc": v}
            for sc, vals in (("M", m), ("full", full))
            for s, v in zip((2, 0, 1), vals)
        ]

    rows = rows_of("clear", [0.80, 0.82, 0.81], [0.70, 0.71, 0.72]) + rows_of(
        "noisy", [0.9, 0.6, 0.8], [0.7, 0.8, 0.7]
    )
    c = experiment.compare(rows, "clear", "M", "full", "max")
    # paired by seed
    assert c["seeds"] == [0, 1, 2] and np.allclose(
        c["diffs"], [0.11, 0.09, 0.10]
    )
    t = stats.ttest_rel([0.82, 0.81, 0.80], [0.71, 0.72, 0.70])
    assert c["t_crit"] == pytest.approx(4.302652729911275)
    assert (
        c["clear"] == (t.pvalue < 0.05)
        and c["clear"]
        and c["verdict"] == "M better"
    )
    n = experiment.compare(rows, "noisy", "M", "full", "max")
    assert (
        n["verdict"] == "M better"
        and not n["clear"]
        and stats.ttest_rel([0.6, 0.8, 0.9], [0.8, 0.7, 0.7]).pvalue > 0.05
    )
    tie = experiment.compare(
        rows_of("tie", [0.7, 0.7, 0.704], [0.7, 0.7, 0.7]),
        "tie",
        "M",
        "full",
        "max",
    )
    assert tie["verdict"] == "tie"
    text = experiment.verdict_table(rows, ["clear", "noisy"], hows=("max",))
    assert (
        "M only better, clear" in text
        and "M only better, within seed noise" in text
        and len(text.splitlines()) == 4
    )
    one = experiment.compare(
        rows_of("one", [0.8], [0.7])[:1] + rows_of("one", [0.8], [0.7])[1:2],
        "one",
        "M",
        "full",
        "max",
    )
    assert (
        one["verdict"] == "M better"
        and not one["clear"]
        and np.isnan(one["sd"])
    )
    with pytest.raises(ValueError, match="no rows for setting 'absent'"):
        experiment.compare(rows, "absent", "M", "full", "max")


def test_load_pair_gives_part_twos_images_in_both_forms():
    from helpers.vae import experiment

    train, normal, anomaly = experiment.load_pair("MNIST 1 vs 9", n_test=5)
    raw = experiment.load_classes("mnist", 1, 9, n_test=5, unit=False)
    assert normal.shape == (5, 28, 28, 1) and raw[1].shape == (5, 28, 28)
    assert raw[0].dtype == np.uint8 and len(raw[0]) == len(train)
    np.testing.assert_array_equal(raw[2] / np.float32(255), anomaly[..., 0])
    with pytest.raises(ValueError, match="unknown pair"):
        experiment.load_pair("MNIST 3 vs 8")
    with pytest.raises(ValueError, match="unknown data set"):
        experiment.load_classes("cifar", 1, 2)


def test_pair_arms_are_part_twos_pairs_and_collect_their_models():
    kept = {}
    arms = experiment.pair_arms(n_test=4, keep_models=kept)
    assert [a["tag"] for a in arms] == list(experiment.PAIRS)
    assert list(kept) == list(experiment.PAIRS)
    for arm in arms:
        train, normal, anomaly = experiment.load_pair(arm["tag"], 4)
        np.testing.assert_array_equal(arm["train_images"], train)
        np.testing.assert_array_equal(arm["normal"], normal)
        np.testing.assert_array_equal(arm["anomaly"], anomaly)
        assert arm["keep_models"] is kept[arm["tag"]] == []
    assert all("keep_models" not in a for a in experiment.pair_arms(4))
