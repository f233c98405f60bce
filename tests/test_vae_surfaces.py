"""The VAE on inspection images: the paper's architecture for larger windows,
frames, chunked scoring and maps at each image's own size."""

from types import SimpleNamespace

import numpy as np
import pytest

from helpers.vae import surfaces
from helpers.vae.model import build_vae, paper_depth
from helpers.vae.scoring import score_windows


@pytest.mark.parametrize("window, depth", [(8, 1), (16, 2), (32, 3), (64, 4)])
def test_paper_depth_halves_the_window_down_to_4(window, depth):
    assert paper_depth(window) == depth
    assert window // 2**depth == 4


@pytest.mark.parametrize("window", [4, 12, 96, 33])
def test_paper_depth_rejects_windows_that_do_not_halve_to_4(window):
    with pytest.raises(ValueError, match="window"):
        paper_depth(window)


@pytest.mark.parametrize("window", [16, 32])
def test_paper_network_maps_a_window_to_a_window(window):
    model = build_vae(
        seed=0,
        input_shape=(window, window, 1),
        architecture="paper",
        latent_dim=5,
        nc=4,
    )
    x = np.random.default_rng(0).random((3, window, window, 1), np.float32)
    mu, sigma2, z_mean, z_log_var = (np.asarray(o) for o in model(x))
    assert mu.shape == sigma2.shape == x.shape
    assert z_mean.shape == z_log_var.shape == (3, 5)
    assert (mu > 0).all() and (mu < 1).all()
    assert (sigma2 > 0).all() and (sigma2 < 1).all()  # the article's head
    # the encoder's convolutions double the channels from nc
    convs = [layer for layer in model.encoder.layers if "conv" in layer.name]
    assert [c.filters for c in convs] == [4 * 2**i for i in range(len(convs))]
    assert len(convs) == paper_depth(window)


def test_same_seed_same_paper_network_and_config_round_trip():
    a = build_vae(seed=1, input_shape=(16, 16, 1), architecture="paper")
    b = build_vae(seed=1, input_shape=(16, 16, 1), architecture="paper")
    assert all(
        np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights())
    )
    config = a.get_config()
    assert config["architecture"] == "paper"
    assert tuple(config["input_shape"]) == (16, 16, 1)


def test_bad_architecture_and_shapes_are_named():
    with pytest.raises(ValueError, match="architecture 'deep' unknown"):
        build_vae(architecture="deep")
    with pytest.raises(ValueError, match="8x8 crops"):
        build_vae(input_shape=(16, 16, 1))
    with pytest.raises(ValueError, match="square and grey"):
        build_vae(input_shape=(16, 32, 1), architecture="paper")


def test_to_frame_is_grey_square_in_unit_range():
    rgb = np.zeros((30, 50, 3), np.uint8)
    rgb[:, 25:] = 255
    f = surfaces.to_frame(rgb, 20)
    assert f.shape == (20, 20) and f.dtype == np.float32
    assert f.min() == 0.0 and f.max() == 1.0
    # the whole width is kept: the left half dark, the right half bright
    assert f[:, :8].max() == 0.0 and f[:, -8:].min() == 1.0
    with pytest.raises(ValueError, match="uint8"):
        surfaces.to_frame(rgb.astype(float), 20)
    with pytest.raises(ValueError, match="size"):
        surfaces.to_frame(rgb, 0)
    with pytest.raises(ValueError, match="no images"):
        surfaces.frames([], 20)


def test_to_image_size_restores_the_shape_and_keeps_constants():
    m = np.full((16, 16), 2.5, np.float32)
    out = surfaces.to_image_size(m, (37, 23))
    assert out.shape == (37, 23)
    np.testing.assert_allclose(out, 2.5, rtol=1e-6)
    ramp = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (16, 1))
    wide = surfaces.to_image_size(ramp, (16, 64))
    # bilinear: monotone along the ramp, within its range
    assert (np.diff(wide[8]) >= -1e-6).all()
    assert wide.min() >= 0 and wide.max() <= 1


def test_chunked_scoring_equals_scoring_at_once():
    model = build_vae(
        seed=0, input_shape=(8, 8, 1), architecture="paper", nc=4
    )
    frames = np.random.default_rng(1).random((7, 24, 24), np.float32)
    names = ("full", "M", "SE")
    whole = score_windows(model, frames, names, window=8, stride=4)
    chunked = surfaces.score_frames(model, frames, names, 8, 4, chunk=3)
    assert chunked.image_shape == whole.image_shape
    for name in names:
        # the same windows through the same model: batch composition only
        # changes BLAS blocking, so agreement is to float32 rounding
        np.testing.assert_allclose(
            chunked.scores[name], whole.scores[name], rtol=1e-4, atol=1e-3
        )
    shapes = [(30, 40)] * 7
    maps = surfaces.image_maps(chunked, "M", shapes)
    assert len(maps) == 7 and maps[0].shape == (30, 40)
    with pytest.raises(ValueError, match="image shapes"):
        surfaces.image_maps(chunked, "M", shapes[:2])


