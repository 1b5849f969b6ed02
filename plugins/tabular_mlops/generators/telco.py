"""Deterministic generator of the IBM Telco Customer Churn file (one CSV, 21 columns).

Column names, value sets and encodings follow the real file: SeniorCitizen is an integer while the
other flags are Yes/No text, TotalCharges is text and holds a single space for customers with
tenure 0. Churn depends on contract, tenure, internet service, payment method, support services
and price, so a gradient-boosted model on one-hot columns lands near the real 0.83-0.85 ROC AUC.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

FILE_NAME = "WA_Fn-UseC_-Telco-Customer-Churn.csv"
REAL_ROWS = 7043
COLUMNS = [
    "customerID",
    "gender",
    "SeniorCitizen",
    "Partner",
    "Dependents",
    "tenure",
    "PhoneService",
    "MultipleLines",
    "InternetService",
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
    "Contract",
    "PaperlessBilling",
    "PaymentMethod",
    "MonthlyCharges",
    "TotalCharges",
    "Churn",
]
# Add-on services that exist only with an internet line, with their take-up rate on DSL and fiber.
INTERNET_ADDONS = {
    "OnlineSecurity": (0.48, 0.27),
    "OnlineBackup": (0.44, 0.46),
    "DeviceProtection": (0.42, 0.49),
    "TechSupport": (0.48, 0.27),
    "StreamingTV": (0.37, 0.61),
    "StreamingMovies": (0.37, 0.62),
}
PAYMENT_METHODS = ["Electronic check", "Mailed check", "Bank transfer (automatic)", "Credit card (automatic)"]
# Columns the dirty-row injector corrupts: the key, a categorical and a numeric column.
DIRTY_TARGET = {"key": "customerID", "category": "InternetService", "number": "MonthlyCharges"}


def _yes_no(flags: np.ndarray) -> np.ndarray:
    """Yes/No text for a boolean mask, as the real file spells its flags."""
    return np.where(flags, "Yes", "No")


def _customer_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unique ids shaped like the real ones: four digits, a dash, five capital letters."""
    ids: list[str] = []
    seen: set[str] = set()
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    while len(ids) < n:
        need = n - len(ids)
        digits = rng.integers(0, 10_000, size=need)
        tails = rng.choice(letters, size=(need, 5))
        for number, tail in zip(digits, tails, strict=True):
            candidate = f"{number:04d}-{''.join(tail)}"
            if candidate not in seen:
                seen.add(candidate)
                ids.append(candidate)
    return np.array(ids)


def _tenure(rng: np.random.Generator, n: int, drift: bool) -> np.ndarray:
    """U-shaped tenure as in the real file: many new customers, many at the 72-month cap."""
    new = rng.geometric(0.12 if not drift else 0.18, size=n)
    loyal = 72 - rng.geometric(0.08, size=n) + 1
    middle = rng.integers(1, 73, size=n)
    pick = rng.choice(3, size=n, p=[0.35, 0.25, 0.40] if not drift else [0.50, 0.15, 0.35])
    tenure = np.select([pick == 0, pick == 1], [new, loyal], middle)
    tenure = np.clip(tenure, 1, 72)
    # About 11 in 7,043 real customers signed this month and have tenure 0.
    tenure[rng.random(n) < 11 / REAL_ROWS] = 0
    return tenure


def build_telco_frame(rows: int = REAL_ROWS, seed: int = 0, drift: bool = False) -> pd.DataFrame:
    """Build the Telco customer table in memory with the real columns and encodings."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    rng = np.random.default_rng([seed, int(drift), 7043])
    n = rows
    # Each part draws from rng in turn: calling them in another order would change every file.
    frame = _household_columns(rng, n)
    tenure = _tenure(rng, n, drift)
    frame["tenure"] = tenure
    frame.update(_line_columns(rng, tenure, drift))
    frame["customerID"] = _customer_ids(rng, n)
    frame["gender"] = rng.choice(np.array(["Male", "Female"]), size=n)
    addons, addon_count = _addon_columns(rng, frame["InternetService"], tenure)
    frame.update(addons)
    frame.update(_contract_columns(rng, frame, drift))
    frame.update(_charge_columns(rng, frame, addon_count, drift))
    frame["Churn"] = _yes_no(rng.random(n) < _churn_probability(frame, drift))
    return pd.DataFrame(frame, columns=COLUMNS)


def _household_columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Senior citizen (an integer, as in the real file), partner and dependents."""
    senior = (rng.random(n) < 0.16).astype(int)
    partner = rng.random(n) < 0.48
    dependents = rng.random(n) < np.where(partner, 0.50, 0.12)
    return {"SeniorCitizen": senior, "Partner": _yes_no(partner), "Dependents": _yes_no(dependents)}


def _line_columns(rng: np.random.Generator, tenure: np.ndarray, drift: bool) -> dict[str, np.ndarray]:
    """Phone service, multiple lines and internet service; drift moves customers to fiber."""
    n = len(tenure)
    phone = rng.random(n) < 0.90
    multiple = np.where(phone, _yes_no(rng.random(n) < 0.42 + 0.004 * tenure), "No phone service")
    internet_p = [0.34, 0.44, 0.22] if not drift else [0.25, 0.58, 0.17]
    internet = rng.choice(np.array(["DSL", "Fiber optic", "No"]), size=n, p=internet_p)
    return {"PhoneService": _yes_no(phone), "MultipleLines": multiple, "InternetService": internet}


