"""The article's VAE in backend-agnostic Keras 3 (TensorFlow by default, also
``KERAS_BACKEND=torch``).

The article attached its loss with ``vae.add_loss(vae_loss)`` on a functional
model. Keras 3 no longer supports symbolic losses on functional models
(``NotImplementedError``), so :class:`VAE` subclasses ``keras.Model`` and
overrides ``compute_loss``, which ``fit``/``evaluate`` call on every backend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import layers, ops

from . import cache, losses

TERMS = ("D", "A", "M", "SE")
REDUCTIONS = ("mean", "article")
VARIANCE_HEADS = ("sigmoid", "logvar")
#: "article": the article's 8x8 network; "paper": Matsubara et al.'s
#: stride-2 stack of kernel-4 convolutions, for larger windows
ARCHITECTURES = ("article", "paper")


def parse_terms(terms: str | tuple[str, ...]) -> tuple[str, ...]:
    """``"D+A+M"`` or ``("D", "A", "M")`` -> a validated tuple of term
    names."""
    names = tuple(
        t.strip()
        for t in (terms.split("+") if isinstance(terms, str) else terms)
    )
    bad = [t for t in names if t not in TERMS]
    if not names or bad:
        raise ValueError(
            f"unknown loss term(s) {bad or names!r}: use a '+'-joined subset of {TERMS}, "
            "e.g. 'D+A+M' (the article's Lvae) or 'M'"
        )
    return names


def build_encoder(
    latent_dim: int = 2, nc: int = 16, input_shape=(8, 8, 1)
) -> keras.Model:
    """Conv2D(16,2,s2)-BN-ReLU, Conv2D(32,2,s2)-BN-ReLU, Flatten, Dense mean
    and log-variance."""
    inputs = keras.Input(shape=input_shape, name="encoder_input")
    x = layers.Conv2D(nc, kernel_size=2, strides=2)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(2 * nc, kernel_size=2, strides=2)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    return _latent_code(inputs, x, latent_dim)


def _latent_code(inputs, x, latent_dim: int) -> keras.Model:
    """The encoder's end: Flatten, then Dense mean and log-variance."""
    x = layers.Flatten()(x)
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    return keras.Model(inputs, [z_mean, z_log_var], name="encoder")


