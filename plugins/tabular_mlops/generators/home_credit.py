"""Deterministic generator of the eight Home Credit Default Risk tables.

Each applicant carries four hidden traits: a general credit risk and three behaviours (with the
credit bureau, with earlier Home Credit loans, with credit cards). The visible columns of every
table are noisy readings of those traits, and TARGET depends on all four plus a few application
fields, so a model needs features from several tables to reach the real ~0.78 ROC AUC.

The real quirks are kept: the 365243 day sentinel (pensioners' DAYS_EMPLOYED and five date columns
of previous_application), 'XNA'/'XAP' placeholders, a few CODE_GENDER 'XNA', 50-70 % empty building
columns, a ~117 million income outlier, and applicants with no bureau or no previous history.

Applicants are generated in fixed-size chunks, each from its own seeded stream, and every chunk's
rows are appended to the eight CSVs before the next one is built, so memory stays bounded at the
full 356k applicants / 27M bureau_balance rows. Files are written in a temporary folder and moved
into place only when all eight are complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tabular_mlops.generators import home_credit_values as hv

CHUNK_APPLICANTS = 20_000
FIRST_SK_ID_CURR = 100_001
FIRST_SK_ID_BUREAU = 5_000_000
FIRST_SK_ID_PREV = 1_000_000
MAX_HISTORY_MONTHS = 96
DAYS_PER_MONTH = 30.4375
OUTLIER_INCOME = 117_000_000.0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, mapping a logit to a probability."""
    return 1.0 / (1.0 + np.exp(-x))


def _pick(rng: np.random.Generator, shares: dict[str, float], n: int) -> np.ndarray:
    """Draw n values with the given (unnormalised) shares."""
    values = np.array(list(shares), dtype=object)
    p = np.array(list(shares.values()), dtype=float)
    return rng.choice(values, size=n, p=p / p.sum())


