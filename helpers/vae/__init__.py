"""Part II helpers: the VAE anomaly detector of the Lvae article, rebuilt in
Keras 3.

Modules: :mod:`crops` (8x8 training crops), :mod:`losses` (the terms D, A, M of
Lvae), :mod:`model` (the article's 8x8 encoder/decoder, the paper's
stride-2 stack for larger windows, and the trainable
:class:`~helpers.vae.model.VAE`), :mod:`workers` (training in one-thread worker
processes, side by side), :mod:`cache` (trained models shared between
chapters), :mod:`scoring` (the batched sliding-window scorer),
:mod:`experiment` (the ablation over seeds), :mod:`plots` (the article's
heat-map figure), :mod:`surfaces` (inspection images as frames, scored
window by window, maps back at each image's size; Part III) and
:mod:`article` (faithful copies of the article's own loops, kept for
comparison only).
"""

from helpers._compat import load_triton_before_tensorflow as _load_triton_first

# TensorFlow first, then triton (via torchvision) segfaults
_load_triton_first()