def test_frames_reads_sample_images():
    samples = [
        SimpleNamespace(image=np.full((10, 14), v, np.uint8)) for v in (0, 51)
    ]
    f = surfaces.frames(samples, 6)
    assert f.shape == (2, 6, 6)
    np.testing.assert_allclose(f[1], 51 / 255, rtol=1e-6)


def test_average_results_means_each_metric_and_type():
    a = {"image_auroc": 0.5, "pro": 0.2, "per_type": {"Crack": {"pro": 0.1}}}
    b = {"image_auroc": 0.7, "pro": 0.4, "per_type": {"Crack": {"pro": 0.3}}}
    out = surfaces.average_results([a, b])
    assert out["image_auroc"] == pytest.approx(0.6)
    assert out["per_type"]["Crack"]["pro"] == pytest.approx(0.2)
    assert out["seeds"]["pro"] == [0.2, 0.4]
    with pytest.raises(ValueError, match="no results"):
        surfaces.average_results([])


def test_window_contrast_is_zero_on_flat_windows_and_aligned():
    frames = np.zeros((2, 16, 16), np.float32)
    frames[1, 8:, 8:] = 1.0  # a bright corner in the second frame
    c = surfaces.window_contrast(frames, 8, 4)
    assert c.shape == (2, 3, 3)
    assert (c[0] == 0).all()
    assert c[1, 0, 0] == 0 and c[1, 2, 2] == 0  # entirely dark / bright
    assert c[1, 1, 1] > 0  # straddles the corner


def test_tile_jobs_draw_each_seeds_windows_and_keep_the_settings():
    from helpers.vae.surfaces import tile_jobs

    frames_ = np.random.default_rng(0).random((3, 20, 20), dtype=np.float32)
    jobs = tile_jobs(frames_, 50, 8, [0, 1], epochs=2, nc=4)
    assert [j["seed"] for j in jobs] == [0, 1]
    assert jobs[0]["crops"].shape == (50, 8, 8, 1)
    assert jobs[0]["epochs"] == 2 and jobs[1]["nc"] == 4
    assert not np.array_equal(jobs[0]["crops"], jobs[1]["crops"])
    again = tile_jobs(frames_, 50, 8, [0], epochs=2, nc=4)
    np.testing.assert_array_equal(again[0]["crops"], jobs[0]["crops"])


def test_typical_defects_and_colour_range():
    from helpers.patchcore.plots import colour_range, typical_defects

    masks = [np.zeros((4, 4), bool) for _ in range(5)]
    for i, n in zip((1, 2, 3), (1, 3, 2)):
        masks[i].flat[:n] = True
    types = ["Free", "Crack", "Crack", "Crack", "Free"]
    assert typical_defects(types, masks) == [3]  # the median share: 2 of 16
    with pytest.raises(ValueError, match="2 types but 5 masks"):
        typical_defects(types[:2], masks)
    maps = [np.full((4, 4), float(i)) for i in range(5)]
    lo, hi = colour_range(maps, [t == "Free" for t in types])
    assert lo == 2.0 and 3.99 < hi <= 4.0
    with pytest.raises(ValueError, match="no defect-free"):
        colour_range(maps, [False] * 5)


def test_evaluate_models_equals_scoring_each_model_by_hand():
    from helpers.patchcore.evaluation import evaluate
    from helpers.vae.experiment import auroc

    rng = np.random.default_rng(2)
    frames_ = rng.random((6, 24, 24), np.float32)
    frames_[3:, 8:16, 8:16] = 1.0  # a bright square on the defective ones
    types = ["good"] * 3 + ["Blowhole", "Blowhole", "Crack"]
    masks = [np.zeros((30, 20), bool) for _ in range(3)]
    for _ in range(3):
        m = np.zeros((30, 20), bool)
        m[10:20, 6:14] = True
        masks.append(m)
    shapes = [m.shape for m in masks]
    models = [
        build_vae(seed=s, input_shape=(8, 8, 1), architecture="paper", nc=2)
        for s in (0, 1)
    ]
    ev = surfaces.evaluate_models(
        models,
        [0, 1],
        frames_,
        shapes,
        masks,
        types,
        8,
        8,
        scores=("M", "SE"),
        progress=False,
    )
    assert len(ev.window_scores) == len(ev.seconds_per_image) == 2
    assert all(t > 0 for t in ev.seconds_per_image)
    assert len(ev.rows) == 2 * 2 * 2  # seeds x scores x (max, mean)
    for k, model in enumerate(models):
        ws = surfaces.score_frames(model, frames_, ("M", "SE"), 8, 8)
        for s in ("M", "SE"):
            np.testing.assert_array_equal(
                ev.window_scores[k].scores[s], ws.scores[s]
            )
            mine = evaluate(
                ws.image_score(s, "max"),
                surfaces.image_maps(ws, s, shapes),
                masks,
                types,
            )
            for metric in ("image_auroc", "pixel_auroc", "pro"):
                assert ev.results[s]["seeds"][metric][k] == mine[metric]
            mean = ws.image_score(s, "mean")
            row = next(
                r
                for r in ev.rows
                if (r["seed"], r["score"], r["image"]) == (k, s, "mean")
            )
            assert row["auroc"] == auroc(mean[:3], mean[3:])
    assert set(ev.results["M"]["per_type"]) == {"Blowhole", "Crack"}