def _money(x: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Round amounts to the nearest multiple of step, as the real files' prices are."""
    return np.round(np.asarray(x, dtype=float) / step) * step


def _blank(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Float copy of values with NaN where mask holds."""
    out = np.asarray(values, dtype=float).copy()
    out[mask] = np.nan
    return out


def _blank_text(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Object copy of values with None (an empty CSV field) where mask holds."""
    out = np.asarray(values, dtype=object).copy()
    out[mask] = None
    return out


@dataclass
class Applicants:
    """Hidden traits of one chunk of applicants, shared by the tables generated from them."""

    ids: np.ndarray
    is_test: np.ndarray
    risk: np.ndarray  # general credit risk
    bureau: np.ndarray  # behaviour with other lenders
    repay: np.ndarray  # behaviour with earlier Home Credit loans
    card: np.ndarray  # behaviour with credit cards


@dataclass
class Counters:
    """Running id counters, so ids stay unique across chunks."""

    bureau: int = FIRST_SK_ID_BUREAU
    prev: int = FIRST_SK_ID_PREV


def application_test_rows(rows: int) -> int:
    """Rows of application_test for `rows` training applicants, in the real 48,744 : 307,511 ratio."""
    return round(rows * hv.TEST_SHARE)


def _applicant_block(start: int, stop: int, total: int, test_total: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids and test flags of global applicants [start, stop): test applicants spread evenly among all."""
    index = np.arange(start, stop)
    is_test = (index + 1) * test_total // total > index * test_total // total
    return FIRST_SK_ID_CURR + index, is_test


def _traits(rng: np.random.Generator, ids: np.ndarray, is_test: np.ndarray) -> Applicants:
    """Draw the four hidden traits of each applicant, standard normal and independent."""
    n = len(ids)
    return Applicants(
        ids=ids,
        is_test=is_test,
        risk=rng.normal(size=n),
        bureau=rng.normal(size=n),
        repay=rng.normal(size=n),
        card=rng.normal(size=n),
    )


# ---------------------------------------------------------------------------------------------
# application_train / application_test
# ---------------------------------------------------------------------------------------------


def build_applications(rng: np.random.Generator, who: Applicants, drift: bool) -> pd.DataFrame:
    """The application row of every applicant in the chunk, TARGET left to `assign_target`."""
    # Each part draws from rng in turn: calling them in another order would change every file.
    col: dict[str, np.ndarray] = {"SK_ID_CURR": who.ids}
    col.update(_contract_and_owner_columns(rng, who.risk, drift))
    col.update(_amount_columns(rng, col["NAME_CONTRACT_TYPE"], drift))
    life, age_years, no_job = _life_columns(rng, who.risk, col["CNT_CHILDREN"])
    col.update(life)
    col.update(_car_and_contact_columns(rng, col["FLAG_OWN_CAR"] == "Y", no_job))
    col.update(_work_and_region_columns(rng, who.risk, col["REGION_POPULATION_RELATIVE"], no_job))
    col.update(_external_score_columns(rng, who.risk, age_years, drift))
    col.update(_building_columns(rng, len(who.ids)))
    col.update(_social_circle_columns(rng, who.risk))
    col.update(_phone_and_document_columns(rng, len(who.ids)))
    col.update(_bureau_request_columns(rng, who.bureau))
    frame = pd.DataFrame(col)
    frame.insert(1, "TARGET", 0)
    return frame[hv.APPLICATION_COLUMNS]


def _contract_and_owner_columns(
    rng: np.random.Generator, r: np.ndarray, drift: bool
) -> dict[str, np.ndarray]:
    """Contract type, gender, car and realty ownership and number of children."""
    n = len(r)
    cash_share = 0.905 if not drift else 0.80
    return {
        "NAME_CONTRACT_TYPE": np.where(rng.random(n) < cash_share, "Cash loans", "Revolving loans"),
        "CODE_GENDER": np.where(rng.random(n) < 0.342 + 0.05 * (r > 0.5), "M", "F").astype(object),
        "FLAG_OWN_CAR": np.where(rng.random(n) < 0.34, "Y", "N"),
        "FLAG_OWN_REALTY": np.where(rng.random(n) < 0.69, "Y", "N"),
        "CNT_CHILDREN": rng.choice([0, 1, 2, 3, 4, 5], size=n, p=[0.70, 0.199, 0.087, 0.012, 0.0015, 0.0005]),
    }


def _amount_columns(rng: np.random.Generator, contract: np.ndarray, drift: bool) -> dict[str, np.ndarray]:
    """Income, the loan's credit, annuity and goods price, and who came along to apply."""
    n = len(contract)
    income = np.exp(rng.normal(np.log(147_150.0 if not drift else 180_000.0), 0.48, n))
    round_income = rng.random(n) < 0.85
    income = np.where(round_income, np.maximum(_money(income, 2250.0), 25_650.0), np.round(income, 3))
    goods = np.maximum(_money(income * np.exp(rng.normal(np.log(2.9), 0.55, n)), 4500.0), 40_500.0)
    revolving = contract == "Revolving loans"
    goods = np.where(revolving, np.maximum(_money(goods / 3, 22_500.0), 45_000.0), goods)
    credit = np.where(revolving, goods, _money(goods * rng.uniform(1.0, 1.22, n)))
    term = rng.choice([12, 18, 24, 30, 36, 48, 60], size=n, p=[0.12, 0.10, 0.2, 0.1, 0.2, 0.14, 0.14])
    annuity = np.where(revolving, credit * 0.05, _money(credit * (1 + 0.015 * term) / term))
    return {
        "AMT_INCOME_TOTAL": income,
        "AMT_CREDIT": credit,
        "AMT_ANNUITY": _blank(annuity, rng.random(n) < 4e-5),
        "AMT_GOODS_PRICE": _blank(goods, revolving & (rng.random(n) < 0.01)),
        "NAME_TYPE_SUITE": _blank_text(_pick(rng, hv.NAME_TYPE_SUITE, n), rng.random(n) < 0.0042),
    }


def _life_columns(
    rng: np.random.Generator, r: np.ndarray, children: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Age, income type, education, family and home with their DAYS_* dates; also age_years and no_job.

    no_job marks pensioners and the unemployed, who have no employer and the 365243 DAYS_EMPLOYED.
    """
    n = len(r)
    age_years = np.clip(43.5 - 3.5 * r + rng.normal(0, 11.0, n), 20.6, 69.0)
    pensioner = rng.random(n) < np.where(age_years >= 55, 0.9, 0.05)
    unemployed = ~pensioner & (rng.random(n) < 0.0004)
    no_job = pensioner | unemployed
    working_type = _pick(rng, hv.WORKING_INCOME_TYPES, n)
    education = _pick(rng, hv.EDUCATION, n)
    # Lower-risk applicants are more often graduates.
    upgrade = (education == "Secondary / secondary special") & (rng.random(n) < 0.12 * (r < -0.5))
    family = _pick(rng, hv.FAMILY_STATUS, n)
    col: dict[str, np.ndarray] = {
        "NAME_INCOME_TYPE": np.where(
            pensioner, "Pensioner", np.where(unemployed, "Unemployed", working_type)
        ),
        "NAME_EDUCATION_TYPE": np.where(upgrade, "Higher education", education),
        "NAME_FAMILY_STATUS": family,
        "NAME_HOUSING_TYPE": _pick(rng, hv.HOUSING, n),
        "REGION_POPULATION_RELATIVE": rng.choice(np.array(hv.REGION_POPULATION), size=n),
        "DAYS_BIRTH": -np.round(age_years * 365.25).astype(np.int64),
    }
    employed_years = np.minimum(rng.exponential(6.0, n) * np.exp(-0.25 * r), age_years - 18.5)
    days_employed = -np.round(employed_years * 365.25).astype(np.int64)
    col["DAYS_EMPLOYED"] = np.where(no_job, hv.SENTINEL_DAYS, days_employed)
    col["DAYS_REGISTRATION"] = -np.floor(rng.uniform(0, 1, n) * (age_years - 18) * 365.25)
    col["DAYS_ID_PUBLISH"] = -np.round(rng.uniform(0, 1, n) ** 0.7 * 6500).astype(np.int64)
    couple = np.isin(family, ["Married", "Civil marriage"])
    col["CNT_FAM_MEMBERS"] = (1 + couple + children).astype(float)
    return col, age_years, no_job


def _car_and_contact_columns(
    rng: np.random.Generator, own_car: np.ndarray, no_job: np.ndarray
) -> dict[str, np.ndarray]:
    """The car's age (empty without a car) and the phone and e-mail flags."""
    n = len(own_car)
    return {
        "OWN_CAR_AGE": _blank(np.minimum(np.round(rng.gamma(2.0, 6.0, n)), 91), ~own_car),
        "FLAG_MOBIL": np.ones(n, dtype=np.int64),
        "FLAG_EMP_PHONE": (~no_job).astype(np.int64),
        "FLAG_WORK_PHONE": (rng.random(n) < np.where(no_job, 0.02, 0.25)).astype(np.int64),
        "FLAG_CONT_MOBILE": (rng.random(n) < 0.998).astype(np.int64),
        "FLAG_PHONE": (rng.random(n) < 0.28).astype(np.int64),
        "FLAG_EMAIL": (rng.random(n) < 0.057).astype(np.int64),
    }


def _work_and_region_columns(
    rng: np.random.Generator, r: np.ndarray, region_pop: np.ndarray, no_job: np.ndarray
) -> dict[str, np.ndarray]:
    """Occupation and employer, region ratings, home/work region mismatches and when the form was filed."""
    n = len(r)
    col: dict[str, np.ndarray] = {
        "OCCUPATION_TYPE": _blank_text(_pick(rng, hv.OCCUPATION, n), no_job | (rng.random(n) < 0.16)),
    }
    rating = np.where(region_pop > 0.03, 1, np.where(region_pop < 0.004, 3, 2))
    rating = np.where(rng.random(n) < 0.15, rng.choice([1, 2, 3], size=n, p=[0.1, 0.74, 0.16]), rating)
    col["REGION_RATING_CLIENT"] = rating
    col["REGION_RATING_CLIENT_W_CITY"] = np.where(rng.random(n) < 0.9, rating, np.clip(rating - 1, 1, 3))
    col["WEEKDAY_APPR_PROCESS_START"] = _pick(rng, hv.WEEKDAYS, n)
    col["HOUR_APPR_PROCESS_START"] = np.clip(np.round(rng.normal(12, 3.3, n)), 0, 23).astype(np.int64)
    flag_rates: list[tuple[str, float | np.ndarray]] = [
        ("REG_REGION_NOT_LIVE_REGION", 0.015),
        ("REG_REGION_NOT_WORK_REGION", 0.05),
        ("LIVE_REGION_NOT_WORK_REGION", 0.04),
        ("REG_CITY_NOT_LIVE_CITY", 0.078 + 0.02 * (r > 1)),
        ("REG_CITY_NOT_WORK_CITY", 0.23),
        ("LIVE_CITY_NOT_WORK_CITY", 0.18),
    ]
    for name, rate in flag_rates:
        col[name] = (rng.random(n) < rate).astype(np.int64)
    col["ORGANIZATION_TYPE"] = np.where(no_job, "XNA", _pick(rng, hv.ORGANIZATION, n))
    return col


def _external_score_columns(
    rng: np.random.Generator, r: np.ndarray, age_years: np.ndarray, drift: bool
) -> dict[str, np.ndarray]:
    """EXT_SOURCE_1..3: three noisy readings of the hidden risk; drift makes them shift and blur."""
    n = len(r)
    noise = 0.6 if not drift else 1.0
    shift = 0.0 if not drift else -0.35
    ext = {
        1: _sigmoid(0.1 + shift - 0.75 * r + 0.015 * (age_years - 43) + rng.normal(0, noise, n)),
        2: _sigmoid(0.55 + shift - 0.75 * r + rng.normal(0, noise, n)),
        3: _sigmoid(0.05 + shift - 0.75 * r + rng.normal(0, noise, n)),
    }
    missing = {1: 0.564, 2: 0.0021, 3: 0.198}
    return {f"EXT_SOURCE_{k}": _blank(ext[k], rng.random(n) < missing[k]) for k in (1, 2, 3)}


def _building_columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """The 47 *_AVG/_MODE/_MEDI building columns, missing together for about half the applicants."""
    has_building = rng.random(n) < 0.52
    out: dict[str, np.ndarray] = {}
    for metric in hv.BUILDING_METRICS:
        a, b = hv.BUILDING_SHAPE[metric]
        base = rng.beta(a, b, n)
        present_share = (1 - hv.BUILDING_MISSING[metric]) / 0.52
        missing = ~has_building | (rng.random(n) >= present_share)
        out[f"{metric}_AVG"] = _blank(np.round(base, 4), missing)
        out[f"{metric}_MODE"] = _blank(np.round(np.clip(base * rng.uniform(0.97, 1.05, n), 0, 1), 4), missing)
        out[f"{metric}_MEDI"] = _blank(np.round(np.clip(base * rng.uniform(0.98, 1.02, n), 0, 1), 4), missing)
    out["FONDKAPREMONT_MODE"] = _blank_text(
        _pick(rng, hv.FONDKAPREMONT, n), ~has_building | (rng.random(n) < 0.38)
    )
    out["HOUSETYPE_MODE"] = _blank_text(_pick(rng, hv.HOUSETYPE, n), ~has_building | (rng.random(n) < 0.04))
    total_area = np.round(rng.beta(1.6, 14.0, n), 4)
    out["TOTALAREA_MODE"] = _blank(total_area, ~has_building)
    out["WALLSMATERIAL_MODE"] = _blank_text(
        _pick(rng, hv.WALLSMATERIAL, n), ~has_building | (rng.random(n) < 0.06)
    )
    out["EMERGENCYSTATE_MODE"] = _blank_text(_pick(rng, hv.EMERGENCYSTATE, n), ~has_building)
    return out


def _social_circle_columns(rng: np.random.Generator, r: np.ndarray) -> dict[str, np.ndarray]:
    """Observed and defaulted acquaintances at 30 and 60 days past due, missing together."""
    n = len(r)
    social_missing = rng.random(n) < 0.0033
    obs_30 = rng.poisson(1.42, n).astype(float)
    def_30 = np.minimum(rng.poisson(0.14 * np.exp(0.35 * r)), obs_30).astype(float)
    obs_60 = obs_30 + (rng.random(n) < 0.03)
    def_60 = np.minimum(def_30, np.maximum(def_30 - (rng.random(n) < 0.2), 0))
    return {
        "OBS_30_CNT_SOCIAL_CIRCLE": _blank(obs_30, social_missing),
        "DEF_30_CNT_SOCIAL_CIRCLE": _blank(def_30, social_missing),
        "OBS_60_CNT_SOCIAL_CIRCLE": _blank(obs_60, social_missing),
        "DEF_60_CNT_SOCIAL_CIRCLE": _blank(def_60, social_missing),
    }


def _phone_and_document_columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Days since the last phone change and the twenty FLAG_DOCUMENT_* flags."""
    col: dict[str, np.ndarray] = {
        "DAYS_LAST_PHONE_CHANGE": np.where(
            rng.random(n) < 0.12, 0.0, -np.round(rng.exponential(900, n)).clip(0, 4292)
        ),
    }
    for k, rate in hv.DOCUMENT_RATES.items():
        col[f"FLAG_DOCUMENT_{k}"] = (rng.random(n) < rate).astype(np.int64)
    return col


def _bureau_request_columns(rng: np.random.Generator, bureau: np.ndarray) -> dict[str, np.ndarray]:
    """Credit-bureau enquiries per period; yearly ones grow with the hidden bureau behaviour."""
    n = len(bureau)
    bureau_req_missing = rng.random(n) < 0.135
    col: dict[str, np.ndarray] = {}
    for period, mean in [("HOUR", 0.0064), ("DAY", 0.007), ("WEEK", 0.034), ("MON", 0.27), ("QRT", 0.27)]:
        col[f"AMT_REQ_CREDIT_BUREAU_{period}"] = _blank(
            rng.poisson(mean, n).astype(float), bureau_req_missing
        )
    requests_year = rng.poisson(1.9 * np.exp(0.15 * bureau), n).astype(float)
    col["AMT_REQ_CREDIT_BUREAU_YEAR"] = _blank(requests_year, bureau_req_missing)
    return col


# ---------------------------------------------------------------------------------------------
# bureau / bureau_balance
# ---------------------------------------------------------------------------------------------


def _history_rows(
    rng: np.random.Generator, n: int, share_with: float, extra_mean: float
) -> tuple[np.ndarray, np.ndarray]:
    """Records per applicant (none for 1 - share_with of them, else 1 + Poisson) and each record's owner."""
    has = rng.random(n) < share_with
    counts = np.where(has, 1 + rng.poisson(extra_mean, n), 0)
    return counts, np.repeat(np.arange(n), counts)


@dataclass
class _BureauCredits:
    """Terms, status and dates of one chunk's bureau credits, before any field is blanked."""

    days_credit: np.ndarray
    duration: np.ndarray
    active: np.ndarray
    status: np.ndarray
    credit_type: np.ndarray
    amount: np.ndarray
    end_date: np.ndarray
    end_fact: np.ndarray

    @property
    def closed(self) -> np.ndarray:
        """Credits no longer running: closed, sold or bad debt."""
        return self.status != "Active"


def build_bureau(
    rng: np.random.Generator, who: Applicants, counters: Counters
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Bureau credits and their monthly balances; also the per-applicant overdue share for TARGET."""
    counts, owner = _history_rows(rng, len(who.ids), 0.857, 4.6)
    m = len(owner)
    ids = counters.bureau + np.arange(m)
    counters.bureau += m
    b = who.bureau[owner]
    r = who.risk[owner]
    # Each part draws from rng in turn: calling them in another order would change every file.
    credits = _bureau_credits(rng, b)
    amounts, ever_late = _bureau_amounts(rng, credits, b, r)
    frame = _bureau_frame(rng, who.ids[owner], ids, credits, amounts)
    balance = _bureau_balance(rng, ids, credits, b, r)
    late_share = np.zeros(len(who.ids))
    np.add.at(late_share, owner, ever_late.astype(float))
    return frame, balance, {"bureau_loans": counts.astype(float), "bureau_overdue": late_share}


def _bureau_credits(rng: np.random.Generator, b: np.ndarray) -> _BureauCredits:
    """When each credit opened and ends, whether it still runs, its type and amount."""
    m = len(b)
    days_credit = -rng.integers(1, 2923, m)
    duration = np.round(rng.gamma(2.0, 380.0, m)) + 30
    active = rng.random(m) < _sigmoid(-0.5 + 0.0012 * (days_credit + 700) + 0.25 * b)
    status = np.where(active, "Active", "Closed").astype(object)
    status[rng.random(m) < 0.004] = "Sold"
    status[rng.random(m) < 0.00002] = "Bad debt"
    closed = status != "Active"
    credit_type = _pick(rng, hv.CREDIT_TYPE, m)
    card = credit_type == "Credit card"
    amount = _money(np.exp(rng.normal(np.log(125_000), 1.1, m)), 0.5)
    amount[rng.random(m) < 0.03] = 0.0
    end_date = days_credit + np.where(card, rng.integers(1000, 30000, m), duration)
    end_fact = np.where(closed, np.minimum(days_credit + duration * rng.uniform(0.5, 1.0, m), -1), np.nan)
    return _BureauCredits(days_credit, duration, active, status, credit_type, amount, end_date, end_fact)


def _bureau_amounts(
    rng: np.random.Generator, credits: _BureauCredits, b: np.ndarray, r: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Overdue days and sums, debt, card limit, last update and annuity; also which credits were ever late."""
    m = len(b)
    amount, active = credits.amount, credits.active
    overdue_prob = _sigmoid(-3.3 + 1.3 * b + 0.35 * r)
    ever_overdue = rng.random(m) < overdue_prob * 3
    now_overdue = active & (rng.random(m) < overdue_prob)
    day_overdue = np.where(now_overdue, np.round(rng.exponential(40.0, m)) + 1, 0).astype(np.int64)
    sum_overdue = np.where(now_overdue, _money(amount * rng.uniform(0.01, 0.2, m), 0.005), 0.0)
    max_overdue = np.where(ever_overdue | now_overdue, _money(amount * rng.uniform(0.01, 0.3, m), 0.005), 0.0)
    debt = np.where(active, _money(amount * np.clip(rng.beta(2, 2, m) * np.exp(0.3 * b), 0, 1.2), 0.005), 0.0)
    limit = np.where(
        credits.credit_type == "Credit card", _money(amount * rng.uniform(0, 0.8, m), 0.005), 0.0
    )
    update = np.where(
        credits.closed, np.minimum(credits.end_fact + rng.integers(0, 60, m), -1), -rng.integers(0, 60, m)
    )
    amounts = {
        "CREDIT_DAY_OVERDUE": day_overdue,
        "AMT_CREDIT_MAX_OVERDUE": max_overdue,
        "AMT_CREDIT_SUM_DEBT": debt,
        "AMT_CREDIT_SUM_LIMIT": limit,
        "AMT_CREDIT_SUM_OVERDUE": sum_overdue,
        "DAYS_CREDIT_UPDATE": update.astype(np.int64),
        "AMT_ANNUITY": _money(amount / np.maximum(credits.duration / 30, 3), 0.005),
    }
    return amounts, ever_overdue | now_overdue


def _bureau_frame(
    rng: np.random.Generator,
    curr_ids: np.ndarray,
    ids: np.ndarray,
    credits: _BureauCredits,
    amounts: dict[str, np.ndarray],
) -> pd.DataFrame:
    """The bureau table, with the currency drawn and the real share of empty fields blanked."""
    m = len(ids)
    return pd.DataFrame(
        {
            "SK_ID_CURR": curr_ids,
            "SK_ID_BUREAU": ids,
            "CREDIT_ACTIVE": credits.status,
            "CREDIT_CURRENCY": _pick(rng, hv.CREDIT_CURRENCY, m),
            "DAYS_CREDIT": credits.days_credit,
            "CREDIT_DAY_OVERDUE": amounts["CREDIT_DAY_OVERDUE"],
            "DAYS_CREDIT_ENDDATE": _blank(credits.end_date, rng.random(m) < 0.06),
            "DAYS_ENDDATE_FACT": credits.end_fact,
            "AMT_CREDIT_MAX_OVERDUE": _blank(amounts["AMT_CREDIT_MAX_OVERDUE"], rng.random(m) < 0.65),
            "CNT_CREDIT_PROLONG": (rng.random(m) < 0.005).astype(np.int64),
            "AMT_CREDIT_SUM": credits.amount,
            "AMT_CREDIT_SUM_DEBT": _blank(amounts["AMT_CREDIT_SUM_DEBT"], rng.random(m) < 0.15),
            "AMT_CREDIT_SUM_LIMIT": _blank(amounts["AMT_CREDIT_SUM_LIMIT"], rng.random(m) < 0.34),
            "AMT_CREDIT_SUM_OVERDUE": amounts["AMT_CREDIT_SUM_OVERDUE"],
            "CREDIT_TYPE": credits.credit_type,
            "DAYS_CREDIT_UPDATE": amounts["DAYS_CREDIT_UPDATE"],
            "AMT_ANNUITY": _blank(amounts["AMT_ANNUITY"], rng.random(m) < 0.71),
        }
    )[hv.BUREAU_COLUMNS]


def _bureau_balance(
    rng: np.random.Generator, ids: np.ndarray, credits: _BureauCredits, b: np.ndarray, r: np.ndarray
) -> pd.DataFrame:
    """bureau_balance: monthly status of a third of the credits, from now back to the opening month."""
    m = len(ids)
    # About a third of bureau credits come with a monthly status history (as in the real file).
    has_balance = rng.random(m) < 0.34
    months = (
        np.minimum(np.ceil(-credits.days_credit / DAYS_PER_MONTH).astype(np.int64), MAX_HISTORY_MONTHS) + 1
    )
    months = np.where(has_balance, months, 0)
    balance_owner = np.repeat(np.arange(m), months)
    age = _within_group_index(months)  # 0 = current month, counting back
    month_balance = -age
    closed_month = np.where(
        credits.closed, np.floor(np.nan_to_num(credits.end_fact, nan=0.0) / DAYS_PER_MONTH), -10_000
    )
    late = rng.random(len(balance_owner)) < _sigmoid(-4.3 + 1.2 * b + 0.4 * r)[balance_owner]
    bucket = rng.choice(
        np.array(["1", "2", "3", "4", "5"]), size=len(balance_owner), p=[0.8, 0.1, 0.04, 0.02, 0.04]
    )
    state = np.where(late, bucket, "0").astype(object)
    unknown_loan = (rng.random(m) < 0.15)[balance_owner]
    state[unknown_loan | (rng.random(len(balance_owner)) < 0.05)] = "X"
    state[month_balance > closed_month[balance_owner]] = "C"
    return pd.DataFrame(
        {"SK_ID_BUREAU": ids[balance_owner], "MONTHS_BALANCE": month_balance, "STATUS": state}
    )


def _within_group_index(lengths: np.ndarray) -> np.ndarray:
    """For groups of the given lengths laid end to end, each row's position inside its group."""
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total) - starts


# ---------------------------------------------------------------------------------------------
# previous_application and the three tables that follow its approved loans
# ---------------------------------------------------------------------------------------------


@dataclass
class PreviousLoans:
    """The approved previous loans the POS, installments and card tables are built from."""

    prev_ids: np.ndarray
    curr_ids: np.ndarray
    owner: np.ndarray  # index into the chunk's applicants
    contract: np.ndarray
    annuity: np.ndarray
    credit: np.ndarray
    cnt_payment: np.ndarray
    days_decision: np.ndarray
    first_due: np.ndarray


@dataclass
class _PreviousKinds:
    """Contract type and decision of one chunk's previous applications, as masks the parts share."""

    contract: np.ndarray
    status: np.ndarray
    cash: np.ndarray
    consumer: np.ndarray
    revolving: np.ndarray
    refused: np.ndarray
    canceled: np.ndarray
    unused: np.ndarray

    @property
    def approved(self) -> np.ndarray:
        """Applications that became a loan; only these have dates and follow-up tables."""
        return self.status == "Approved"


@dataclass
class _PreviousAmounts:
    """Amounts, terms and decision day of the previous applications, before any field is blanked."""

    application: np.ndarray
    credit: np.ndarray
    cnt_payment: np.ndarray
    annuity: np.ndarray
    no_terms: np.ndarray  # canceled or zero-amount applications carry no annuity or term
    down_payment: np.ndarray
    goods: np.ndarray
    days_decision: np.ndarray


def build_previous(
    rng: np.random.Generator, who: Applicants, counters: Counters
) -> tuple[pd.DataFrame, PreviousLoans, dict[str, np.ndarray]]:
    """Earlier Home Credit applications, with the real XNA/XAP and 365243 conventions."""
    counts, owner = _history_rows(rng, len(who.ids), 0.946, 3.95)
    m = len(owner)
    ids = counters.prev + np.arange(m)
    counters.prev += m
    # Each part draws from rng in turn: calling them in another order would change every file.
    kinds = _previous_kinds(rng, who.repay[owner], who.risk[owner])
    amounts = _previous_amounts(rng, kinds)
    products = _previous_product_columns(rng, owner, kinds, amounts.no_terms)
    dates, first_due = _previous_date_columns(rng, kinds, amounts)
    details = _previous_detail_columns(rng, kinds, amounts.credit)
    frame = pd.DataFrame(
        {
            "SK_ID_PREV": ids,
            "SK_ID_CURR": who.ids[owner],
            "NAME_CONTRACT_TYPE": kinds.contract,
            "NAME_CONTRACT_STATUS": kinds.status,
            "AMT_ANNUITY": _blank(np.round(amounts.annuity, 3), amounts.no_terms),
            "AMT_APPLICATION": amounts.application,
            "AMT_DOWN_PAYMENT": amounts.down_payment,
            "AMT_GOODS_PRICE": amounts.goods,
            "RATE_DOWN_PAYMENT": amounts.down_payment
            / np.where(amounts.application > 0, amounts.application, np.nan),
            "DAYS_DECISION": amounts.days_decision,
            "CNT_PAYMENT": _blank(amounts.cnt_payment, amounts.no_terms),
            **products,
            **dates,
            **details,
        }
    )[hv.PREVIOUS_COLUMNS]
    keep = kinds.approved & ((amounts.cnt_payment > 0) | kinds.revolving)
    loans = PreviousLoans(
        prev_ids=ids[keep],
        curr_ids=who.ids[owner][keep],
        owner=owner[keep],
        contract=kinds.contract[keep],
        annuity=np.round(amounts.annuity[keep], 3),
        credit=amounts.credit[keep],
        cnt_payment=amounts.cnt_payment[keep],
        days_decision=amounts.days_decision[keep],
        first_due=first_due[keep],
    )
    refused_count = np.zeros(len(who.ids))
    np.add.at(refused_count, owner, kinds.refused.astype(float))
    return frame, loans, {"prev_count": counts.astype(float), "prev_refused": refused_count}


def _previous_kinds(rng: np.random.Generator, rp: np.ndarray, r: np.ndarray) -> _PreviousKinds:
    """Contract type and the decision: refused (risky repayers more often), canceled, unused or approved."""
    m = len(rp)
    contract = _pick(rng, hv.PREV_CONTRACT_TYPE, m)
    cash = contract == "Cash loans"
    consumer = contract == "Consumer loans"
    revolving = contract == "Revolving loans"
    refused = rng.random(m) < _sigmoid(-1.8 + 0.8 * rp + 0.45 * r)
    canceled = ~refused & (rng.random(m) < np.where(cash, 0.33, 0.08))
    unused = ~refused & ~canceled & consumer & (rng.random(m) < 0.035)
    status = np.select([refused, canceled, unused], ["Refused", "Canceled", "Unused offer"], "Approved")
    return _PreviousKinds(contract, status, cash, consumer, revolving, refused, canceled, unused)


def _previous_amounts(rng: np.random.Generator, kinds: _PreviousKinds) -> _PreviousAmounts:
    """Amount asked and granted, number of payments, annuity, down payment, goods price, decision day."""
    m = len(kinds.contract)
    cash, consumer, revolving, canceled = kinds.cash, kinds.consumer, kinds.revolving, kinds.canceled
    application = _money(np.exp(rng.normal(np.log(110_000), 0.95, m)), 4.5)
    application = np.where(revolving, _money(application / 2, 22_500.0), application)
    application = np.where(canceled & cash & (rng.random(m) < 0.8), 0.0, application)
    credit = np.where(consumer, _money(application * rng.uniform(0.9, 1.15, m), 0.5), application)
    credit = np.where(cash & (application > 0), _money(application * rng.uniform(1.0, 1.2, m), 0.5), credit)
    cnt_payment = np.select(
        [consumer, cash],
        [rng.choice([6, 8, 10, 12, 18, 24], size=m), rng.choice([12, 18, 24, 36, 48, 60], size=m)],
        0,
    ).astype(float)
    annuity = np.where(
        cnt_payment > 0, credit * (1 + 0.02 * cnt_payment) / np.maximum(cnt_payment, 1), credit * 0.05
    )
    down_payment = np.where(
        consumer & (rng.random(m) < 0.6), _money(application * rng.beta(1, 8, m), 0.5), np.nan
    )
    goods = np.where(consumer | (cash & (rng.random(m) < 0.55)), application, np.nan)
    goods = np.where(application == 0, np.nan, goods)
    days_decision = -rng.integers(1, 2923, m)
    no_terms = canceled | (application == 0)
    return _PreviousAmounts(
        application, credit, cnt_payment, annuity, no_terms, down_payment, goods, days_decision
    )


def _previous_product_columns(
    rng: np.random.Generator, owner: np.ndarray, kinds: _PreviousKinds, no_terms: np.ndarray
) -> dict[str, np.ndarray]:
    """Loan purpose, reject reason, new or repeat client, portfolio, yield group and product."""
    m = len(owner)
    cash, consumer, revolving = kinds.cash, kinds.consumer, kinds.revolving
    purpose = np.where(cash, _pick(rng, hv.CASH_LOAN_PURPOSE, m), "XAP")
    reject = np.where(kinds.refused, _pick(rng, hv.REJECT_REASON, m), np.where(kinds.unused, "CLIENT", "XAP"))
    first_of_applicant = np.r_[True, owner[1:] != owner[:-1]] if m else np.zeros(0, dtype=bool)
    client = np.where(first_of_applicant, "New", "Repeater").astype(object)
    client[~first_of_applicant & (rng.random(m) < 0.09)] = "Refreshed"
    client[rng.random(m) < 0.001] = "XNA"
    portfolio = np.select([consumer, cash, revolving], ["POS", "Cash", "Cards"], "XNA").astype(object)
    portfolio[kinds.canceled & (rng.random(m) < 0.9)] = "XNA"
    portfolio[consumer & (rng.random(m) < 0.0004)] = "Cars"
    yield_group = np.where(revolving | no_terms, "XNA", _pick(rng, hv.YIELD_GROUP, m))
    product_type = np.where(cash, np.where(rng.random(m) < 0.6, "x-sell", "walk-in"), "XNA")
    return {
        "NAME_CASH_LOAN_PURPOSE": purpose,
        "CODE_REJECT_REASON": reject,
        "NAME_CLIENT_TYPE": client,
        "NAME_PORTFOLIO": portfolio,
        "NAME_PRODUCT_TYPE": product_type,
        "NAME_YIELD_GROUP": yield_group,
        "PRODUCT_COMBINATION": _product_combination(rng, kinds, yield_group, product_type),
    }


def _product_combination(
    rng: np.random.Generator, kinds: _PreviousKinds, yield_group: np.ndarray, product_type: np.ndarray
) -> np.ndarray:
    """PRODUCT_COMBINATION, spelled as in the real file from the contract, sale channel and yield."""
    m = len(kinds.contract)
    product = np.where(
        kinds.cash,
        np.where(
            yield_group == "XNA",
            "Cash",
            np.where(product_type == "x-sell", "Cash X-Sell: ", "Cash Street: ")
            + np.vectorize(_yield_word, otypes=[object])(yield_group),
        ),
        np.where(
            kinds.revolving,
            np.where(rng.random(m) < 0.5, "Card Street", "Card X-Sell"),
            rng.choice(hv.POS_PRODUCTS, m),
        ),
    ).astype(object)
    product[kinds.contract == "XNA"] = None
    return product


def _previous_date_columns(
    rng: np.random.Generator, kinds: _PreviousKinds, amounts: _PreviousAmounts
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The five DAYS_* columns of a loan's life; also the first due day the follow-up tables start from."""
    m = len(kinds.contract)
    revolving, days_decision = kinds.revolving, amounts.days_decision
    # Dates only exist for approved loans; 365243 means "not happened" or "still running".
    first_due = days_decision + rng.integers(10, 40, m)
    last_due_first = first_due + 30 * np.maximum(amounts.cnt_payment - 1, 0)
    running = last_due_first > 0
    first_drawing = np.where(rng.random(m) < 0.96, hv.SENTINEL_DAYS, days_decision + rng.integers(1, 10, m))
    first_due_out = np.where(revolving & (rng.random(m) < 0.5), hv.SENTINEL_DAYS, first_due)
    last_due_first_out = np.where(revolving, hv.SENTINEL_DAYS, last_due_first)
    early = ~running & (rng.random(m) < 0.3)
    last_due = np.where(
        running | revolving, hv.SENTINEL_DAYS, last_due_first - early * rng.integers(0, 300, m)
    )
    termination = np.where(last_due == hv.SENTINEL_DAYS, hv.SENTINEL_DAYS, last_due + rng.integers(0, 10, m))
    not_approved = ~kinds.approved
    dates = {
        "DAYS_FIRST_DRAWING": _blank(first_drawing, not_approved),
        "DAYS_FIRST_DUE": _blank(first_due_out, not_approved),
        "DAYS_LAST_DUE_1ST_VERSION": _blank(last_due_first_out, not_approved),
        "DAYS_LAST_DUE": _blank(last_due, not_approved),
        "DAYS_TERMINATION": _blank(termination, not_approved),
    }
    return dates, first_due


def _previous_detail_columns(
    rng: np.random.Generator, kinds: _PreviousKinds, credit: np.ndarray
) -> dict[str, np.ndarray]:
    """The remaining fields: when and how the application was made, rates, seller, goods, insurance."""
    m = len(kinds.contract)
    consumer = kinds.consumer
    return {
        "AMT_CREDIT": _blank(credit, rng.random(m) < 1e-6),
        "WEEKDAY_APPR_PROCESS_START": _pick(rng, hv.WEEKDAYS, m),
        "HOUR_APPR_PROCESS_START": np.clip(np.round(rng.normal(12.5, 3.3, m)), 0, 23).astype(np.int64),
        "FLAG_LAST_APPL_PER_CONTRACT": np.where(rng.random(m) < 0.995, "Y", "N"),
        "NFLAG_LAST_APPL_IN_DAY": (rng.random(m) < 0.9965).astype(np.int64),
        "RATE_INTEREST_PRIMARY": _blank(rng.uniform(0.03, 1.0, m), rng.random(m) < 0.9964),
        "RATE_INTEREST_PRIVILEGED": _blank(rng.uniform(0.37, 1.0, m), rng.random(m) < 0.9964),
        "NAME_PAYMENT_TYPE": _pick(rng, hv.PAYMENT_TYPE, m),
        "NAME_TYPE_SUITE": _blank_text(_pick(rng, hv.NAME_TYPE_SUITE, m), rng.random(m) < 0.49),
        "NAME_GOODS_CATEGORY": np.where(consumer, _pick(rng, hv.GOODS_CATEGORY, m), "XNA"),
        "CHANNEL_TYPE": _pick(rng, hv.CHANNEL_TYPE, m),
        "SELLERPLACE_AREA": np.where(consumer, rng.integers(0, 4000, m) // rng.integers(1, 40, m), -1),
        "NAME_SELLER_INDUSTRY": np.where(consumer, _pick(rng, hv.SELLER_INDUSTRY, m), "XNA"),
        "NFLAG_INSURED_ON_APPROVAL": _blank(
            (rng.random(m) < 0.33).astype(float), ~kinds.approved | kinds.revolving
        ),
    }


def _yield_word(group: str) -> str:
    """The word PRODUCT_COMBINATION uses for a yield group: both low groups read 'low'."""
    return {"low_normal": "low", "low_action": "low"}.get(group, group)


def build_pos_cash(rng: np.random.Generator, who: Applicants, loans: PreviousLoans) -> pd.DataFrame:
    """Monthly POS / cash-loan balances of approved instalment loans, from the decision month on."""
    # As in the real file, only part of the loans have monthly snapshots (~10M rows at full scale).
    instalment = (loans.contract != "Revolving loans") & (rng.random(len(loans.prev_ids)) < 0.65)
    index = np.flatnonzero(instalment)
    start = np.floor(loans.days_decision[index] / DAYS_PER_MONTH).astype(np.int64)
    start = np.maximum(start, -MAX_HISTORY_MONTHS)
    cnt = loans.cnt_payment[index].astype(np.int64)
    length = np.minimum(-start, cnt + 1)
    owner = np.repeat(index, length)
    step = _within_group_index(length)
    month = np.repeat(start, length) + step
    cnt_rows = loans.cnt_payment[owner]
    future = np.maximum(cnt_rows - step, 0.0)
    rp = who.repay[loans.owner[owner]]
    late = rng.random(len(owner)) < _sigmoid(-4.2 + 1.1 * rp)
    dpd = np.where(late, np.round(rng.exponential(12.0, len(owner))) + 1, 0).astype(np.int64)
    status = np.where(future == 0, "Completed", "Active").astype(object)
    rare = rng.random(len(owner)) < 0.003
    status[rare] = rng.choice(hv.POS_STATUS_RARE, int(rare.sum()))
    missing = rng.random(len(owner)) < 0.0026
    return pd.DataFrame(
        {
            "SK_ID_PREV": loans.prev_ids[owner],
            "SK_ID_CURR": loans.curr_ids[owner],
            "MONTHS_BALANCE": month,
            "CNT_INSTALMENT": _blank(cnt_rows, missing),
            "CNT_INSTALMENT_FUTURE": _blank(future, missing),
            "NAME_CONTRACT_STATUS": status,
            "SK_DPD": dpd,
            "SK_DPD_DEF": np.where(rng.random(len(owner)) < 0.3, dpd, 0).astype(np.int64),
        }
    )[hv.POS_CASH_COLUMNS]


def build_installments(
    rng: np.random.Generator, who: Applicants, loans: PreviousLoans
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Due and paid instalments of approved instalment loans, late or short for risky payers."""
    instalment = (loans.contract != "Revolving loans") & (rng.random(len(loans.prev_ids)) < 0.8)
    index = np.flatnonzero(instalment)
    first_due = loans.first_due[index]
    cnt = loans.cnt_payment[index].astype(np.int64)
    due_so_far = np.clip(np.floor(-first_due / 30).astype(np.int64) + 1, 0, cnt)
    owner = np.repeat(index, due_so_far)
    number = _within_group_index(due_so_far) + 1
    days_instalment = (loans.first_due[owner] + 30 * (number - 1)).astype(float)
    rp = who.repay[loans.owner[owner]]
    r = who.risk[loans.owner[owner]]
    k = len(owner)
    late = rng.random(k) < _sigmoid(-2.6 + 1.4 * rp + 0.3 * r)
    delay = np.where(late, np.round(rng.exponential(14.0, k)) + 1, -np.round(rng.exponential(8.0, k)))
    entry = np.minimum(days_instalment + delay, -1.0)
    amount = loans.annuity[owner]
    short = rng.random(k) < _sigmoid(-3.6 + 0.9 * rp)
    paid = np.where(short, np.round(amount * rng.uniform(0.1, 0.95, k), 3), amount)
    unpaid = rng.random(k) < 0.0002
    version = np.where(rng.random(k) < 0.7, 1.0, rng.choice([0.0, 2.0, 3.0], size=k, p=[0.8, 0.15, 0.05]))
    frame = pd.DataFrame(
        {
            "SK_ID_PREV": loans.prev_ids[owner],
            "SK_ID_CURR": loans.curr_ids[owner],
            "NUM_INSTALMENT_VERSION": version,
            "NUM_INSTALMENT_NUMBER": number.astype(np.int64),
            "DAYS_INSTALMENT": days_instalment,
            "DAYS_ENTRY_PAYMENT": _blank(entry, unpaid),
            "AMT_INSTALMENT": amount,
            "AMT_PAYMENT": _blank(paid, unpaid),
        }
    )[hv.INSTALLMENTS_COLUMNS]
    late_count = np.zeros(len(who.ids))
    np.add.at(late_count, loans.owner[owner], late.astype(float))
    rows = np.zeros(len(who.ids))
    np.add.at(rows, loans.owner[owner], 1.0)
    return frame, {"inst_late_share": np.divide(late_count, rows, out=np.zeros_like(rows), where=rows > 0)}


@dataclass
class _CardMonths:
    """One row per card and month since the card's decision, counted from its oldest month."""

    owner: np.ndarray  # index into the PreviousLoans
    step: np.ndarray  # months since the first row of the card
    month: np.ndarray  # MONTHS_BALANCE
    habit: np.ndarray  # the holder's hidden card behaviour
    risk: np.ndarray  # the holder's hidden general risk


@dataclass
class _CardAmounts:
    """Money of each card month, before any field is blanked; use is the share of the limit drawn."""

    limit: np.ndarray
    use: np.ndarray
    balance: np.ndarray
    draw_atm: np.ndarray
    draw_pos: np.ndarray
    min_regular: np.ndarray
    payment: np.ndarray


def build_credit_card(
    rng: np.random.Generator, who: Applicants, loans: PreviousLoans
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Monthly credit-card balances of approved revolving loans, utilisation driven by card habits."""
    index = np.flatnonzero((loans.contract == "Revolving loans") & (rng.random(len(loans.prev_ids)) < 0.55))
    start = np.maximum(
        np.floor(loans.days_decision[index] / DAYS_PER_MONTH).astype(np.int64), -MAX_HISTORY_MONTHS
    )
    length = -start
    owner = np.repeat(index, length)
    step = _within_group_index(length)
    applicant = loans.owner[owner]
    rows = _CardMonths(owner, step, np.repeat(start, length) + step, who.card[applicant], who.risk[applicant])
    # Each part draws from rng in turn: calling them in another order would change every file.
    amounts = _card_amounts(rng, rows, index, length)
    status, dpd = _card_status(rng, rows, amounts.use)
    frame = _card_frame(rng, loans, rows, amounts, status, dpd)
    has_card = np.zeros(len(who.ids), dtype=bool)
    has_card[loans.owner[index]] = True
    return frame, {"has_card": has_card.astype(float)}


def _card_amounts(
    rng: np.random.Generator, rows: _CardMonths, index: np.ndarray, length: np.ndarray
) -> _CardAmounts:
    """Limit (one per card), balance, ATM and shop drawings and payment of each card month."""
    k = len(rows.owner)
    limit = np.repeat(rng.choice(np.array(hv.CARD_LIMITS), size=len(index)), length).astype(np.int64)
    use = _sigmoid(-0.9 + 1.1 * rows.habit + 0.3 * rows.risk + rng.normal(0, 0.5, k))
    use = np.where(rng.random(k) < 0.35, 0.0, use)
    balance = np.round(limit * use, 3)
    draw_atm = np.where(rng.random(k) < 0.15 * (1 + rows.habit.clip(0)), _money(balance * 0.2, 450.0), 0.0)
    draw_pos = np.where(rng.random(k) < 0.25, np.round(balance * rng.uniform(0, 0.3, k), 3), 0.0)
    min_regular = np.round(balance * 0.05, 3)
    payment = np.where(
        balance > 0, np.maximum(min_regular, np.round(balance * rng.uniform(0, 0.5, k), 3)), 0.0
    )
    return _CardAmounts(limit, use, balance, draw_atm, draw_pos, min_regular, payment)


def _card_status(
    rng: np.random.Generator, rows: _CardMonths, use: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Contract status (mostly Active, unused cards sometimes Completed) and days past due."""
    k = len(rows.owner)
    status = np.full(k, "Active", dtype=object)
    rare = rng.random(k) < 0.004
    status[rare] = rng.choice(hv.CARD_STATUS_RARE, int(rare.sum()))
    status[(use == 0) & (rng.random(k) < 0.05)] = "Completed"
    late = rng.random(k) < _sigmoid(-4.5 + 1.2 * rows.habit)
    dpd = np.where(late, np.round(rng.exponential(10.0, k)) + 1, 0).astype(np.int64)
    return status, dpd


def _card_frame(
    rng: np.random.Generator,
    loans: PreviousLoans,
    rows: _CardMonths,
    money: _CardAmounts,
    status: np.ndarray,
    dpd: np.ndarray,
) -> pd.DataFrame:
    """The credit_card_balance table, with drawing counts and the real share of empty fields."""
    k = len(rows.owner)
    draw_atm, draw_pos, balance = money.draw_atm, money.draw_pos, money.balance
    no_drawing_detail = rng.random(k) < 0.195
    no_regularity = rng.random(k) < 0.08
    return pd.DataFrame(
        {
            "SK_ID_PREV": loans.prev_ids[rows.owner],
            "SK_ID_CURR": loans.curr_ids[rows.owner],
            "MONTHS_BALANCE": rows.month,
            "AMT_BALANCE": balance,
            "AMT_CREDIT_LIMIT_ACTUAL": money.limit,
            "AMT_DRAWINGS_ATM_CURRENT": _blank(draw_atm, no_drawing_detail),
            "AMT_DRAWINGS_CURRENT": draw_atm + draw_pos,
            "AMT_DRAWINGS_OTHER_CURRENT": _blank(np.zeros(k), no_drawing_detail),
            "AMT_DRAWINGS_POS_CURRENT": _blank(draw_pos, no_drawing_detail),
            "AMT_INST_MIN_REGULARITY": _blank(money.min_regular, no_regularity),
            "AMT_PAYMENT_CURRENT": _blank(money.payment, rng.random(k) < 0.2),
            "AMT_PAYMENT_TOTAL_CURRENT": money.payment,
            "AMT_RECEIVABLE_PRINCIPAL": np.round(balance * 0.96, 3),
            "AMT_RECIVABLE": balance,
            "AMT_TOTAL_RECEIVABLE": balance,
            "CNT_DRAWINGS_ATM_CURRENT": _blank(
                (draw_atm > 0) * rng.integers(1, 5, k).astype(float), no_drawing_detail
            ),
            "CNT_DRAWINGS_CURRENT": ((draw_atm > 0) + (draw_pos > 0) * rng.integers(1, 20, k)).astype(
                np.int64
            ),
            "CNT_DRAWINGS_OTHER_CURRENT": _blank(np.zeros(k), no_drawing_detail),
            "CNT_DRAWINGS_POS_CURRENT": _blank(
                (draw_pos > 0) * rng.integers(1, 20, k).astype(float), no_drawing_detail
            ),
            "CNT_INSTALMENT_MATURE_CUM": _blank(rows.step.astype(float), no_regularity),
            "NAME_CONTRACT_STATUS": status,
            "SK_DPD": dpd,
            "SK_DPD_DEF": np.where(rng.random(k) < 0.2, dpd, 0).astype(np.int64),
        }
    )[hv.CREDIT_CARD_COLUMNS]


# ---------------------------------------------------------------------------------------------
# label, chunk assembly, files
# ---------------------------------------------------------------------------------------------


def assign_target(
    rng: np.random.Generator, app: pd.DataFrame, who: Applicants, facts: dict[str, np.ndarray], drift: bool
) -> np.ndarray:
    """Default flag from the hidden traits and application terms; about 8 % ones (more under drift)."""
    credit_income = np.log(app["AMT_CREDIT"].to_numpy() / app["AMT_INCOME_TOTAL"].to_numpy())
    annuity_income = (
        app["AMT_ANNUITY"].fillna(app["AMT_CREDIT"] * 0.05).to_numpy() / app["AMT_INCOME_TOTAL"].to_numpy()
    )
    male = (app["CODE_GENDER"] == "M").to_numpy()
    higher = (app["NAME_EDUCATION_TYPE"] == "Higher education").to_numpy()
    rating3 = (app["REGION_RATING_CLIENT"] == 3).to_numpy()
    has_bureau = facts["bureau_loans"] > 0
    has_prev = facts["prev_count"] > 0
    logit = (
        (-3.4 if not drift else -3.0)
        + (1.2 if not drift else 0.9) * who.risk
        + (0.7 if not drift else 1.0) * who.bureau * has_bureau
        + 0.65 * who.repay * has_prev
        + 0.55 * who.card * facts["has_card"]
        + 0.25 * male
        - 0.30 * higher
        + 0.30 * rating3
        + 0.9 * np.clip(annuity_income - 0.18, -0.2, 0.6)
        + 0.10 * np.clip(credit_income - 1.0, -1, 2)
    )
    return (rng.random(len(logit)) < _sigmoid(logit)).astype(np.int64)


def build_chunk(
    seed: int, drift: bool, chunk: int, start: int, stop: int, total: int, test_total: int, counters: Counters
) -> dict[str, pd.DataFrame]:
    """All eight tables' rows for global applicants [start, stop), from the chunk's own stream."""
    rng = np.random.default_rng([seed, int(drift), chunk, 307_511])
    ids, is_test = _applicant_block(start, stop, total, test_total)
    who = _traits(rng, ids, is_test)
    app = build_applications(rng, who, drift)
    bureau, balance, bureau_facts = build_bureau(rng, who, counters)
    previous, loans, prev_facts = build_previous(rng, who, counters)
    pos = build_pos_cash(rng, who, loans)
    installments, inst_facts = build_installments(rng, who, loans)
    cards, card_facts = build_credit_card(rng, who, loans)
    facts = {**bureau_facts, **prev_facts, **inst_facts, **card_facts}
    app["TARGET"] = assign_target(rng, app, who, facts, drift)
    if chunk == 0:
        _plant_rare_quirks(rng, app, total)
    train = app.loc[~is_test].reset_index(drop=True)
    test = app.loc[is_test, hv.APPLICATION_TEST_COLUMNS].reset_index(drop=True)
    return {
        "application_train.csv": train,
        "application_test.csv": test,
        "bureau.csv": bureau,
        "bureau_balance.csv": balance,
        "previous_application.csv": previous,
        "POS_CASH_balance.csv": pos,
        "installments_payments.csv": installments,
        "credit_card_balance.csv": cards,
    }


def _plant_rare_quirks(rng: np.random.Generator, app: pd.DataFrame, total: int) -> None:
    """Put the real data's rare oddities in at any scale: CODE_GENDER 'XNA' and one huge income."""
    n_gender = max(1, round(total * 4 / hv.TRAIN_ROWS))
    rows = rng.choice(len(app), size=min(n_gender + 1, len(app)), replace=False)
    app.loc[app.index[rows[:n_gender]], "CODE_GENDER"] = "XNA"
    app.loc[app.index[rows[-1]], "AMT_INCOME_TOTAL"] = OUTLIER_INCOME


def generate_home_credit(
    out_dir: Path,
    rows: int = hv.TRAIN_ROWS,
    seed: int = 0,
    drift: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Write the eight Home Credit CSVs for `rows` training applicants; return rows per file.

    application_test gets the real ratio of test applicants; every table streams chunk by chunk.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    test_total = application_test_rows(rows)
    total = rows + test_total
    counts = dict.fromkeys(hv.TABLE_COLUMNS, 0)
    counters = Counters()
    staging = Path(tempfile.mkdtemp(prefix=".home_credit-", dir=out_dir))
    try:
        for chunk, start in enumerate(range(0, total, CHUNK_APPLICANTS)):
            stop = min(start + CHUNK_APPLICANTS, total)
            tables = build_chunk(seed, drift, chunk, start, stop, total, test_total, counters)
            for name, frame in tables.items():
                frame.to_csv(staging / name, mode="a", header=(chunk == 0), index=False, lineterminator="\n")
                counts[name] += len(frame)
            del tables
            if progress is not None:
                progress(f"home_credit: {stop:,}/{total:,} applicants, {sum(counts.values()):,} rows written")
        for name in hv.TABLE_COLUMNS:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts
