"""helpers.vae.sweep: every class as the normal class, and the noise of the
paired differences."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from helpers.vae import experiment, sweep

TINY = dict(n_crops=256, epochs=1, batch_size=64, progress=False)


def test_a_sweep_run_is_part_twos_ablation_for_that_class():
    """The sweep's model for MNIST 1 (seed 0) is trained and scored as II.4's
    run_ablation would: the same AUROCs against 9."""
    n_test = 6
    rows = sweep.run_sweep(
        [("mnist", 1, 0), ("mnist", 7, 0)],
        n_test=n_test,
        scores=("full", "M"),
        **TINY,
    )
    assert len(rows) == 2 * 9 * 2 * 2
    assert {(r["normal"], r["anomaly"]) for r in rows if r["normal"] == 1} == {
        (1, a) for a in range(10) if a != 1
    }
    train, normal, anomaly = experiment.load_classes("mnist", 1, 9, n_test)
    ablation = experiment.run_ablation(
        train, normal, anomaly, seeds=[0], scores=("full", "M"), **TINY
    )
    got = {
        (r["score"], r["image"]): r["auroc"]
        for r in rows
        if r["normal"] == 1 and r["anomaly"] == 9
    }
    assert got == {(r["score"], r["image"]): r["auroc"] for r in ablation}
    g = sweep.grid(rows, "mnist", "M", "max")
    assert np.isnan(np.diag(g)).all() and np.isnan(g[0]).all()
    assert g[1, 9] == got[("M", "max")]
    d = sweep.difference_grid(rows, "mnist", "M", "full", "mean")
    assert d[7, 3] == pytest.approx(
        sweep.grid(rows, "mnist", "M", "mean")[7, 3]
        - sweep.grid(rows, "mnist", "full", "mean")[7, 3]
    )


def _rows(diffs: dict, base: float = 0.6) -> list[dict]:
    """Rows whose M - full difference per (normal, anomaly, seed) is given."""
    rows = []
    for (n, a, seed), d in diffs.items():
        for score, v in (("full", base), ("M", base + d)):
            rows.append(
                dict(
                    data="mnist",
                    normal=n,
                    anomaly=a,
                    seed=seed,
                    score=score,
                    image="max",
                    auroc=v,
                )
            )
    return rows


def test_seed_noise_pools_per_cell_variances_and_tally_reads_it():
    cells = {
        (1, 0): [0.10, 0.20, 0.30],  # var 0.01, 2 df
        (1, 2): [-0.05, 0.05],  # var 0.005, 1 df
        (3, 4): [0.5],  # one seed: not in the pool
    }
    diffs = {
        (n, a, s): d for (n, a), ds in cells.items() for s, d in enumerate(ds)
    }
    rows = _rows(diffs)
    noise = sweep.seed_noise(rows, "mnist", "M", "full", "max")
    pooled = (2 * 0.01 + 1 * 0.005) / 3
    assert noise.df == 3 and noise.cells == 2
    assert noise.sd == pytest.approx(np.sqrt(pooled))
    assert noise.t_crit == pytest.approx(stats.t.ppf(0.975, 3))
    diff = sweep.difference_grid(rows, "mnist", "M", "full", "max")
    assert diff[3, 4] == pytest.approx(0.5) and diff[1, 0] == pytest.approx(
        0.1
    )
    t = sweep.tally(diff, noise)
    # threshold = 3.18 * 0.0913 = 0.29: 0.5 stands out, 0.1 and -0.05 do not
    assert t == {
        "a better": 1,
        "within noise": 2,
        "b better": 0,
        "a ahead": 2,
        "cells": 3,
    }


def test_seed_noise_needs_two_seeds_somewhere():
    rows = _rows({(1, 0, 0): 0.1, (2, 0, 0): -0.1})
    with pytest.raises(ValueError, match="two seeds"):
        sweep.seed_noise(rows, "mnist", "M", "full", "max")
    with pytest.raises(ValueError, match="no rows"):
        sweep.grid(rows, "fashion-mnist", "M", "max")


@pytest.mark.parametrize(
    "runs, match",
    [
        ([], "no runs"),
        ([("mnist", 1)], "data set, normal class, seed"),
        ([("kmnist", 1, 0)], "unknown data set"),
        ([("mnist", 10, 0)], "0..9"),
        ([("mnist", 1, 0), ("mnist", 1, 0)], "twice"),
    ],
)
def test_bad_runs_are_refused(runs, match):
    with pytest.raises(ValueError, match=match):
        sweep.check_runs(runs)


def _noisy_rows() -> list[dict]:
    """Three seeds on two cells (the noise), one seed elsewhere."""
    diffs = {(1, 0, s): d for s, d in enumerate([0.10, 0.20, 0.30])}
    diffs.update({(1, 2, s): d for s, d in enumerate([-0.05, 0.05, 0.0])})
    diffs.update({(3, 4, 0): 0.5, (3, 5, 0): -0.6, (4, 0, 0): 0.01})
    return _rows(diffs)


def test_tally_table_is_the_tally_as_markdown():
    rows = _noisy_rows()
    noise = {
        ("mnist", "M", "full", "max"): sweep.seed_noise(
            rows, "mnist", "M", "full", "max"
        )
    }
    t = sweep.tally(
        sweep.difference_grid(rows, "mnist", "M", "full", "max"),
        noise[("mnist", "M", "full", "max")],
    )
    assert (t["a better"], t["b better"], t["cells"]) == (1, 1, 5)
    table = sweep.tally_table(rows, ["mnist"], "M", "full", ["max"], noise)
    header, rule, line = table.split("\n")
    assert "M only better" in header and "full loss better" in header
    assert rule.count("|") == header.count("|")
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells == [
        "mnist",
        "max",
        str(t["a better"]),
        str(t["within noise"]),
        str(t["b better"]),
        f"{t['a ahead']} of {t['cells']}",
    ]


def test_difference_figure_draws_one_grid_per_data_set_and_image_score():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.vae.plots import difference_figure

    rows = _noisy_rows()
    rows += [dict(r, image="mean") for r in rows]
    noise = {
        ("mnist", "M", "full", how): sweep.seed_noise(
            rows, "mnist", "M", "full", how
        )
        for how in ("max", "mean")
    }
    fig = difference_figure(
        rows, ["mnist"], "M", "full", ("max", "mean"), noise
    )
    grids = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in grids] == [
        "mnist, max over windows",
        "mnist, mean over windows",
    ]
    # the cells beyond the band are bold, the others grey
    texts = {t.get_text(): t for t in grids[0].texts}
    assert texts["+.50"].get_fontweight() == "bold"
    assert texts["+.01"].get_fontweight() != "bold"
    assert len(fig.axes) == 3  # two grids and the colour bar
    plt.close(fig)