def test_evaluate_models_names_mismatched_inputs():
    model = build_vae(seed=0, input_shape=(8, 8, 1), architecture="paper")
    frames_ = np.zeros((2, 16, 16), np.float32)
    with pytest.raises(ValueError, match="1 models but 2 seeds"):
        surfaces.evaluate_models(
            [model],
            [0, 1],
            frames_,
            [(16, 16)] * 2,
            [np.zeros((16, 16), bool)] * 2,
            ["good"] * 2,
            8,
            8,
        )
    with pytest.raises(ValueError, match="differ in length"):
        surfaces.evaluate_models(
            [model],
            [0],
            frames_,
            [(16, 16)],
            [np.zeros((16, 16), bool)] * 2,
            ["good"] * 2,
            8,
            8,
        )


def _small_evaluation_inputs():
    rng = np.random.default_rng(3)
    frames_ = rng.random((4, 16, 16), np.float32)
    frames_[2:, 4:12, 4:12] = 1.0
    types = ["good", "good", "Blowhole", "Crack"]
    masks = [np.zeros((20, 12), bool) for _ in range(2)]
    for _ in range(2):
        m = np.zeros((20, 12), bool)
        m[5:15, 3:9] = True
        masks.append(m)
    shapes = [m.shape for m in masks]
    models = [
        build_vae(seed=s, input_shape=(8, 8, 1), architecture="paper", nc=2)
        for s in (0, 1)
    ]
    return models, frames_, shapes, masks, types


def test_evaluate_models_in_a_build_loads_the_same_evaluation_from_the_cache(
    tmp_path, monkeypatch
):
    from helpers.vae import cache

    models, frames_, shapes, masks, types = _small_evaluation_inputs()
    args = (models, [0, 1], frames_, shapes, masks, types, 8, 4)
    kw = dict(scores=("M", "SE", "full"), progress=False)
    monkeypatch.delenv(cache.ENV, raising=False)
    plain = surfaces.evaluate_models(*args, **kw)
    assert not plain.from_cache and not list(tmp_path.iterdir())
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    first = surfaces.evaluate_models(*args, **kw)
    again = surfaces.evaluate_models(*args, **kw)
    assert not first.from_cache and again.from_cache
    for ev in (first, again):
        # equal to the evaluation without a cache, bit for bit
        assert ev.results == plain.results and ev.rows == plain.rows
        for got, want in zip(ev.window_scores, plain.window_scores):
            assert (got.window, got.stride) == (want.window, want.stride)
            assert tuple(got.image_shape) == tuple(want.image_shape)
            assert got.scores.keys() == want.scores.keys()
            for s in want.scores:
                np.testing.assert_array_equal(got.scores[s], want.scores[s])
    # the maps come out the same from the loaded window scores
    np.testing.assert_array_equal(
        surfaces.image_maps(again.window_scores[1], "M", shapes)[3],
        surfaces.image_maps(plain.window_scores[1], "M", shapes)[3],
    )
    # the loaded seconds are those of the run that computed it
    assert again.seconds_per_image == first.seconds_per_image
    # another mask is another evaluation
    masks2 = [m.copy() for m in masks]
    masks2[3][0, 0] = True
    other = surfaces.evaluate_models(
        models, [0, 1], frames_, shapes, masks2, types, 8, 4, **kw
    )
    assert not other.from_cache
    # other weights too
    models[0].set_weights([w + 1e-3 for w in models[0].get_weights()])
    assert not surfaces.evaluate_models(*args, **kw).from_cache


def test_a_damaged_cached_evaluation_is_reported_and_computed_again(
    tmp_path, monkeypatch
):
    from helpers.vae import cache

    models, frames_, shapes, masks, types = _small_evaluation_inputs()
    # seeds as NumPy integers (as a loop over np.arange gives them)
    args = (models[:1], [np.int64(0)], frames_, shapes, masks, types, 8, 8)
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    first = surfaces.evaluate_models(*args, scores=("M",), progress=False)
    (data,) = tmp_path.glob("vae-eval-*.npz")
    data.write_bytes(data.read_bytes()[:50])
    with pytest.warns(RuntimeWarning, match="damaged or incomplete"):
        ev = surfaces.evaluate_models(*args, scores=("M",), progress=False)
    assert not ev.from_cache and ev.results == first.results
    # stored again, whole
    assert surfaces.evaluate_models(
        *args, scores=("M",), progress=False
    ).from_cache
    assert not list(tmp_path.glob("tmp-*"))