def build_decoder(
    latent_dim: int = 2,
    nc: int = 16,
    variance: str = "sigmoid",
    variance_floor: float = 0.0,
) -> keras.Model:
    """Dense(4)-BN-ReLU, Reshape(2,2,1), two Conv2DTranspose(s2)-BN-ReLU, heads
    for mu and sigma^2.

    ``variance="sigmoid"`` is the article's head
    (Conv2DTranspose(1,4)-BN-sigmoid, so 0 < sigma^2 < 1); ``"logvar"``
    predicts log sigma^2 with a linear Conv2DTranspose(1,4) (sigma^2 = exp,
    unbounded). ``variance_floor`` > 0 adds a constant so sigma^2 >= floor.
    """
    _check_head(variance, variance_floor)
    latent_inputs = keras.Input(shape=(latent_dim,), name="z_sampling")
    x = layers.Dense(2 * 2)(latent_inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Reshape((2, 2, 1))(x)
    x = layers.Conv2DTranspose(
        2 * nc, kernel_size=2, strides=2, padding="same"
    )(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2DTranspose(nc, kernel_size=2, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)

    return _heads(latent_inputs, x, variance, variance_floor, strides=1)


def _check_head(variance: str, variance_floor: float) -> None:
    if variance not in VARIANCE_HEADS:
        raise ValueError(
            f"variance head {variance!r} unknown: use one of {VARIANCE_HEADS}"
        )
    if not variance_floor >= 0.0:
        raise ValueError(f"variance_floor must be >= 0, got {variance_floor}")


def _heads(latent_inputs, x, variance, variance_floor, strides):
    """The two output heads on feature map ``x``: mu (BN, sigmoid) and
    sigma^2 (see :func:`build_decoder`), each a Conv2DTranspose(1, 4)."""
    x1 = layers.Conv2DTranspose(
        1, kernel_size=4, strides=strides, padding="same"
    )(x)
    x1 = layers.BatchNormalization()(x1)
    out1 = layers.Activation("sigmoid", name="mu")(x1)

    x2 = layers.Conv2DTranspose(
        1, kernel_size=4, strides=strides, padding="same"
    )(x)
    if variance == "sigmoid":
        x2 = layers.BatchNormalization()(x2)
        out2 = layers.Activation("sigmoid")(x2)
    else:
        out2 = layers.Activation("exponential")(x2)
    if variance_floor > 0:
        out2 = layers.Rescaling(1.0, offset=variance_floor)(out2)
    out2 = layers.Activation("linear", name="sigma2")(out2)
    return keras.Model(latent_inputs, [out1, out2], name="decoder")


def paper_depth(patch: int) -> int:
    """How many stride-2 convolutions take a ``patch`` x ``patch`` window down
    to 4 x 4 (the paper took 96 px down to 3 px with five)."""
    if not isinstance(patch, (int, np.integer)) or patch < 8:
        raise ValueError(
            f"the paper's architecture needs a window of at least 8 px, "
            f"got {patch!r}"
        )
    n = int(patch).bit_length() - 3
    if 4 * 2**n != patch:
        raise ValueError(
            f"window {patch} px is not 4 x a power of 2 (8, 16, 32, 64, "
            "...): each stride-2 convolution halves it down to 4 x 4"
        )
    return n


def build_paper_encoder(
    latent_dim: int = 16, nc: int = 16, input_shape=(32, 32, 1)
) -> keras.Model:
    """The encoder of Matsubara et al. scaled to the window: n convolutions
    (kernel 4, stride 2, channels nc * 2^(i-1)), each with BN and ReLU, to a
    4 x 4 map; then Dense mean and log-variance."""
    n = paper_depth(_square(input_shape))
    inputs = keras.Input(shape=input_shape, name="encoder_input")
    x = inputs
    for i in range(n):
        x = layers.Conv2D(nc * 2**i, 4, strides=2, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    return _latent_code(inputs, x, latent_dim)


def build_paper_decoder(
    latent_dim: int = 16,
    nc: int = 16,
    patch: int = 32,
    variance: str = "sigmoid",
    variance_floor: float = 0.0,
) -> keras.Model:
    """The mirror of :func:`build_paper_encoder`: Dense to a 4 x 4 map,
    Conv2DTranspose (kernel 4, stride 2) with BN and ReLU up to half the
    window, then the article's two heads (mu, sigma^2), each one more stride-2
    Conv2DTranspose."""
    _check_head(variance, variance_floor)
    n = paper_depth(patch)
    top = nc * 2 ** (n - 1)
    latent_inputs = keras.Input(shape=(latent_dim,), name="z_sampling")
    x = layers.Dense(4 * 4 * top)(latent_inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Reshape((4, 4, top))(x)
    for i in reversed(range(n - 1)):
        x = layers.Conv2DTranspose(nc * 2**i, 4, strides=2, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    return _heads(latent_inputs, x, variance, variance_floor, strides=2)


def _square(input_shape) -> int:
    h, w, c = tuple(input_shape)
    if h != w or c != 1:
        raise ValueError(
            f"windows must be square and grey, (w, w, 1); got {tuple(input_shape)}"
        )
    return h


class VAE(keras.Model):
    """Encoder + reparameterisation + decoder, trained with a chosen subset of
    Lvae's terms.

    ``call`` returns ``(mu, sigma2, z_mean, z_log_var)``. During training z is
    sampled with a seeded ``keras.random.SeedGenerator``; at inference z =
    z_mean (a deterministic score) unless ``sample_at_inference=True`` (the
    article's Keras 2 ``Lambda`` sampled at test time too).

    ``terms``: which of D, A, M (and SE, plain squared error) form the training
    loss. ``reduction="mean"``: the batch mean of the per-sample loss
    (consistent); ``"article"``: mean(D) + sum_batch(A) + sum_batch(M), as the
    article's code did, which weights D by about 1/batch_size relative to A and
    M.
    """

    def __init__(
        self,
        latent_dim: int = 2,
        nc: int = 16,
        terms: str | tuple[str, ...] = "D+A+M",
        reduction: str = "mean",
        variance: str = "sigmoid",
        variance_floor: float = 0.0,
        seed: int = 0,
        sample_at_inference: bool = False,
        architecture: str = "article",
        input_shape=(8, 8, 1),
        **kwargs,
    ):
        super().__init__(**kwargs)
        if architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture {architecture!r} unknown: use one of "
                f"{ARCHITECTURES}"
            )
        input_shape = tuple(int(v) for v in input_shape)
        if architecture == "article" and input_shape != (8, 8, 1):
            raise ValueError(
                f"the article's network reads 8x8 crops, got {input_shape}: "
                "use architecture='paper' for larger windows"
            )
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"reduction {reduction!r} unknown: use 'mean' (consistent) or 'article'"
            )
        self.latent_dim, self.nc, self.seed = latent_dim, nc, seed
        self.terms = parse_terms(terms)
        self.reduction, self.variance, self.variance_floor = (
            reduction,
            variance,
            float(variance_floor),
        )
        self.sample_at_inference = sample_at_inference
        self.architecture, self.input_shape_ = architecture, input_shape
        if architecture == "article":
            self.encoder = build_encoder(latent_dim, nc)
            self.decoder = build_decoder(
                latent_dim, nc, variance, variance_floor
            )
        else:
            self.encoder = build_paper_encoder(latent_dim, nc, input_shape)
            self.decoder = build_paper_decoder(
                latent_dim, nc, input_shape[0], variance, variance_floor
            )
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training: bool = False):
        z_mean, z_log_var = self.encoder(x, training=training)
        if training or self.sample_at_inference:
            eps = keras.random.normal(
                ops.shape(z_mean), seed=self.seed_generator
            )
            z = z_mean + ops.exp(0.5 * z_log_var) * eps
        else:
            z = z_mean
        mu, sigma2 = self.decoder(z, training=training)
        return mu, sigma2, z_mean, z_log_var

    def loss_terms(self, x, y_pred) -> dict:
        """Per-sample D, A, M and SE for a batch (backend tensors of shape
        (batch,))."""
        mu, sigma2, z_mean, z_log_var = y_pred
        return {
            "D": losses.kl_term(z_mean, z_log_var),
            "A": losses.a_term(sigma2),
            "M": losses.m_term(x, mu, sigma2),
            "SE": losses.squared_error(x, mu),
        }

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """The training loss: the chosen terms, reduced over the batch as
        ``reduction`` says."""
        x = ops.cast(x, "float32")
        terms = self.loss_terms(x, y_pred)
        total = 0.0
        for name in self.terms:
            if self.reduction == "article" and name != "D":
                # summed over the batch, as K.sum did
                total = total + ops.sum(terms[name])
            else:
                total = total + ops.mean(terms[name])
        return total

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            latent_dim=self.latent_dim,
            nc=self.nc,
            terms="+".join(self.terms),
            reduction=self.reduction,
            variance=self.variance,
            variance_floor=self.variance_floor,
            seed=self.seed,
            sample_at_inference=self.sample_at_inference,
            architecture=self.architecture,
            input_shape=self.input_shape_,
        )
        return config


def build_vae(seed: int = 0, input_shape=(8, 8, 1), **kwargs) -> VAE:
    """Seed Keras (weights, sampling) and build a compiled :class:`VAE` (Adam,
    default settings)."""
    keras.utils.set_random_seed(seed)
    model = VAE(seed=seed, input_shape=input_shape, **kwargs)
    model(np.zeros((1, *input_shape), np.float32))  # create the weights
    model.compile(optimizer=keras.optimizers.Adam())
    return model


@dataclass
class TrainResult:
    """A trained model and what happened per epoch (loss, probe-batch term
    means, seconds)."""

    model: VAE
    history: dict = field(default_factory=dict)
    # True when reused from the build's model cache (see helpers.vae.cache)
    from_cache: bool = False


def probe_terms(model: VAE, x: np.ndarray) -> dict:
    """Mean of D, A, M, SE and the median sigma^2 on ``x`` at inference (z =
    z_mean)."""
    out = model(x, training=False)
    terms = {
        k: float(np.mean(ops.convert_to_numpy(v)))
        for k, v in model.loss_terms(x, out).items()
    }
    terms["median_sigma2"] = float(np.median(ops.convert_to_numpy(out[1])))
    return terms


def check_crops(crops) -> np.ndarray:
    """Training crops as float32 ``(N, h, w, 1)`` in [0, 1], or a
    ``ValueError`` saying what is wrong."""
    crops = np.asarray(crops, np.float32)
    if crops.ndim != 4 or crops.shape[-1] != 1:
        raise ValueError(
            f"expected crops of shape (N, h, w, 1), got {crops.shape}"
        )
    if not np.isfinite(crops).all() or crops.min() < 0 or crops.max() > 1:
        raise ValueError(
            "crops must be finite and in [0, 1]; scale uint8 pixels by 1/255"
        )
    return crops


def fit_vae(
    model: VAE,
    crops: np.ndarray,
    epochs: int,
    batch_size: int,
    seed: int,
    probe: int = 2048,
    on_epoch=None,
    dequantise: bool = False,
) -> dict:
    """The training loop: each epoch shuffles with
    ``np.random.default_rng(seed)`` and runs one ``fit(..., verbose=0)``;
    returns the history (per-epoch ``loss``, ``seconds`` and the probe means of
    each term on the first ``probe`` crops). ``on_epoch(i)`` is called after
    epoch ``i``.

    ``dequantise=True`` trains on :func:`helpers.vae.crops.dequantise` of the
    (clean) crops with noise redrawn every epoch (seed ``[seed, epoch]``), so
    the model sees each pixel's whole grey-level bin rather than one frozen
    point of it; the probe then uses the bins' centres
    (:func:`helpers.vae.crops.bin_centre`), where such a model is also
    scored."""
    from .crops import bin_centre
    from .crops import dequantise as dequantised

    rng = np.random.default_rng(seed)
    probe_crops = bin_centre(crops[:probe]) if dequantise else crops[:probe]
    history: dict = {"loss": [], "seconds": []}
    for epoch in range(epochs):
        order = rng.permutation(len(crops))
        x = dequantised(crops, seed=[seed, epoch]) if dequantise else crops
        t0 = time.perf_counter()
        h = model.fit(
            x[order], batch_size=batch_size, epochs=1, shuffle=False, verbose=0
        )
        history["seconds"].append(time.perf_counter() - t0)
        history["loss"].append(float(h.history["loss"][-1]))
        for k, v in probe_terms(model, probe_crops).items():
            history.setdefault(k, []).append(v)
        if on_epoch is not None:
            on_epoch(epoch)
    return history


def train_vae(
    crops: np.ndarray,
    epochs: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
    probe: int = 2048,
    workers: int | None = None,
    **model_kwargs,
) -> TrainResult:
    """Build and train a VAE on ``crops`` (N, 8, 8, 1) in [0, 1]; deterministic
    given ``seed``.

    The loop is :func:`fit_vae`. It runs in a worker process with one
    TensorFlow thread (:mod:`helpers.vae.workers`: for this small model as fast
    as two threads or faster, and the same numbers on any number of cores);
    ``workers=0`` (or ``VAD_TRAIN_WORKERS=0``) trains in this process instead.
    To train several models at once, pass them all to
    :func:`helpers.vae.workers.train_many`. When ``VAD_MODEL_CACHE`` is set, an
    identical earlier run is reused (:mod:`helpers.vae.cache`; ``from_cache``
    says so and ``history`` is the stored one).
    """
    from .workers import train_many

    job = dict(
        crops=crops,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        probe=probe,
        **model_kwargs,
    )
    return train_many(
        [job], workers=workers, progress=progress, desc=f"seed {seed}"
    )[0]
