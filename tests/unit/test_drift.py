"""Drift effect sizes and the alert decision, on data of known shift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from tabular_mlops.config import MonitoringSpec
from tabular_mlops.drift import (
    categorical_psi,
    column_drift,
    column_importance,
    numeric_psi,
    weighted_drift_share,
)
from tabular_mlops.monitoring import decide_alert

RNG = np.random.default_rng(0)


def test_numeric_psi_is_near_zero_for_the_same_distribution_and_grows_with_the_shift() -> None:
    reference = RNG.normal(size=200_000)
    same = numeric_psi(reference, RNG.normal(size=200_000), bins=10)
    small = numeric_psi(reference, RNG.normal(0.1, 1, size=200_000), bins=10)
    large = numeric_psi(reference, RNG.normal(0.5, 1, size=200_000), bins=10)
    assert same < 0.001 < small < 0.05 < 0.2 < large


def test_psi_does_not_flag_a_tiny_shift_on_a_huge_window() -> None:
    # A p-value test would call this significant at this size; the effect is negligible.
    assert numeric_psi(RNG.normal(size=300_000), RNG.normal(0.02, 1, size=300_000), bins=10) < 0.01


def test_missing_values_and_new_categories_count_as_drift() -> None:
    reference = RNG.normal(size=10_000)
    current = reference.copy()
    current[:3_000] = np.nan
    assert numeric_psi(reference, current, bins=10) > 0.2
    ref = pd.Series(RNG.choice(["a", "b"], 10_000))
    cur = pd.Series(RNG.choice(["a", "b", "c"], 10_000, p=[0.4, 0.3, 0.3]))
    assert categorical_psi(ref, ref.sample(frac=1, random_state=0)) < 0.001
    assert categorical_psi(ref, cur) > 0.2


def test_weighted_share_follows_the_importance_of_the_drifted_features() -> None:
    reference = pd.DataFrame({"big": RNG.normal(size=5_000), "small": RNG.normal(size=5_000)})
    current = reference.assign(small=reference["small"] + 2)
    drifts = column_drift(reference, current, ["big", "small"], 0.2, 10, {"big": 0.9, "small": 0.1})
    assert [d.column for d in drifts if d.drifted] == ["small"]
    assert weighted_drift_share(drifts) == pytest.approx(0.1)


def test_importance_of_one_hot_columns_is_summed_back_to_their_category() -> None:
    encoded = pd.Series({"Contract_Month-to-month": 3.0, "Contract_Two year": 1.0, "tenure": 4.0})
    shares = column_importance(encoded, ["Contract"], ["tenure"])
    assert shares == {"Contract": 0.5, "tenure": 0.5}


def _state(breach: bool, sent_at: datetime | None = None, severity: float = 0.5, phase: str = "sent") -> dict:
    return {
        "breach": breach,
        "severity": severity,
        "alert_state": phase if sent_at else None,
        "alert_at": sent_at.isoformat() if sent_at else None,
    }


def test_alert_waits_for_consecutive_breaches_and_sends_once_per_window() -> None:
    spec = MonitoringSpec(consecutive_windows=2, cooldown_hours=0)
    now = datetime(2026, 11, 23, tzinfo=UTC)
    states = {"2026-11-20": _state(False), "2026-11-21": _state(True)}
    assert decide_alert(states, "2026-11-21", spec, now)[0] is False
    states["2026-11-22"] = _state(True)
    assert decide_alert(states, "2026-11-22", spec, now) == (True, "breach")
    states["2026-11-22"] = _state(True, sent_at=now)
    assert decide_alert(states, "2026-11-22", spec, now)[0] is False


def test_cool_down_keeps_quiet_unless_the_breach_gets_worse() -> None:
    spec = MonitoringSpec(cooldown_hours=24)
    sent = datetime(2026, 11, 22, 6, tzinfo=UTC)
    states = {
        "2026-11-22": _state(True, sent_at=sent, severity=0.4),
        "2026-11-23": _state(True, severity=0.4),
    }
    quiet, why = decide_alert(states, "2026-11-23", spec, sent + timedelta(hours=12))
    assert quiet is False and why.startswith("cool-down")
    states["2026-11-23"] = _state(True, severity=0.7)
    assert decide_alert(states, "2026-11-23", spec, sent + timedelta(hours=12)) == (True, "breach")
    states["2026-11-23"] = _state(True, severity=0.4)
    assert decide_alert(states, "2026-11-23", spec, sent + timedelta(hours=25)) == (True, "breach")


def test_an_alert_recorded_as_sending_is_due_again_and_one_recorded_as_sent_is_not() -> None:
    spec = MonitoringSpec(consecutive_windows=1, cooldown_hours=24)
    at = datetime(2026, 11, 22, 6, tzinfo=UTC)
    # A crash after the intent was recorded: the window is due again, to be sent with the same
    # Message-ID; once "sent" is recorded it is done.
    states = {"2026-11-22": _state(True, sent_at=at, phase="sending")}
    due, why = decide_alert(states, "2026-11-22", spec, at + timedelta(minutes=5))
    assert due is True and why.startswith("resend")
    states["2026-11-22"] = _state(True, sent_at=at, phase="sent")
    assert decide_alert(states, "2026-11-22", spec, at + timedelta(minutes=5))[0] is False
    # A tag written before alert_state existed still counts as sent.
    states["2026-11-22"] = {"breach": True, "severity": 0.5, "alert_sent": True, "alert_at": at.isoformat()}
    assert decide_alert(states, "2026-11-22", spec, at)[0] is False


def test_the_daily_budget_counts_alerts_sent_that_utc_day() -> None:
    spec = MonitoringSpec(cooldown_hours=0, alert_budget_per_day=2)
    morning = datetime(2026, 11, 30, 6, tzinfo=UTC)
    states = {
        "2026-11-20": _state(True, sent_at=morning - timedelta(hours=7)),  # the day before: not counted
        "2026-11-21": _state(True, sent_at=morning),
        "2026-11-22": _state(True, sent_at=morning, phase="sending"),  # being sent counts
        "2026-11-23": _state(True),
    }
    due, why = decide_alert(states, "2026-11-23", spec, morning + timedelta(hours=1))
    assert due is False and why == "the daily alert budget (2) is spent for 2026-11-30"
    assert decide_alert(states, "2026-11-23", spec, morning + timedelta(days=1))[0] is True


def test_a_quality_breach_that_deepens_alerts_during_the_cool_down() -> None:
    # Severity is how many times over its limit the worst check is, for quality checks too: an AUC
    # drop of 0.07 against a limit of 0.05 is 1.4, worse than a drift share at 1.2 times its limit.
    spec = MonitoringSpec(cooldown_hours=24)
    sent = datetime(2026, 11, 22, 6, tzinfo=UTC)
    states = {
        "2026-11-22": _state(True, sent_at=sent, severity=1.2),
        "2026-11-23": _state(True, severity=1.4),
    }
    assert decide_alert(states, "2026-11-23", spec, sent + timedelta(hours=12)) == (True, "breach")
