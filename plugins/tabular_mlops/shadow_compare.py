"""Champion against challenger on the same labelled rows: the evidence a shadow challenger earns.

Batch scoring writes `challenger_probability` beside the champion's `probability` in every row of
a partition it shadowed; serving writes both probabilities of each request to the shadow dataset
`<lake>/shadow/<model>/dt=<day>/*.parquet`. Once labels mature, `challenger_section` gathers the
rows that carry both probabilities for one (champion, challenger) pair over the window and the
`LOOKBACK_DAYS - 1` days before it, joins the labels, and `compare` judges the pair with the
gate's paired bootstrap (gate.paired_bootstrap_auc_diff): the challenger wins when the whole
interval of AUC(challenger) - AUC(champion) lies above 0, loses when it lies below 0, and is
undecided otherwise; under `promotion.shadow_min_labelled` labelled rows it is not judged.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabular_mlops import faults, gate, settings, storage
from tabular_mlops.config import ModelConfig

# Labelled rows accumulate over the window and the 29 days before it: long enough for labels
# that mature within weeks, short enough that the evidence describes today's traffic.
LOOKBACK_DAYS = 30
WINS, LOSES, UNDECIDED, TOO_FEW = "wins", "loses", "undecided", "too few labelled rows"
CONFIDENCE = 0.95
SHADOW_ENTITY = "entity_id"
_PAIR = ["champion_probability", "challenger_probability"]


def _auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores)) if np.unique(y).size == 2 else None


def compare(
    y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, minimum: int, rounds: int, seed: int = 0
) -> dict[str, Any]:
    """AUC of both on the same labelled rows, the paired bootstrap interval of the difference, a verdict."""
    y = np.asarray(y, dtype=np.int64).ravel()
    champion, challenger = np.asarray(champion, dtype=float), np.asarray(challenger, dtype=float)
    if not champion.shape == challenger.shape == y.shape:
        raise ValueError(f"{y.size} labels, {champion.size} champion and {challenger.size} challenger scores")
    out: dict[str, Any] = {
        "labelled_rows": int(y.size),
        "min_labelled": minimum,
        "positives": int(y.sum()),
        "champion_auc": _auc(y, champion) if y.size else None,
        "challenger_auc": _auc(y, challenger) if y.size else None,
        "auc_diff": None,
        "interval": None,
        "confidence": CONFIDENCE,
    }
    if out["champion_auc"] is not None:
        out["auc_diff"] = round(out["challenger_auc"] - out["champion_auc"], 6)
    if y.size < minimum or out["auc_diff"] is None:
        return {**out, "verdict": TOO_FEW}
    diffs = gate.paired_bootstrap_auc_diff(y, challenger, champion, rounds, seed)
    if diffs.size == 0:  # every resample held one class
        return {**out, "verdict": UNDECIDED, "resamples": 0}
    alpha = 1 - CONFIDENCE
    low, high = (round(float(q), 6) for q in np.quantile(diffs, [alpha / 2, 1 - alpha / 2]))
    verdict = WINS if low > 0 else LOSES if high < 0 else UNDECIDED
    return {**out, "interval": [low, high], "resamples": int(diffs.size), "verdict": verdict}


def since(day: str) -> str:
    """The first day whose rows count for the window `day`."""
    return (date.fromisoformat(day) - timedelta(days=LOOKBACK_DAYS - 1)).isoformat()


def _days(config: ModelConfig, kind: str, day: str, pattern: str) -> tuple[str, dict[str, list[str]]]:
    """(`<lake>/<kind>/<model>`, its files matching `pattern` by the day of their `dt=<day>/` folder,
    for the days of the lookback up to `day`)."""
    from tabular_mlops.scoring import lake_root

    root = storage.join(settings.resolve_location(lake_root(config)), kind, config.name)
    first = since(day)
    found: dict[str, list[str]] = {}
    for name in storage.list_files(root, config.data.aws_conn_id):
        m = re.fullmatch(r"dt=(\d{4}-\d{2}-\d{2})/(" + pattern + ")", name)
        if m and first <= m.group(1) <= day:
            found.setdefault(m.group(1), []).append(name)
    return root, dict(sorted(found.items()))


def _earlier_batch(
    config: ModelConfig, day: str, champion: str, challenger: str, work: Path, notes: list[str]
) -> list[pd.DataFrame]:
    """Rows of the earlier predictions partitions in the lookback that this pair scored."""
    import json

    conn, key = config.data.aws_conn_id, config.features.entity_key
    root, days = _days(config, "predictions", day, re.escape(storage.MANIFEST))
    frames = []
    for past in (d for d in days if d < day):
        folder, scratch = storage.join(root, f"dt={past}"), work / "batch" / past
        try:
            local = storage.local_path(storage.join(folder, storage.MANIFEST), scratch, conn)
            manifest = json.loads(local.read_text())
            shadow = manifest.get("challenger") or {}
            if str(manifest.get("model_version")) != champion or str(shadow.get("version")) != challenger:
                continue
            if not shadow.get("scored"):
                continue
            rows = pd.read_parquet(
                storage.local_path(storage.join(folder, "predictions.parquet"), scratch, conn),
                columns=[key, "probability", "challenger_probability"],
            )
        except Exception as exc:
            if faults.is_transient(exc):
                raise  # the store is down for a moment: the task's retry reads it
            notes.append(f"{folder} skipped: {faults.describe(exc)}")
            continue
        frames.append(_pairs(rows.rename(columns={"probability": _PAIR[0]}), key, past, "batch"))
    return frames


def _shadow_rows(
    config: ModelConfig, day: str, champion: str, challenger: str, work: Path, notes: list[str]
) -> list[pd.DataFrame]:
    """Serving's shadow rows of this pair in the lookback (`<lake>/shadow/<model>/`), if any."""
    conn, key = config.data.aws_conn_id, config.features.entity_key
    root = f"<lake>/shadow/{config.name}"
    frames = []
    try:  # serving's dataset is extra evidence: whatever is wrong with it never stops monitoring
        root, files = _days(config, "shadow", day, r"[^/]+\.parquet")
        for past, names in files.items():
            for index, name in enumerate(names):
                local = storage.local_path(
                    storage.join(root, name), work / "shadow" / past / str(index), conn
                )
                rows = pd.read_parquet(local)
                entity = key if key in rows.columns else SHADOW_ENTITY
                rows = rows[(rows["champion_version"].astype(str) == champion)]
                rows = rows[rows["challenger_version"].astype(str) == challenger]
                # A record without an entity id cannot meet its label.
                rows = rows.dropna(subset=[*_PAIR, entity]).rename(columns={entity: key})
                frames.append(_pairs(rows, key, past, "serving"))
    except Exception as exc:
        notes.append(f"shadow dataset {root} not read: {faults.describe(exc)}")
        return []
    return frames


