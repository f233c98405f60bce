"""Work-arounds for library clashes, applied where the clashing libraries are
imported."""

from __future__ import annotations

import sys


def load_triton_before_tensorflow() -> None:
    """Import triton (if installed) before TensorFlow.

    With the pinned builds (CUDA torch 2.13 + tensorflow-cpu 2.21), loading
    TensorFlow first and then triton (which torchvision imports) crashes the
    interpreter with a segmentation fault; the other order is fine. Call this
    before importing keras / tensorflow.
    """
    if "tensorflow" in sys.modules or "triton" in sys.modules:
        return
    try:
        import triton  # noqa: F401
    except Exception:
        # not installed (CPU-only or non-Linux torch): nothing to protect
        pass