def _addon_columns(
    rng: np.random.Generator, internet: np.ndarray, tenure: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The six internet add-ons ('No internet service' without a line); also how many each took."""
    n = len(tenure)
    has_internet = internet != "No"
    fiber = internet == "Fiber optic"
    addons: dict[str, np.ndarray] = {}
    addon_count = np.zeros(n)
    for column, (dsl_rate, fiber_rate) in INTERNET_ADDONS.items():
        # Long-standing customers collect more add-ons.
        rate = np.where(fiber, fiber_rate, dsl_rate) + 0.003 * (tenure - 30)
        taken = has_internet & (rng.random(n) < rate)
        addon_count += taken
        addons[column] = np.where(has_internet, _yes_no(taken), "No internet service")
    return addons, addon_count


def _contract_columns(
    rng: np.random.Generator, frame: dict[str, np.ndarray], drift: bool
) -> dict[str, np.ndarray]:
    """Contract length (longer with tenure and support, shorter on fiber), paperless billing, payment."""
    n = len(frame["tenure"])
    has_internet = frame["InternetService"] != "No"
    fiber = frame["InternetService"] == "Fiber optic"
    contract_score = (
        0.045 * frame["tenure"] + 0.4 * (frame["TechSupport"] == "Yes") - 0.5 * fiber + rng.normal(0, 1, n)
    )
    contract = np.select(
        [contract_score < 1.3, contract_score < 2.4], ["Month-to-month", "One year"], "Two year"
    )
    paperless = _yes_no(rng.random(n) < np.where(has_internet, 0.67, 0.29))
    pay_p = [0.34, 0.23, 0.22, 0.21] if not drift else [0.45, 0.18, 0.19, 0.18]
    payment = rng.choice(np.array(PAYMENT_METHODS), size=n, p=pay_p)
    return {"Contract": contract, "PaperlessBilling": paperless, "PaymentMethod": payment}


def _charge_columns(
    rng: np.random.Generator, frame: dict[str, np.ndarray], addon_count: np.ndarray, drift: bool
) -> dict[str, np.ndarray]:
    """Monthly price from the services taken (12 % dearer under drift) and the TotalCharges text."""
    tenure = frame["tenure"]
    n = len(tenure)
    internet = frame["InternetService"]
    streaming = (frame["StreamingTV"] == "Yes").astype(float) + (frame["StreamingMovies"] == "Yes")
    monthly = (
        np.where(frame["PhoneService"] == "Yes", 20.0, 0.0)
        + np.where(frame["MultipleLines"] == "Yes", 5.0, 0.0)
        + np.select([internet == "DSL", internet == "Fiber optic"], [25.0, 50.0], 0.0)
        + 5.0 * addon_count
        + 5.0 * streaming
        + rng.normal(0, 2.0, n)
    ) * (1.12 if drift else 1.0)
    # Real prices are multiples of five cents.
    monthly = np.round(np.clip(monthly, 18.25, 118.75 * (1.12 if drift else 1.0)) * 20) / 20
    # Past bills were a little different from today's price; tenure 0 has no bill yet.
    total = np.round(tenure * monthly * rng.normal(1.0, 0.05, n).clip(0.8, 1.2), 2)
    total_text = np.where(tenure == 0, " ", np.char.mod("%.2f", total))
    return {"MonthlyCharges": monthly, "TotalCharges": np.array([_trim_decimal(v) for v in total_text])}


def _trim_decimal(text: str) -> str:
    """Render 1889.50 as 1889.5 and 20.00 as 20 like the real file's text column."""
    if "." not in text:
        return text
    return text.rstrip("0").rstrip(".")


def _churn_probability(frame: dict[str, np.ndarray], drift: bool) -> np.ndarray:
    """Probability of churn from contract, tenure, service and price; drift changes the weights."""
    tenure = frame["tenure"].astype(float)
    month_to_month = frame["Contract"] == "Month-to-month"
    two_year = frame["Contract"] == "Two year"
    fiber = frame["InternetService"] == "Fiber optic"
    no_internet = frame["InternetService"] == "No"
    electronic = frame["PaymentMethod"] == "Electronic check"
    logit = (
        (-1.3 if not drift else -1.7)
        + 1.1 * month_to_month
        - 1.2 * two_year
        + 0.8 * fiber
        - 0.7 * no_internet
        - (0.030 if not drift else 0.012) * tenure
        + 0.55 * electronic
        + 0.35 * frame["SeniorCitizen"]
        - 0.45 * (frame["TechSupport"] == "Yes")
        - 0.45 * (frame["OnlineSecurity"] == "Yes")
        + 0.30 * (frame["PaperlessBilling"] == "Yes")
        - 0.20 * (frame["Dependents"] == "Yes")
        + (0.012 if not drift else 0.03) * (frame["MonthlyCharges"] - 65.0)
    )
    return 1.0 / (1.0 + np.exp(-logit))


def generate_telco(
    out_dir: Path, rows: int = REAL_ROWS, seed: int = 0, drift: bool = False
) -> dict[str, int]:
    """Write the Telco churn CSV under out_dir atomically; return rows written per file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = build_telco_frame(rows=rows, seed=seed, drift=drift)
    target = out_dir / FILE_NAME
    tmp = target.with_name(target.name + ".tmp")
    frame.to_csv(tmp, index=False, lineterminator="\n")
    os.replace(tmp, target)
    return {FILE_NAME: len(frame)}
