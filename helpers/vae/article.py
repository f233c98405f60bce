"""The article's own per-window heat-map code, kept as written for comparison
and benchmarking.

THIS IS THE ARTICLE'S CODE, NOT THE BOOK'S SCORER (use
:mod:`helpers.vae.scoring`). Two changes only: the model returns four outputs
here, so ``mu, sigma = model.predict(...)`` became ``mu, sigma, *_ = ...``; and
the heat maps are returned instead of being saved to ``images/``. Known
problems, kept on purpose: ``range(int((28 - 8) / 2))`` stops at window start
18, so rows and columns 26-27 are never scored; one ``evaluate``/``predict``
call per window is slow; the "new" score is summed pixel by pixel in Python.
"""

from __future__ import annotations

import numpy as np


def evaluate_img(model, x_normal, x_anomaly, name, height=8, width=8, move=2):
    """The article's ``evaluate_img``: "old_" scores with the full loss,
    otherwise M only."""
    img_normal = np.zeros((x_normal.shape))
    img_anomaly = np.zeros((x_normal.shape))

    for i in range(int((x_normal.shape[0] - height) / move)):
        for j in range(int((x_normal.shape[1] - width) / move)):
            x_sub_normal = x_normal[
                i * move : i * move + height, j * move : j * move + width
            ]
            x_sub_anomaly = x_anomaly[
                i * move : i * move + height, j * move : j * move + width
            ]
            x_sub_normal = x_sub_normal.reshape(1, height, width, 1)
            x_sub_anomaly = x_sub_anomaly.reshape(1, height, width, 1)

            # conventional method (従来手法)
            if name == "old_":
                # normal score
                normal_score = model.evaluate(
                    x_sub_normal, batch_size=1, verbose=0
                )
                img_normal[
                    i * move : i * move + height, j * move : j * move + width
                ] += normal_score

                # anomaly score
                anomaly_score = model.evaluate(
                    x_sub_anomaly, batch_size=1, verbose=0
                )
                img_anomaly[
                    i * move : i * move + height, j * move : j * move + width
                ] += anomaly_score

            # proposed method (提案手法)
            else:
                # normal score
                mu, sigma, *_ = model.predict(
                    x_sub_normal, batch_size=1, verbose=0
                )
                loss = 0
                for k in range(height):
                    for l in range(width):
                        loss += (
                            0.5
                            * (x_sub_normal[0, k, l, 0] - mu[0, k, l, 0]) ** 2
                            / sigma[0, k, l, 0]
                        )
                img_normal[
                    i * move : i * move + height, j * move : j * move + width
                ] += loss

                # anomaly score
                mu, sigma, *_ = model.predict(
                    x_sub_anomaly, batch_size=1, verbose=0
                )
                loss = 0
                for k in range(height):
                    for l in range(width):
                        loss += (
                            0.5
                            * (x_sub_anomaly[0, k, l, 0] - mu[0, k, l, 0]) ** 2
                            / sigma[0, k, l, 0]
                        )
                img_anomaly[
                    i * move : i * move + height, j * move : j * move + width
                ] += loss

    return img_normal, img_anomaly
