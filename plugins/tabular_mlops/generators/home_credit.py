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
    return 1.0 / (1.0 + np.exp(-x))


def _pick(rng: np.random.Generator, shares: dict[str, float], n: int) -> np.ndarray:
    """Draw n values with the given (unnormalised) shares."""
    values = np.array(list(shares), dtype=object)
    p = np.array(list(shares.values()), dtype=float)
    return rng.choice(values, size=n, p=p / p.sum())


def _money(x: np.ndarray, step: float = 0.5) -> np.ndarray:
    return np.round(np.asarray(x, dtype=float) / step) * step


def _blank(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Float copy of values with NaN where mask holds."""
    out = np.asarray(values, dtype=float).copy()
    out[mask] = np.nan
    return out


def _blank_text(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
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
    n = len(who.ids)
    r = who.risk
    col: dict[str, np.ndarray] = {"SK_ID_CURR": who.ids}

    cash_share = 0.905 if not drift else 0.80
    contract = np.where(rng.random(n) < cash_share, "Cash loans", "Revolving loans")
    col["NAME_CONTRACT_TYPE"] = contract
    male = rng.random(n) < 0.342 + 0.05 * (r > 0.5)
    col["CODE_GENDER"] = np.where(male, "M", "F").astype(object)
    own_car = rng.random(n) < 0.34
    col["FLAG_OWN_CAR"] = np.where(own_car, "Y", "N")
    col["FLAG_OWN_REALTY"] = np.where(rng.random(n) < 0.69, "Y", "N")
    children = rng.choice([0, 1, 2, 3, 4, 5], size=n, p=[0.70, 0.199, 0.087, 0.012, 0.0015, 0.0005])
    col["CNT_CHILDREN"] = children

    income = np.exp(rng.normal(np.log(147_150.0 if not drift else 180_000.0), 0.48, n))
    round_income = rng.random(n) < 0.85
    income = np.where(round_income, np.maximum(_money(income, 2250.0), 25_650.0), np.round(income, 3))
    col["AMT_INCOME_TOTAL"] = income
    goods = np.maximum(_money(income * np.exp(rng.normal(np.log(2.9), 0.55, n)), 4500.0), 40_500.0)
    revolving = contract == "Revolving loans"
    goods = np.where(revolving, np.maximum(_money(goods / 3, 22_500.0), 45_000.0), goods)
    credit = np.where(revolving, goods, _money(goods * rng.uniform(1.0, 1.22, n)))
    term = rng.choice([12, 18, 24, 30, 36, 48, 60], size=n, p=[0.12, 0.10, 0.2, 0.1, 0.2, 0.14, 0.14])
    annuity = np.where(revolving, credit * 0.05, _money(credit * (1 + 0.015 * term) / term))
    col["AMT_CREDIT"] = credit
    col["AMT_ANNUITY"] = _blank(annuity, rng.random(n) < 4e-5)
    col["AMT_GOODS_PRICE"] = _blank(goods, revolving & (rng.random(n) < 0.01))
    col["NAME_TYPE_SUITE"] = _blank_text(_pick(rng, hv.NAME_TYPE_SUITE, n), rng.random(n) < 0.0042)

    age_years = np.clip(43.5 - 3.5 * r + rng.normal(0, 11.0, n), 20.6, 69.0)
    pensioner = rng.random(n) < np.where(age_years >= 55, 0.9, 0.05)
    unemployed = ~pensioner & (rng.random(n) < 0.0004)
    no_job = pensioner | unemployed
    working_type = _pick(rng, hv.WORKING_INCOME_TYPES, n)
    income_type = np.where(pensioner, "Pensioner", np.where(unemployed, "Unemployed", working_type))
    col["NAME_INCOME_TYPE"] = income_type
    education_shares = dict(hv.EDUCATION)
    education = _pick(rng, education_shares, n)
    # Lower-risk applicants are more often graduates.
    upgrade = (education == "Secondary / secondary special") & (rng.random(n) < 0.12 * (r < -0.5))
    education = np.where(upgrade, "Higher education", education)
    col["NAME_EDUCATION_TYPE"] = education
    family = _pick(rng, hv.FAMILY_STATUS, n)
    col["NAME_FAMILY_STATUS"] = family
    col["NAME_HOUSING_TYPE"] = _pick(rng, hv.HOUSING, n)
    region_pop = rng.choice(np.array(hv.REGION_POPULATION), size=n)
    col["REGION_POPULATION_RELATIVE"] = region_pop

    days_birth = -np.round(age_years * 365.25).astype(np.int64)
    col["DAYS_BIRTH"] = days_birth
    employed_years = np.minimum(rng.exponential(6.0, n) * np.exp(-0.25 * r), age_years - 18.5)
    days_employed = -np.round(employed_years * 365.25).astype(np.int64)
    col["DAYS_EMPLOYED"] = np.where(no_job, hv.SENTINEL_DAYS, days_employed)
    col["DAYS_REGISTRATION"] = -np.floor(rng.uniform(0, 1, n) * (age_years - 18) * 365.25)
    col["DAYS_ID_PUBLISH"] = -np.round(rng.uniform(0, 1, n) ** 0.7 * 6500).astype(np.int64)
    car_age = np.minimum(np.round(rng.gamma(2.0, 6.0, n)), 91)
    col["OWN_CAR_AGE"] = _blank(car_age, ~own_car)
    col["FLAG_MOBIL"] = np.ones(n, dtype=np.int64)
    col["FLAG_EMP_PHONE"] = (~no_job).astype(np.int64)
    col["FLAG_WORK_PHONE"] = (rng.random(n) < np.where(no_job, 0.02, 0.25)).astype(np.int64)
    col["FLAG_CONT_MOBILE"] = (rng.random(n) < 0.998).astype(np.int64)
    col["FLAG_PHONE"] = (rng.random(n) < 0.28).astype(np.int64)
    col["FLAG_EMAIL"] = (rng.random(n) < 0.057).astype(np.int64)
    occupation = _pick(rng, hv.OCCUPATION, n)
    col["OCCUPATION_TYPE"] = _blank_text(occupation, no_job | (rng.random(n) < 0.16))
    couple = np.isin(family, ["Married", "Civil marriage"])
    col["CNT_FAM_MEMBERS"] = (1 + couple + children).astype(float)
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
    organization = _pick(rng, hv.ORGANIZATION, n)
    col["ORGANIZATION_TYPE"] = np.where(no_job, "XNA", organization)

    # External scores: three noisy readings of the hidden risk; drift makes them shift and blur.
    noise = 0.6 if not drift else 1.0
    shift = 0.0 if not drift else -0.35
    ext = {
        1: _sigmoid(0.1 + shift - 0.75 * r + 0.015 * (age_years - 43) + rng.normal(0, noise, n)),
        2: _sigmoid(0.55 + shift - 0.75 * r + rng.normal(0, noise, n)),
        3: _sigmoid(0.05 + shift - 0.75 * r + rng.normal(0, noise, n)),
    }
    missing = {1: 0.564, 2: 0.0021, 3: 0.198}
    for k in (1, 2, 3):
        col[f"EXT_SOURCE_{k}"] = _blank(ext[k], rng.random(n) < missing[k])

    col.update(_building_columns(rng, n))

    social_missing = rng.random(n) < 0.0033
    obs_30 = rng.poisson(1.42, n).astype(float)
    def_30 = np.minimum(rng.poisson(0.14 * np.exp(0.35 * r)), obs_30).astype(float)
    obs_60 = obs_30 + (rng.random(n) < 0.03)
    def_60 = np.minimum(def_30, np.maximum(def_30 - (rng.random(n) < 0.2), 0))
    for name, values in [
        ("OBS_30_CNT_SOCIAL_CIRCLE", obs_30),
        ("DEF_30_CNT_SOCIAL_CIRCLE", def_30),
        ("OBS_60_CNT_SOCIAL_CIRCLE", obs_60),
        ("DEF_60_CNT_SOCIAL_CIRCLE", def_60),
    ]:
        col[name] = _blank(values, social_missing)
    phone_change = np.where(rng.random(n) < 0.12, 0.0, -np.round(rng.exponential(900, n)).clip(0, 4292))
    col["DAYS_LAST_PHONE_CHANGE"] = phone_change
    for k, rate in hv.DOCUMENT_RATES.items():
        col[f"FLAG_DOCUMENT_{k}"] = (rng.random(n) < rate).astype(np.int64)
    bureau_req_missing = rng.random(n) < 0.135
    for period, mean in [("HOUR", 0.0064), ("DAY", 0.007), ("WEEK", 0.034), ("MON", 0.27), ("QRT", 0.27)]:
        col[f"AMT_REQ_CREDIT_BUREAU_{period}"] = _blank(
            rng.poisson(mean, n).astype(float), bureau_req_missing
        )
    requests_year = rng.poisson(1.9 * np.exp(0.15 * who.bureau), n).astype(float)
    col["AMT_REQ_CREDIT_BUREAU_YEAR"] = _blank(requests_year, bureau_req_missing)

    frame = pd.DataFrame(col)
    frame.insert(1, "TARGET", 0)
    return frame[hv.APPLICATION_COLUMNS]


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
    overdue_prob = _sigmoid(-3.3 + 1.3 * b + 0.35 * r)
    ever_overdue = rng.random(m) < overdue_prob * 3
    now_overdue = active & (rng.random(m) < overdue_prob)
    day_overdue = np.where(now_overdue, np.round(rng.exponential(40.0, m)) + 1, 0).astype(np.int64)
    sum_overdue = np.where(now_overdue, _money(amount * rng.uniform(0.01, 0.2, m), 0.005), 0.0)
    max_overdue = np.where(ever_overdue | now_overdue, _money(amount * rng.uniform(0.01, 0.3, m), 0.005), 0.0)
    debt = np.where(active, _money(amount * np.clip(rng.beta(2, 2, m) * np.exp(0.3 * b), 0, 1.2), 0.005), 0.0)
    limit = np.where(card, _money(amount * rng.uniform(0, 0.8, m), 0.005), 0.0)
    update = np.where(closed, np.minimum(end_fact + rng.integers(0, 60, m), -1), -rng.integers(0, 60, m))
    annuity = _money(amount / np.maximum(duration / 30, 3), 0.005)

    frame = pd.DataFrame(
        {
            "SK_ID_CURR": who.ids[owner],
            "SK_ID_BUREAU": ids,
            "CREDIT_ACTIVE": status,
            "CREDIT_CURRENCY": _pick(rng, hv.CREDIT_CURRENCY, m),
            "DAYS_CREDIT": days_credit,
            "CREDIT_DAY_OVERDUE": day_overdue,
            "DAYS_CREDIT_ENDDATE": _blank(end_date, rng.random(m) < 0.06),
            "DAYS_ENDDATE_FACT": end_fact,
            "AMT_CREDIT_MAX_OVERDUE": _blank(max_overdue, rng.random(m) < 0.65),
            "CNT_CREDIT_PROLONG": (rng.random(m) < 0.005).astype(np.int64),
            "AMT_CREDIT_SUM": amount,
            "AMT_CREDIT_SUM_DEBT": _blank(debt, rng.random(m) < 0.15),
            "AMT_CREDIT_SUM_LIMIT": _blank(limit, rng.random(m) < 0.34),
            "AMT_CREDIT_SUM_OVERDUE": sum_overdue,
            "CREDIT_TYPE": credit_type,
            "DAYS_CREDIT_UPDATE": update.astype(np.int64),
            "AMT_ANNUITY": _blank(annuity, rng.random(m) < 0.71),
        }
    )[hv.BUREAU_COLUMNS]

    # About a third of bureau credits come with a monthly status history (as in the real file).
    has_balance = rng.random(m) < 0.34
    months = np.minimum(np.ceil(-days_credit / DAYS_PER_MONTH).astype(np.int64), MAX_HISTORY_MONTHS) + 1
    months = np.where(has_balance, months, 0)
    balance_owner = np.repeat(np.arange(m), months)
    age = _within_group_index(months)  # 0 = current month, counting back
    month_balance = -age
    closed_month = np.where(closed, np.floor(np.nan_to_num(end_fact, nan=0.0) / DAYS_PER_MONTH), -10_000)
    late = rng.random(len(balance_owner)) < _sigmoid(-4.3 + 1.2 * b + 0.4 * r)[balance_owner]
    bucket = rng.choice(
        np.array(["1", "2", "3", "4", "5"]), size=len(balance_owner), p=[0.8, 0.1, 0.04, 0.02, 0.04]
    )
    state = np.where(late, bucket, "0").astype(object)
    unknown_loan = (rng.random(m) < 0.15)[balance_owner]
    state[unknown_loan | (rng.random(len(balance_owner)) < 0.05)] = "X"
    state[month_balance > closed_month[balance_owner]] = "C"
    balance = pd.DataFrame(
        {"SK_ID_BUREAU": ids[balance_owner], "MONTHS_BALANCE": month_balance, "STATUS": state}
    )

    late_share = np.zeros(len(who.ids))
    np.add.at(late_share, owner, (ever_overdue | now_overdue).astype(float))
    return frame, balance, {"bureau_loans": counts.astype(float), "bureau_overdue": late_share}


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


def build_previous(
    rng: np.random.Generator, who: Applicants, counters: Counters
) -> tuple[pd.DataFrame, PreviousLoans, dict[str, np.ndarray]]:
    """Earlier Home Credit applications, with the real XNA/XAP and 365243 conventions."""
    counts, owner = _history_rows(rng, len(who.ids), 0.946, 3.95)
    m = len(owner)
    ids = counters.prev + np.arange(m)
    counters.prev += m
    rp = who.repay[owner]
    r = who.risk[owner]

    contract = _pick(rng, hv.PREV_CONTRACT_TYPE, m)
    cash = contract == "Cash loans"
    consumer = contract == "Consumer loans"
    revolving = contract == "Revolving loans"
    refused = rng.random(m) < _sigmoid(-1.8 + 0.8 * rp + 0.45 * r)
    canceled = ~refused & (rng.random(m) < np.where(cash, 0.33, 0.08))
    unused = ~refused & ~canceled & consumer & (rng.random(m) < 0.035)
    status = np.select([refused, canceled, unused], ["Refused", "Canceled", "Unused offer"], "Approved")
    approved = status == "Approved"

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
    no_terms = canceled | (application == 0)
    down_payment = np.where(
        consumer & (rng.random(m) < 0.6), _money(application * rng.beta(1, 8, m), 0.5), np.nan
    )
    goods = np.where(consumer | (cash & (rng.random(m) < 0.55)), application, np.nan)
    goods = np.where(application == 0, np.nan, goods)
    days_decision = -rng.integers(1, 2923, m)

    purpose = np.where(cash, _pick(rng, hv.CASH_LOAN_PURPOSE, m), "XAP")
    reject = np.where(refused, _pick(rng, hv.REJECT_REASON, m), np.where(unused, "CLIENT", "XAP"))
    first_of_applicant = np.r_[True, owner[1:] != owner[:-1]] if m else np.zeros(0, dtype=bool)
    client = np.where(first_of_applicant, "New", "Repeater").astype(object)
    client[~first_of_applicant & (rng.random(m) < 0.09)] = "Refreshed"
    client[rng.random(m) < 0.001] = "XNA"
    portfolio = np.select([consumer, cash, revolving], ["POS", "Cash", "Cards"], "XNA").astype(object)
    portfolio[canceled & (rng.random(m) < 0.9)] = "XNA"
    portfolio[consumer & (rng.random(m) < 0.0004)] = "Cars"
    yield_group = np.where(revolving | no_terms, "XNA", _pick(rng, hv.YIELD_GROUP, m))
    product_type = np.where(cash, np.where(rng.random(m) < 0.6, "x-sell", "walk-in"), "XNA")
    product = np.where(
        cash,
        np.where(
            yield_group == "XNA",
            "Cash",
            np.where(product_type == "x-sell", "Cash X-Sell: ", "Cash Street: ")
            + np.vectorize(_yield_word, otypes=[object])(yield_group),
        ),
        np.where(
            revolving,
            np.where(rng.random(m) < 0.5, "Card Street", "Card X-Sell"),
            rng.choice(hv.POS_PRODUCTS, m),
        ),
    ).astype(object)
    product[contract == "XNA"] = None

    # Dates only exist for approved loans; 365243 means "not happened" or "still running".
    first_due = days_decision + rng.integers(10, 40, m)
    last_due_first = first_due + 30 * np.maximum(cnt_payment - 1, 0)
    running = last_due_first > 0
    first_drawing = np.where(rng.random(m) < 0.96, hv.SENTINEL_DAYS, days_decision + rng.integers(1, 10, m))
    first_due_out = np.where(revolving & (rng.random(m) < 0.5), hv.SENTINEL_DAYS, first_due)
    last_due_first_out = np.where(revolving, hv.SENTINEL_DAYS, last_due_first)
    early = ~running & (rng.random(m) < 0.3)
    last_due = np.where(
        running | revolving, hv.SENTINEL_DAYS, last_due_first - early * rng.integers(0, 300, m)
    )
    termination = np.where(last_due == hv.SENTINEL_DAYS, hv.SENTINEL_DAYS, last_due + rng.integers(0, 10, m))
    not_approved = ~approved
    frame = pd.DataFrame(
        {
            "SK_ID_PREV": ids,
            "SK_ID_CURR": who.ids[owner],
            "NAME_CONTRACT_TYPE": contract,
            "AMT_ANNUITY": _blank(np.round(annuity, 3), no_terms),
            "AMT_APPLICATION": application,
            "AMT_CREDIT": _blank(credit, rng.random(m) < 1e-6),
            "AMT_DOWN_PAYMENT": down_payment,
            "AMT_GOODS_PRICE": goods,
            "WEEKDAY_APPR_PROCESS_START": _pick(rng, hv.WEEKDAYS, m),
            "HOUR_APPR_PROCESS_START": np.clip(np.round(rng.normal(12.5, 3.3, m)), 0, 23).astype(np.int64),
            "FLAG_LAST_APPL_PER_CONTRACT": np.where(rng.random(m) < 0.995, "Y", "N"),
            "NFLAG_LAST_APPL_IN_DAY": (rng.random(m) < 0.9965).astype(np.int64),
            "RATE_DOWN_PAYMENT": down_payment / np.where(application > 0, application, np.nan),
            "RATE_INTEREST_PRIMARY": _blank(rng.uniform(0.03, 1.0, m), rng.random(m) < 0.9964),
            "RATE_INTEREST_PRIVILEGED": _blank(rng.uniform(0.37, 1.0, m), rng.random(m) < 0.9964),
            "NAME_CASH_LOAN_PURPOSE": purpose,
            "NAME_CONTRACT_STATUS": status,
            "DAYS_DECISION": days_decision,
            "NAME_PAYMENT_TYPE": _pick(rng, hv.PAYMENT_TYPE, m),
            "CODE_REJECT_REASON": reject,
            "NAME_TYPE_SUITE": _blank_text(_pick(rng, hv.NAME_TYPE_SUITE, m), rng.random(m) < 0.49),
            "NAME_CLIENT_TYPE": client,
            "NAME_GOODS_CATEGORY": np.where(consumer, _pick(rng, hv.GOODS_CATEGORY, m), "XNA"),
            "NAME_PORTFOLIO": portfolio,
            "NAME_PRODUCT_TYPE": product_type,
            "CHANNEL_TYPE": _pick(rng, hv.CHANNEL_TYPE, m),
            "SELLERPLACE_AREA": np.where(consumer, rng.integers(0, 4000, m) // rng.integers(1, 40, m), -1),
            "NAME_SELLER_INDUSTRY": np.where(consumer, _pick(rng, hv.SELLER_INDUSTRY, m), "XNA"),
            "CNT_PAYMENT": _blank(cnt_payment, no_terms),
            "NAME_YIELD_GROUP": yield_group,
            "PRODUCT_COMBINATION": product,
            "DAYS_FIRST_DRAWING": _blank(first_drawing, not_approved),
            "DAYS_FIRST_DUE": _blank(first_due_out, not_approved),
            "DAYS_LAST_DUE_1ST_VERSION": _blank(last_due_first_out, not_approved),
            "DAYS_LAST_DUE": _blank(last_due, not_approved),
            "DAYS_TERMINATION": _blank(termination, not_approved),
            "NFLAG_INSURED_ON_APPROVAL": _blank(
                (rng.random(m) < 0.33).astype(float), not_approved | revolving
            ),
        }
    )[hv.PREVIOUS_COLUMNS]

    keep = approved & ((cnt_payment > 0) | revolving)
    loans = PreviousLoans(
        prev_ids=ids[keep],
        curr_ids=who.ids[owner][keep],
        owner=owner[keep],
        contract=contract[keep],
        annuity=np.round(annuity[keep], 3),
        credit=credit[keep],
        cnt_payment=cnt_payment[keep],
        days_decision=days_decision[keep],
        first_due=first_due[keep],
    )
    refused_count = np.zeros(len(who.ids))
    np.add.at(refused_count, owner, refused.astype(float))
    return frame, loans, {"prev_count": counts.astype(float), "prev_refused": refused_count}


def _yield_word(group: str) -> str:
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
    month = np.repeat(start, length) + step
    k = len(owner)
    card_habit = who.card[loans.owner[owner]]
    limit = np.repeat(rng.choice(np.array(hv.CARD_LIMITS), size=len(index)), length).astype(np.int64)
    use = _sigmoid(-0.9 + 1.1 * card_habit + 0.3 * who.risk[loans.owner[owner]] + rng.normal(0, 0.5, k))
    use = np.where(rng.random(k) < 0.35, 0.0, use)
    balance = np.round(limit * use, 3)
    draw_atm = np.where(rng.random(k) < 0.15 * (1 + card_habit.clip(0)), _money(balance * 0.2, 450.0), 0.0)
    draw_pos = np.where(rng.random(k) < 0.25, np.round(balance * rng.uniform(0, 0.3, k), 3), 0.0)
    draw_total = draw_atm + draw_pos
    min_regular = np.round(balance * 0.05, 3)
    payment = np.where(
        balance > 0, np.maximum(min_regular, np.round(balance * rng.uniform(0, 0.5, k), 3)), 0.0
    )
    principal = np.round(balance * 0.96, 3)
    status = np.full(k, "Active", dtype=object)
    rare = rng.random(k) < 0.004
    status[rare] = rng.choice(hv.CARD_STATUS_RARE, int(rare.sum()))
    status[(use == 0) & (rng.random(k) < 0.05)] = "Completed"
    late = rng.random(k) < _sigmoid(-4.5 + 1.2 * card_habit)
    dpd = np.where(late, np.round(rng.exponential(10.0, k)) + 1, 0).astype(np.int64)
    no_drawing_detail = rng.random(k) < 0.195
    no_regularity = rng.random(k) < 0.08
    frame = pd.DataFrame(
        {
            "SK_ID_PREV": loans.prev_ids[owner],
            "SK_ID_CURR": loans.curr_ids[owner],
            "MONTHS_BALANCE": month,
            "AMT_BALANCE": balance,
            "AMT_CREDIT_LIMIT_ACTUAL": limit,
            "AMT_DRAWINGS_ATM_CURRENT": _blank(draw_atm, no_drawing_detail),
            "AMT_DRAWINGS_CURRENT": draw_total,
            "AMT_DRAWINGS_OTHER_CURRENT": _blank(np.zeros(k), no_drawing_detail),
            "AMT_DRAWINGS_POS_CURRENT": _blank(draw_pos, no_drawing_detail),
            "AMT_INST_MIN_REGULARITY": _blank(min_regular, no_regularity),
            "AMT_PAYMENT_CURRENT": _blank(payment, rng.random(k) < 0.2),
            "AMT_PAYMENT_TOTAL_CURRENT": payment,
            "AMT_RECEIVABLE_PRINCIPAL": principal,
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
            "CNT_INSTALMENT_MATURE_CUM": _blank(step.astype(float), no_regularity),
            "NAME_CONTRACT_STATUS": status,
            "SK_DPD": dpd,
            "SK_DPD_DEF": np.where(rng.random(k) < 0.2, dpd, 0).astype(np.int64),
        }
    )[hv.CREDIT_CARD_COLUMNS]
    has_card = np.zeros(len(who.ids), dtype=bool)
    has_card[loans.owner[index]] = True
    return frame, {"has_card": has_card.astype(float)}


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
