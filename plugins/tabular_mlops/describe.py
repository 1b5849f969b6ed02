"""Plain words for feature names, from the model's column description file.

A model names a file under include/descriptions/ (`features.descriptions`): a UTF-8 CSV with the
columns `Table`, `Row` (the column name) and `Description`. A feature that is a source column gets
that column's sentence. The credit_risk SQL derives most of its features from history tables by a
naming scheme (the header comments of include/sql/credit_risk/agg_*.sql): a source prefix
(BUREAU_, BUREAU_ACTIVE_, PREV_REFUSED_, POS_, INSTAL_, CC_, ...), then a column of that table,
then a statistic (_MIN, _MAX, _MEAN, _SUM, _VAR, _NUNIQUE), or `<column>_<value>_SHARE`, or
`_COUNT`. `Describer` reads such a name back into a sentence built from the file's rows, e.g.
BUREAU_ACTIVE_AMT_CREDIT_SUM_DEBT_MEAN -> "Mean over the applicant's active Credit Bureau credits
of: current debt on Credit Bureau credit". The scheme applies only where the file holds the
source table, so other models get plain column lookups.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from tabular_mlops import settings
from tabular_mlops.config import ModelConfig

APPLICATION = "application_{train|test}.csv"
BUREAU = "bureau.csv"
PREVIOUS = "previous_application.csv"
INSTALMENTS = "installments_payments.csv"

# (name prefix, table in the description file, the rows it aggregates); longest prefixes first.
_SOURCES = [
    ("BUREAU_ACTIVE_", BUREAU, "the applicant's active Credit Bureau credits"),
    ("BUREAU_CLOSED_", BUREAU, "the applicant's closed Credit Bureau credits"),
    ("BUREAU_", BUREAU, "the applicant's Credit Bureau credits"),
    ("PREV_APPROVED_", PREVIOUS, "the applicant's approved previous Home Credit applications"),
    ("PREV_REFUSED_", PREVIOUS, "the applicant's refused previous Home Credit applications"),
    ("PREV_", PREVIOUS, "the applicant's previous Home Credit applications"),
    ("POS_", "POS_CASH_balance.csv", "the monthly balances of the applicant's previous POS and cash loans"),
    ("INSTAL_", INSTALMENTS, "the instalments of the applicant's previous credits"),
    ("CC_", "credit_card_balance.csv", "the monthly balances of the applicant's previous credit cards"),
]
_STATISTICS = {
    "MIN": "Minimum",
    "MAX": "Maximum",
    "MEAN": "Mean",
    "SUM": "Sum",
    "VAR": "Variance",
    "NUNIQUE": "Number of distinct values",
}
# bureau_balance STATUS codes, as the description file's STATUS row explains them.
_BB_STATUS = {
    "0": "no days past due",
    "1": "1-30 days past due",
    "2": "31-60 days past due",
    "3": "61-90 days past due",
    "4": "91-120 days past due",
    "5": "more than 120 days past due, sold or written off",
    "C": "closed",
    "X": "status unknown",
}
# Row-level columns the staging SQL derives (stg_application, stg_installments_payments,
# stg_previous_application, agg_bureau_balance): they are in no source file.
_DERIVED: dict[str, dict[str, str]] = {
    APPLICATION: {
        "CREDIT_INCOME_RATIO": "Credit amount of the loan divided by the client's income",
        "ANNUITY_INCOME_RATIO": "Loan annuity divided by the client's income",
        "ANNUITY_CREDIT_RATIO": "Loan annuity divided by the credit amount of the loan",
        "DAYS_EMPLOYED_RATIO": "Days in current employment divided by the client's age in days",
        "INCOME_PER_PERSON": "Client's income per family member",
        "INCOME_CREDIT_RATIO": "Client's income divided by the credit amount of the loan",
        "GOODS_CREDIT_RATIO": "Price of the goods divided by the credit amount of the loan",
    },
    INSTALMENTS: {
        "PAYMENT_RATIO": "Amount paid divided by the prescribed instalment",
        "PAYMENT_DIFF": "Prescribed instalment minus the amount paid",
        "DAYS_PAST_DUE": "Days the instalment was paid after its due date (0 when on time)",
        "DAYS_BEFORE_DUE": "Days the instalment was paid before its due date (0 when late)",
    },
    PREVIOUS: {
        "APP_CREDIT_RATIO": "Amount asked for divided by the final credit amount",
    },
    BUREAU: {
        "BB_MONTHS_BALANCE_MIN": "Oldest month of the credit's monthly Credit Bureau history",
        "BB_MONTHS_BALANCE_MAX": "Latest month of the credit's monthly Credit Bureau history",
        "BB_MONTHS_BALANCE_COUNT": "Number of months in the credit's monthly Credit Bureau history",
        **{
            f"BB_STATUS_{code}_SHARE": f"Share of the credit's months in status {code} ({meaning})"
            for code, meaning in _BB_STATUS.items()
        },
    },
}
# Shares whose name is not `<column>_<value>` (agg_previous_application.sql).
_SHARES = {
    (PREVIOUS, "NOT_LAST_APPL_PER_CONTRACT"): "that were not the last application for their contract",
}
# The building columns share one long description; the name says which figure it is.
_BUILDING_TEXT = "Normalized information about building where the client lives"
_BUILDING = {
    "APARTMENTS": "apartment size",
    "BASEMENTAREA": "basement area",
    "YEARS_BEGINEXPLUATATION": "years since the building came into use",
    "YEARS_BUILD": "age of the building",
    "COMMONAREA": "common area",
    "ELEVATORS": "number of elevators",
    "ENTRANCES": "number of entrances",
    "FLOORSMAX": "highest floor",
    "FLOORSMIN": "lowest floor",
    "LANDAREA": "land area",
    "LIVINGAPARTMENTS": "number of living apartments",
    "LIVINGAREA": "living area",
    "NONLIVINGAPARTMENTS": "number of non-living apartments",
    "NONLIVINGAREA": "non-living area",
    "TOTALAREA": "total area",
    "FONDKAPREMONT": "capital-repairs fund",
    "HOUSETYPE": "house type",
    "WALLSMATERIAL": "wall material",
    "EMERGENCYSTATE": "emergency state",
}
_BUILDING_STATISTIC = {"AVG": "Average", "MEDI": "Median", "MODE": "Most common"}


def _embedded(text: str) -> str:
    """A sentence as the tail of another: first letter lower-cased unless it starts an acronym."""
    text = text.strip().rstrip(".")
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text


class Describer:
    """Feature name -> plain words, from the rows (table, column, description) of one file."""

    def __init__(self, rows: Iterable[tuple[str, str, str]]) -> None:
        self.tables: dict[str, dict[str, str]] = {}
        self.columns: dict[str, str] = {}  # the first table's sentence wins for a bare name
        for table, column, text in rows:
            column, text = column.strip(), " ".join(text.split())
            if column and text:
                self.tables.setdefault(table.strip(), {}).setdefault(column, text)
                self.columns.setdefault(column, text)

    @classmethod
    def from_file(cls, path: Path) -> Describer:
        """Read a description CSV (UTF-8; columns Table, Row, Description)."""
        with Path(path).open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"Table", "Row", "Description"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: description file lacks column(s) {sorted(missing)}")
            rows = [(r["Table"] or "", r["Row"] or "", r["Description"] or "") for r in reader]
        return cls(rows)

    def describe(self, name: str) -> str | None:
        """The sentence for a feature name, or None when neither the file nor the scheme knows it."""
        text = self._column(APPLICATION, name) if APPLICATION in self.tables else None
        text = text or self.columns.get(name)
        if text is not None:
            return self._building(name, text)
        return self._aggregate(name)

    def plain(self, name: str) -> str:
        """The sentence for a feature name, the bare name when there is none."""
        return self.describe(name) or name

    def _column(self, table: str, column: str) -> str | None:
        """A column of one source table: its row in the file, else what the staging SQL derives."""
        return self.tables.get(table, {}).get(column) or _DERIVED.get(table, {}).get(column)

    def _building(self, name: str, text: str) -> str:
        """A building column's figure and statistic in place of the description they all share."""
        stem, _, statistic = name.rpartition("_")
        if not text.startswith(_BUILDING_TEXT) or stem not in _BUILDING:
            return text
        words = _BUILDING_STATISTIC.get(statistic, "")
        return f"{words} {_BUILDING[stem]} of the building where the client lives (normalized)".strip()

    def _aggregate(self, name: str) -> str | None:
        """A per-applicant aggregate of a history table, read back from its name."""
        for prefix, table, scope in _SOURCES:
            if not name.startswith(prefix) or table not in self.tables:
                continue
            rest = name[len(prefix) :]
            if rest == "COUNT":
                return f"Number of {scope}"
            if rest.endswith("_SHARE"):
                text = self._share(table, scope, rest.removesuffix("_SHARE"))
            else:
                column, _, statistic = rest.rpartition("_")
                found = self._column(table, column) if statistic in _STATISTICS else None
                text = f"{_STATISTICS[statistic]} over {scope} of: {_embedded(found)}" if found else None
            if text is not None:
                return text
        return None

    def _share(self, table: str, scope: str, body: str) -> str | None:
        """`<column>_<value>`: the share of rows in a category; the column may have lost a NAME_-like part."""
        special = _SHARES.get((table, body))
        if special is not None:
            return f"Share of {scope} {special}"
        tokens = body.split("_")
        known = self.tables.get(table, {})
        for cut in range(len(tokens) - 1, 0, -1):
            stem, value = "_".join(tokens[:cut]), " ".join(tokens[cut:]).lower()
            for column in (stem, f"NAME_{stem}", f"CODE_{stem}", f"{stem}_TYPE"):
                if column in known:
                    return f"Share of {scope} with '{value}' as: {_embedded(known[column])}"
        return None


def descriptions_path(config: ModelConfig) -> Path | None:
    """The model's description file under include/descriptions/, None when it names none."""
    name = config.features.descriptions
    return None if name is None else settings.include_dir() / "descriptions" / name


def describer_for(config: ModelConfig) -> Describer:
    """The model's Describer (an empty one when the config names no file)."""
    path = descriptions_path(config)
    if path is None:
        return Describer([])
    if not path.is_file():
        raise FileNotFoundError(f"{config.name}: features.descriptions names {path}, which does not exist")
    return Describer.from_file(path)


def describe_fields(config: ModelConfig, fields: Iterable[str]) -> dict[str, str]:
    """{field: plain words} for the model's fields; a field nobody describes keeps its name."""
    describer = describer_for(config)
    return {field: describer.plain(field) for field in fields}
