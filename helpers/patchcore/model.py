"""``PatchCore``: a small estimator tying the pieces together (fit / predict /
save / load)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .anomaly_map import anomaly_maps
from .features import (
    FeatureExtractor,
    aggregate_features,
    check_finite,
    embedding_to_patches,
    padding_free_cells,
    centre_per_tile,
)
from .preprocess import Preprocessor, as_image_array
from .sampler import coreset_size, greedy_coreset, jl_min_dim, project
from .scorer import NearestNeighbourScorer, reweighted_image_score

FORMAT_VERSION = 1


@dataclass
class PatchCoreConfig:
    """Settings of :class:`PatchCore`. Defaults follow the PatchCore article
    except where noted."""

    # helpers.backbones name ("auto": WRN50-2 online, else ResNet-50 v1)
    backbone: str = "auto"
    layers: tuple[str, ...] = ("layer2", "layer3")
    pool: bool = True  # AvgPool2d(3, 1, 1) local aggregation
    coreset_ratio: float = 0.01  # fraction of training patches kept
    # None: Johnson-Lindenstrauss dimension for `eps`
    projection_dim: int | None = None
    # JL distortion (the article's SparseRandomProjection eps)
    eps: float = 0.9
    k: int = 9  # neighbourhood size b of the paper's eq. 7 (1: plain max)
    # patch scores: "fast" (subspace candidates, exact re-rank) or "exact"
    search: str = "fast"
    # "center_crop" (article), "resize" or "letterbox"
    preprocess: str = "center_crop"
    image_size: int = 224
    resize: int = 256  # only for "center_crop"
    sigma: float = 4.0  # Gaussian blur of the anomaly maps, in input pixels
    # subtract each image's mean patch from its patches (not in the article)
    tile_centre: bool = False
    seed: int = 0  # coreset start point and projection
    batch_size: int = 16
    # storage of all training patches during fit (float32: 2x memory)
    fit_dtype: str = "float16"
    device: str | None = None  # None: CUDA if available, else CPU
    progress: bool = True

    def validate(self) -> None:
        if not 0 < self.coreset_ratio <= 1:
            raise ValueError(
                f"coreset_ratio must lie in (0, 1], got {self.coreset_ratio}"
            )
        if not 0 < self.eps < 1:
            raise ValueError(
                f"eps must lie in (0, 1) (Johnson-Lindenstrauss distortion), got {self.eps}"
            )
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k!r}")
        if self.projection_dim is not None and self.projection_dim < 1:
            raise ValueError(
                f"projection_dim must be None or >= 1, got {self.projection_dim}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.fit_dtype not in ("float16", "float32"):
            raise ValueError(
                f"fit_dtype must be 'float16' or 'float32', got {self.fit_dtype!r}"
            )
        if self.search not in ("fast", "exact"):
            raise ValueError(
                f"search must be 'fast' or 'exact', got {self.search!r}"
            )
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        Preprocessor(self.preprocess, self.image_size, self.resize)

    def to_json(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        if not self.tile_centre:
            # settings from before tile_centre existed keep their cache keys
            del d["tile_centre"]
        return d


def _image_of(item) -> np.ndarray | str | Path:
    """Accept arrays, paths, or objects with an ``image`` attribute
    (``helpers.data.Sample``)."""
    return item.image if hasattr(item, "image") else item


class PatchCore:
    """PatchCore anomaly detector (Roth et al. 2022).

    >>> model = PatchCore(coreset_ratio=0.01).fit(train_images)      # doctest: +SKIP
    >>> scores, maps = model.predict(test_images)                     # doctest: +SKIP
    """

    def __init__(self, backbone: str | nn.Module = "auto", **settings) -> None:
        names = {f.name for f in fields(PatchCoreConfig)}
        unknown = set(settings) - names
        if unknown:
            raise TypeError(
                f"unknown PatchCore setting(s) {sorted(unknown)}; valid: {sorted(names)}"
            )
        if isinstance(backbone, nn.Module):
            self._backbone: nn.Module | None = backbone
            settings["backbone"] = getattr(backbone, "name", "custom")
            self.backbone_description = (
                f"a user-supplied backbone ({type(backbone).__name__})"
            )
        else:
            self._backbone = None
            settings["backbone"] = backbone
            self.backbone_description = ""
        if "layers" in settings:
            settings["layers"] = tuple(settings["layers"])
        self.config = PatchCoreConfig(**settings)
        self.config.validate()
        self.preprocessor = Preprocessor(
            self.config.preprocess, self.config.image_size, self.config.resize
        )
        self.bank: torch.Tensor | None = None
        # set by fit; saved beside the bank
        self.coreset_index: torch.Tensor | None = None
        self.grid: tuple[int, int] | None = None
        self.channels: int | None = None
        self.fit_info: dict = {}
        self._extractor: FeatureExtractor | None = None
        self._scorer: NearestNeighbourScorer | None = None

    # --------------------------------------------------------------- plumbing
    @property
    def device(self) -> torch.device:
        from helpers.runtime import torch_device

        return torch_device(self.config.device)

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            if self._backbone is None:
                from helpers.backbones import load_backbone

                self._backbone, info = load_backbone(self.config.backbone)
                self.backbone_description = info.description
            self._extractor = FeatureExtractor(
                self._backbone.to(self.device), self.config.layers
            )
        return self._extractor

    def _arrays(self, images, what: str) -> list[np.ndarray]:
        if isinstance(images, np.ndarray):
            if images.ndim == 2 or (
                images.ndim == 3 and images.shape[-1] == 3
            ):
                raise ValueError(
                    f"{what}: got a single image of shape {images.shape}; pass a list of images "
                    "or a stacked array [n, H, W] / [n, H, W, 3]"
                )
            if images.ndim not in (3, 4):
                raise ValueError(
                    f"{what}: an image array must be [n, H, W] or [n, H, W, 3], got {images.shape}"
                )
            images = list(images)
        items = list(images)
        if not items:
            raise ValueError(f"{what}: no images given (empty input)")
        arrays = []
        for i, item in enumerate(items):
            try:
                arrays.append(as_image_array(_image_of(item)))
            except (ValueError, TypeError, FileNotFoundError) as err:
                raise type(err)(f"{what}: image {i}: {err}") from None
        kinds = {a.ndim for a in arrays}
        if len(kinds) > 1:
            raise ValueError(
                f"{what}: mixed grayscale (HxW) and RGB (HxWx3) images; convert them to one kind"
            )
        return arrays

    def _batches(self, arrays: Sequence[np.ndarray]) -> Iterator[torch.Tensor]:
        bs = self.config.batch_size
        for i in range(0, len(arrays), bs):
            yield self.preprocessor.batch(arrays[i : i + bs])

    @torch.no_grad()
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised batch -> patch features ``[b, H*W, C]`` (grid stored in
        ``self.grid``)."""
        return self.patches_from_maps(self.extractor(x.to(self.device)), x)

    @torch.no_grad()
    def patches_from_maps(
        self, maps: Sequence[torch.Tensor], inputs: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The hooked layers' maps (``config.layers``, shallow to deep) ->
        patch features ``[b, H*W, C]``. One backbone pass can serve several
        models this way (see :func:`helpers.patchcore.evaluation.study`).
        ``inputs``, the normalised batch the maps came from, keeps letterbox
        padding out of the tile's mean for ``tile_centre`` (needed only
        then)."""
        emb = aggregate_features(maps, pool=self.config.pool)
        grid = (int(emb.shape[2]), int(emb.shape[3]))
        if self.grid is not None and grid != self.grid:
            raise ValueError(
                f"patch grid {grid} differs from the fitted grid {self.grid}"
            )
        self.grid = grid
        # channels-last features (the CPU default)
        # make this reshape a view, not a copy
        patches = embedding_to_patches(emb).float().cpu()
        check_finite(patches)
        patches = patches.view(emb.shape[0], grid[0] * grid[1], emb.shape[1])
        if self.config.tile_centre:
            valid = (
                None
                if inputs is None
                else padding_free_cells(inputs.cpu(), grid)
            )
            patches = centre_per_tile(patches, valid)
        return patches

    def extract(
        self,
        images,
        desc: str = "features",
        dtype: torch.dtype = torch.float32,
        what: str = "extract",
    ) -> torch.Tensor:
        """Patch features of ``images`` as one preallocated ``[n, H*W, C]``
        tensor (for studies)."""
        from tqdm import tqdm

        arrays = self._arrays(images, what)
        out = None
        row = 0
        with tqdm(
            total=len(arrays),
            desc=desc,
            unit="img",
            disable=not self.config.progress,
        ) as bar:
            for x in self._batches(arrays):
                p = self._embed(x)
                if out is None:
                    out = torch.empty(
                        (len(arrays),) + tuple(p.shape[1:]), dtype=dtype
                    )
                out[row : row + p.shape[0]] = p
                row += p.shape[0]
                bar.update(p.shape[0])
        return out

    # -------------------------------------------------------------------- fit
    def fit(self, images) -> "PatchCore":
        """Build the memory bank from defect-free ``images`` (arrays, paths or
        ``Sample`` objects).

        When ``VAD_MODEL_CACHE`` is set (book builds), an identical earlier fit
        is loaded instead (:mod:`helpers.patchcore.cache`;
        ``fit_info["from_cache"]`` says so)."""
        from . import cache

        self.grid = None
        arrays = self._arrays(images, "fit")
        key = (
            cache.fit_key(self.config, arrays, self.extractor.backbone)
            if cache.cache_dir()
            else None
        )
        if key is not None and cache.load_into(self, key):
            self._fit_key = key  # also names this model's cached image scores
            return self
        t0 = time.perf_counter()
        patches = self.extract(
            arrays,
            desc="fit: features",
            dtype=getattr(torch, self.config.fit_dtype),
            what="fit",
        )
        t1 = time.perf_counter()
        self.fit_patches(patches)
        # wall-clock seconds of this fit (kept by the cache with the bank)
        self.fit_info["seconds"] = {
            "features": t1 - t0,
            "coreset": time.perf_counter() - t1,
        }
        if key is not None:
            cache.store(self, key)
        self._fit_key = key
        return self

    def _projection_dim(self, n_patches: int) -> int:
        cfg = self.config
        return (
            cfg.projection_dim
            if cfg.projection_dim is not None
            else jl_min_dim(n_patches, cfg.eps)
        )

    @torch.no_grad()
    def coreset_selection(
        self,
        patches: torch.Tensor,
        n: int,
        clock: list | None = None,
        progress: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` greedy coreset choices among ``patches`` ``[N, C]``
        (projected and started as :meth:`fit_patches` does) and the coverage
        radius after each. Greedy choices are nested: the first ``m`` of them
        are the coreset of size ``m``, so one run serves every smaller ratio.
        ``clock`` (a list) receives the time after each choice (see
        :func:`greedy_coreset`); ``progress`` overrides ``config.progress`` for
        its progress bar."""
        cfg = self.config
        flat = patches.reshape(-1, patches.shape[-1])
        dim = self._projection_dim(flat.shape[0])
        proj = (
            project(flat, dim, seed=cfg.seed)
            if dim < flat.shape[1]
            else flat.float()
        )
        start = int(
            torch.randint(
                flat.shape[0],
                (1,),
                generator=torch.Generator().manual_seed(cfg.seed),
            )
        )
        progress = cfg.progress if progress is None else progress
        return greedy_coreset(
            proj,
            n,
            start=start,
            progress=progress,
            radius_history=True,
            clock=clock,
        )

    @torch.no_grad()
    def fit_patches(
        self,
        patches: torch.Tensor,
        selection: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> "PatchCore":
        """Coreset-subsample precomputed patch features ``[n, P, C]`` or
        ``[N, C]`` into the memory bank.

        ``selection``: the output of :meth:`coreset_selection` for these
        patches, run for at least this model's bank size (its prefix is used),
        to share one greedy run between coreset ratios."""
        cfg = self.config
        self._fit_key = None  # a bank from patches: no cache entry names it
        flat = patches.reshape(-1, patches.shape[-1])
        if flat.shape[0] == 0:
            raise ValueError("fit: no patch features (empty input)")
        check_finite(flat)
        n_keep = coreset_size(flat.shape[0], cfg.coreset_ratio)
        if cfg.k > n_keep:
            raise ValueError(
                f"k={cfg.k} is larger than the memory bank ({n_keep} patches = {cfg.coreset_ratio} "
                f"x {flat.shape[0]}): lower k, raise coreset_ratio or fit on more images"
            )
        dim = self._projection_dim(flat.shape[0])
        if n_keep < flat.shape[0]:
            if selection is None:
                selection = self.coreset_selection(flat, n_keep)
            elif len(selection[0]) < n_keep:
                raise ValueError(
                    f"the given coreset selection has {len(selection[0])} choices; this model "
                    f"keeps {n_keep}"
                )
            idx, radius = (
                selection[0][:n_keep],
                float(selection[1][n_keep - 1]),
            )
        else:
            idx, radius = torch.arange(flat.shape[0]), 0.0
        self.bank = flat[idx].float()
        # which of the n*P training patches the bank kept
        self.coreset_index = idx
        self.channels = int(self.bank.shape[1])
        self.fit_info = {
            "n_patches": int(flat.shape[0]),
            "bank_size": int(n_keep),
            "projection_dim": int(min(dim, flat.shape[1])),
            "coverage_radius_projected": float(radius),
        }
        self._scorer = self._make_scorer()
        return self

    def _make_scorer(self) -> NearestNeighbourScorer:
        """The bank's scorer. ``search="fast"`` builds its subspace index here,
        as part of fitting; ``search="exact"`` gives it no subspace, so
        :meth:`NearestNeighbourScorer.nearest` searches exactly."""
        if self.config.search == "exact":
            return NearestNeighbourScorer(self.bank, search_dim=None)
        return NearestNeighbourScorer(self.bank).prepare()

    @property
    def scorer(self) -> NearestNeighbourScorer:
        """The fitted bank's scorer: ``knn`` is the exact search, ``nearest``
        follows ``config.search``."""
        self._check_fitted()
        return self._scorer

    def set_search(self, search: str) -> "PatchCore":
        """Switch a fitted model to the ``"fast"`` or ``"exact"`` nearest-patch
        search. The bank is unchanged; only its scorer is rebuilt (the fast
        search's index takes about a second for a 1% bank)."""
        self._check_fitted()
        config = replace(self.config, search=search)
        config.validate()
        self.config = config
        self._scorer = self._make_scorer()
        return self

    # ---------------------------------------------------------------- predict
    def _check_fitted(self) -> None:
        if self.bank is None or self._scorer is None:
            raise RuntimeError(
                "this PatchCore model is not fitted: call fit(train_images) (or PatchCore.load) "
                "before predict"
            )

    @torch.no_grad()
    def score_patches(
        self, patches: torch.Tensor, shapes: Sequence[tuple[int, int]]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Image scores and anomaly maps (evaluation frame) for precomputed
        patches ``[b, P, C]``."""
        self._check_fitted()
        b, P, C = patches.shape
        if (
            C != self.channels
            or self.grid is None
            or P != self.grid[0] * self.grid[1]
        ):
            raise ValueError(
                f"patches of shape {tuple(patches.shape)} do not match the fitted model "
                f"(grid {self.grid}, {self.channels} channels)"
            )
        dist, index = self._scorer.nearest(patches.reshape(-1, C))
        patch_scores = dist.view(b, P)
        nn_index = index.view(b, P)
        if self.config.k > 1:
            scores = reweighted_image_score(
                patches, patch_scores, nn_index, self._scorer, self.config.k
            )
        else:
            scores = patch_scores.max(1).values
        maps = anomaly_maps(
            patch_scores, self.grid, self.config.image_size, self.config.sigma
        )
        frames = [
            self.preprocessor.map_to_frame(m, h, w).numpy()
            for m, (h, w) in zip(maps, shapes)
        ]
        return scores.numpy().astype(np.float64), frames

    def predict(self, images) -> tuple[np.ndarray, list[np.ndarray]]:
        """Image anomaly scores ``[n]`` and one anomaly map per image, in the
        evaluation frame (original image size for ``"resize"``/``"letterbox"``,
        the crop for ``"center_crop"``)."""
        from tqdm import tqdm

        self._check_fitted()
        arrays = self._arrays(images, "predict")
        scores, maps = [], []
        with tqdm(
            total=len(arrays),
            desc="predict",
            unit="img",
            disable=not self.config.progress,
        ) as bar:
            for i, x in enumerate(self._batches(arrays)):
                chunk = arrays[
                    i * self.config.batch_size : (i + 1)
                    * self.config.batch_size
                ]
                s, m = self.score_patches(
                    self._embed(x), [a.shape[:2] for a in chunk]
                )
                scores.append(s)
                maps.extend(m)
                bar.update(len(chunk))
        scores = np.concatenate(scores)
        key = self._scores_key(arrays)
        if key is not None:
            from . import cache

            cache.store_scores(key, scores)
        return scores, maps

    def score_images(self, images) -> np.ndarray:
        """The image scores of :meth:`predict` without the maps. In a book
        build (``VAD_MODEL_CACHE`` set) a model fitted through the cache reuses
        the scores of an earlier ``predict`` of the same model on the same
        images (I.6 scores I.5's test images)."""
        from . import cache

        self._check_fitted()
        arrays = self._arrays(images, "score_images")
        key = self._scores_key(arrays)
        cached = (
            cache.load_scores(key, len(arrays)) if key is not None else None
        )
        return cached if cached is not None else self.predict(arrays)[0]

    def _scores_key(self, arrays) -> str | None:
        fit_key = getattr(self, "_fit_key", None)
        if fit_key is None:
            return None
        from . import cache

        return cache.scores_key(fit_key, self.config.batch_size, arrays)

    def mask_for(
        self, mask: np.ndarray, image: np.ndarray | None = None
    ) -> np.ndarray:
        """Bring a ground-truth mask into the frame of this model's anomaly
        maps (checks its size)."""
        shape = (
            None
            if image is None
            else as_image_array(_image_of(image)).shape[:2]
        )
        return self.preprocessor.mask(mask, shape)

    # ------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``path/config.json`` and ``path/memory_bank.safetensors`` (the
        bank and which training patches it kept; no pickle). Each file is
        written under a temporary name and renamed into place, the bank first,
        so an interrupted save leaves the previous model (or none), never half
        a file."""
        from safetensors.torch import save_file

        self._check_fitted()
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(
                f"cannot save the model to {path}: it is a file; name a folder"
            )
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_json(),
            "grid": list(self.grid),
            "channels": self.channels,
            "fit_info": self.fit_info,
        }
        tmp_bank, tmp_cfg = (
            path / f".memory_bank.{os.getpid()}.tmp",
            path / f".config.{os.getpid()}.tmp",
        )
        try:
            tensors = {"bank": self.bank.contiguous()}
            if self.coreset_index is not None:
                tensors["coreset_index"] = self.coreset_index.contiguous()
            save_file(tensors, str(tmp_bank))
            tmp_cfg.write_text(json.dumps(meta, indent=2))
            os.replace(tmp_bank, path / "memory_bank.safetensors")
            os.replace(tmp_cfg, path / "config.json")
        finally:
            tmp_bank.unlink(missing_ok=True)
            tmp_cfg.unlink(missing_ok=True)
        return path

    @classmethod
    def load(
        cls, path: str | Path, backbone: nn.Module | None = None
    ) -> "PatchCore":
        """Read a model written by :meth:`save`. Pass ``backbone`` if it was
        fitted with a custom module.

        A damaged or foreign file raises :class:`SavedModelError`, naming the
        file and what to do."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        cfg_file, bank_file = (
            path / "config.json",
            path / "memory_bank.safetensors",
        )
        if not cfg_file.is_file() or not bank_file.is_file():
            raise FileNotFoundError(
                f"{path} is not a saved PatchCore model (expected config.json and "
                "memory_bank.safetensors)"
            )
        redo = "save the model again (PatchCore.fit(...).save(path)) or restore the folder from a copy"
        try:
            meta = json.loads(cfg_file.read_text())
            if not isinstance(meta, dict):
                raise ValueError("it does not hold a JSON object")
        except (UnicodeDecodeError, ValueError) as err:
            raise SavedModelError(
                f"{cfg_file} of the saved PatchCore model {path} is damaged (not valid "
                f"JSON: {err}); {redo}"
            ) from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise SavedModelError(
                f"{cfg_file}: unsupported PatchCore format version "
                f"{meta.get('format_version')!r} (this code reads version {FORMAT_VERSION})"
            )
        try:
            settings = dict(meta["config"])
            name = settings.pop("backbone")
            grid, channels = (
                tuple(int(g) for g in meta["grid"]),
                int(meta["channels"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise SavedModelError(
                f"{cfg_file} of the saved PatchCore model {path} lacks or garbles the "
                f"entry {err}; {redo}"
            ) from None
        if backbone is None and name == "custom":
            raise ValueError(
                "this model was fitted with a custom backbone module: pass it as backbone="
            )
        try:
            model = cls(backbone if backbone is not None else name, **settings)
        except (TypeError, ValueError) as err:
            raise SavedModelError(
                f"{cfg_file}: its settings are not valid here ({err}); it may come from "
                f"another version of helpers; {redo}"
            ) from None
        try:
            tensors = load_file(str(bank_file))
        except (SafetensorError, OSError, ValueError) as err:
            raise SavedModelError(
                f"{bank_file} of the saved PatchCore model {path} is damaged or truncated "
                f"(safetensors: {err}); {redo}"
            ) from None
        # older files also hold "bank_neighbours"; eq. 7 now searches them
        bank = tensors.get("bank")
        if (
            bank is None
            or bank.ndim != 2
            or bank.shape[1] != channels
            or bank.shape[0] < model.config.k
        ):
            got = (
                "no 'bank' tensor"
                if bank is None
                else f"a bank of shape {tuple(bank.shape)}"
            )
            raise SavedModelError(
                f"{bank_file} holds {got}, but {cfg_file.name} describes {channels} channels "
                f"and k={model.config.k}: the two files do not belong together; {redo}"
            )
        if not torch.isfinite(bank).all():
            raise SavedModelError(
                f"{bank_file}: the memory bank holds NaN/inf values; {redo}"
            )
        model.bank = bank.float()
        index = tensors.get("coreset_index")
        model.coreset_index = (
            index
            if index is not None and index.shape == (bank.shape[0],)
            else None
        )
        model.grid, model.channels = grid, channels
        model.fit_info = meta.get("fit_info", {})
        model._scorer = model._make_scorer()
        return model


class SavedModelError(ValueError):
    """A saved PatchCore model whose files are damaged, truncated or do not
    belong together."""
