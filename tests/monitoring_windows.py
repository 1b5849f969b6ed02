"""Generated monitoring windows run through the real window report (drift_report.run_report).

A population that drifts by a chosen amount, the model's probability from a fixed logistic
relation and outcomes drawn from that probability: the workspace and the Evidently UI tests file
these reports as monitoring does.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from tabular_mlops.config import MonitoringSpec
from tabular_mlops.drift_report import LABEL, PROBABILITY, Figures, Window, run_report, snapshot_identity
from tabular_mlops.estimation import fit_calibrator


def generated_rows(rng: np.random.Generator, rows: int, drift: float) -> pd.DataFrame:
    """A window's rows, moved by `drift` (0: as in training, 1: the most), with the model's
    probability from a fixed logistic relation and the outcome drawn from that probability."""
    online = 0.3 + 0.35 * drift
    frame = pd.DataFrame(
        {
            # More people near their limit, and more alike: a weaker signal, a lower AUC.
            "utilisation": rng.normal(0.4 * drift, 1 - 0.45 * drift, rows),
            "income": rng.lognormal(10.3, 0.5, rows),
            "age": rng.normal(41, 11, rows),
            "tenure": rng.gamma(2.0, 18 * (1 + 0.9 * drift), rows),
            "enquiries": rng.poisson(1.2 + 1.2 * drift, rows).astype(float),
            "channel": rng.choice(
                ["branch", "online", "partner"], rows, p=[0.6 - 0.6 * online, online, 0.4 - 0.4 * online]
            ),
        }
    )
    frame.loc[rng.uniform(size=rows) < 0.05, "income"] = np.nan  # not everyone states it
    logit = (
        -1.4
        + 1.6 * frame["utilisation"]
        - (np.log(frame["income"].fillna(30_000)) - 10.3)
        - 0.25 * (frame["age"] - 41) / 11
        - 0.3 * (frame["tenure"] / 36 - 1)
        + 0.2 * frame["enquiries"]
        + 0.3 * (frame["channel"] == "online")
    )
    frame[PROBABILITY] = 1 / (1 + np.exp(-logit))
    frame[LABEL] = (rng.uniform(size=rows) < frame[PROBABILITY]).astype(float)
    return frame


def trained_version(rng: np.random.Generator, importance: dict[str, float], rows: int) -> dict[str, Any]:
    """What a version logs for monitoring, from generated training rows: its reference, feature
    columns and importance, a calibrator fitted on held-out rows, its threshold and test AUC."""
    from sklearn.metrics import roc_auc_score

    reference, held_out = generated_rows(rng, rows, 0.0), generated_rows(rng, rows, 0.0)
    y, p = held_out[LABEL].to_numpy(), held_out[PROBABILITY].to_numpy()
    return {
        "reference": reference.drop(columns=LABEL),
        "columns": list(importance),
        "importance": importance,
        "calibrator": fit_calibrator(y, p).to_json(),
        "threshold": 0.5,
        "baseline_auc": float(roc_auc_score(y, p)),
    }


def window_report(
    spec: MonitoringSpec, model: str, day: date, version: str, trained: dict[str, Any], current: pd.DataFrame
) -> tuple[Any, Figures]:
    """The window's real report, with the identity monitoring gives it."""
    labels = current[LABEL].dropna()
    usable = len(labels) >= spec.min_labelled_rows and labels.nunique() == 2
    window = Window(current=current, labelled_rows=len(labels) if usable else 0, **trained)
    return run_report(window, spec, snapshot_identity(model, day.isoformat(), version))