def _pairs(rows: pd.DataFrame, key: str, day: str, source: str) -> pd.DataFrame:
    """The columns the comparison needs, the entity id as text so batch, serving and labels join."""
    return pd.DataFrame(
        {
            key: rows[key].astype(str).to_numpy(),
            _PAIR[0]: rows[_PAIR[0]].to_numpy(dtype=float),
            _PAIR[1]: rows[_PAIR[1]].to_numpy(dtype=float),
            "day": day,
            "source": source,
        }
    )


def challenger_section(
    config: ModelConfig,
    manifest: dict[str, Any],
    predictions: pd.DataFrame,
    labels: pd.DataFrame | None,
    day: str,
    work: Path,
) -> dict[str, Any] | None:
    """The summary's `challenger` section for a window whose manifest names a challenger, else None.

    One row per entity (its newest score; batch before serving on one day), labelled, over the
    window and the LOOKBACK_DAYS - 1 days before it, for the window's champion and challenger.
    """
    shadow = manifest.get("challenger")
    if not shadow or shadow.get("version") is None:
        return None
    key, champion, challenger = (
        config.features.entity_key,
        str(manifest["model_version"]),
        str(shadow["version"]),
    )
    notes: list[str] = []
    if shadow.get("scored") and "challenger_probability" in predictions.columns:
        current = predictions.rename(columns={"probability": _PAIR[0]})
        frames = [_pairs(current, key, day, "batch")]
    else:
        frames = []
        notes.append(f"this window did not score it: {shadow.get('left_out')}")
    frames += _earlier_batch(config, day, champion, challenger, work, notes)
    frames += _shadow_rows(config, day, champion, challenger, work, notes)
    rows = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[key, *_PAIR, "day", "source"])
    )
    rows = rows.sort_values(["day", "source"], ascending=[False, True], kind="stable")
    rows = rows.drop_duplicates(subset=[key], keep="first")
    if labels is not None:
        keyed = pd.DataFrame({key: labels[key].astype(str).to_numpy(), "y": labels["y"].to_numpy()})
        rows = rows.merge(keyed, on=key, how="inner")
    else:
        rows = rows.iloc[0:0].assign(y=pd.Series(dtype="int64"))
        notes.append("no labels yet")
    result = compare(
        rows["y"].to_numpy(),
        rows[_PAIR[0]].to_numpy(),
        rows[_PAIR[1]].to_numpy(),
        config.promotion.shadow_min_labelled,
        config.gate.bootstrap_rounds,
    )
    return {
        "version": challenger,
        "champion_version": champion,
        **result,
        "windows": sorted(rows["day"].unique().tolist()),
        "since": since(day),
        "rows_by_source": {str(k): int(v) for k, v in rows["source"].value_counts().items()},
        "notes": notes,
    }


def describe(section: dict[str, Any]) -> str:
    """One line for a log or an email: verdict, rows, both AUCs and the interval."""

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    interval = section.get("interval")
    band = f", {section['confidence']:.0%} CI [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""
    diff = section.get("auc_diff")
    return (
        f"challenger version {section['version']} {section['verdict']} against champion "
        f"{section['champion_version']} on {section['labelled_rows']:,} labelled rows "
        f"(min {section['min_labelled']:,}): AUC {fmt(section['challenger_auc'])} vs "
        f"{fmt(section['champion_auc'])}, difference {'n/a' if diff is None else f'{diff:+.3f}'}{band}"
    )
