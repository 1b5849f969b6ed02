"""The data_ingest stage on the Telco file: clean data, dirty rows, blanks, missing columns, wrong types."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tabular_mlops.config import get_model_config, load_model_config
from tabular_mlops.generators.dirty import inject_dirty_rows, to_crlf
from tabular_mlops.generators.telco import FILE_NAME
from tabular_mlops.ingest import IngestFailed, ingest_raw_tables

CONFIGS = Path(__file__).resolve().parents[2] / "include" / "configs"


@pytest.fixture(scope="module")
def churn_config():
    return get_model_config("churn", CONFIGS)


def _rewrite(folder: Path, edit) -> None:
    """Apply edit(frame of strings) to the Telco file and write it back unquoted like the original."""
    path = folder / FILE_NAME
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = edit(frame)
    frame.to_csv(path, index=False, lineterminator="\n")


def _failed_expectations(report) -> set[tuple[str, str | None]]:
    return {(e.expectation, e.column) for e in report.failures}


def test_clean_file_passes_and_publishes_typed_tables(churn_config, telco_raw: Path, workspace: Path) -> None:
    raw = pd.read_csv(telco_raw / FILE_NAME, dtype=str, keep_default_na=False)
    report = ingest_raw_tables(churn_config, source=str(telco_raw), run_id="clean")
    table = report.tables["customers"]
    assert report.status == "passed"
    assert (table.rows_read, table.rows_quarantined, table.rows_written) == (len(raw), 0, len(raw))
    # Blank TotalCharges (tenure 0) become nulls and are counted, not quarantined.
    blanks = int((raw["TotalCharges"] == " ").sum())
    assert blanks > 0 and table.blank_to_null == {"TotalCharges": blanks}
    interim = pd.read_parquet(Path(report.interim_dir) / "customers.parquet")
    assert list(interim.columns) == list(raw.columns)
    assert interim["tenure"].dtype == "int64" and interim["MonthlyCharges"].dtype == "float64"
    assert interim["TotalCharges"].isna().sum() == blanks
    assert interim["customerID"].tolist() == raw["customerID"].tolist()
    manifest = json.loads((Path(report.interim_dir) / "_manifest.json").read_text())
    assert manifest["tables"]["customers"]["rows"] == len(raw)
    assert (workspace / "reports" / "validation" / "churn" / "clean" / "summary.md").exists()
    assert all(e.success for e in report.expectations)


def test_malformed_row_is_quarantined_with_line_and_reason(
    churn_config, telco_copy: Path, workspace: Path
) -> None:
    path = telco_copy / FILE_NAME
    lines = path.read_text().splitlines()
    lines[9] = lines[9] + ",surplus"  # physical line 10 of the file: one field too many
    path.write_text("\n".join(lines) + "\n")

    report = ingest_raw_tables(churn_config, source=str(telco_copy), run_id="malformed")
    table = report.tables["customers"]
    assert report.status == "passed"
    assert table.rows_quarantined == 1 and table.rows_written == table.rows_read - 1
    with open(table.quarantine_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1
    assert rows[0]["line"] == "10"
    assert rows[0]["reasons"] == "row: expected 21 fields, found 22"
    assert rows[0]["raw_row"] == lines[9]
    assert rows[0]["source_file"].endswith(FILE_NAME)


def test_injected_defects_are_each_set_aside_exactly(churn_config, telco_copy: Path, workspace: Path) -> None:
    defects = inject_dirty_rows(
        telco_copy / FILE_NAME,
        8,
        seed=3,
        key="customerID",
        category="InternetService",
        number="MonthlyCharges",
    )
    report = ingest_raw_tables(churn_config, source=str(telco_copy), run_id="dirty")
    quarantined = pd.read_csv(report.tables["customers"].quarantine_file)
    assert sorted(quarantined["line"]) == [d.line for d in defects]
    expected_reason = {
        "extra_field": "row: expected 21 fields, found 22",
        "garbled_category": "InternetService: not in the allowed set",
        "unparseable_number": "MonthlyCharges: not a number ('1O5.2x')",
        "missing_key": "customerID: missing required value",
    }
    by_line = dict(zip(quarantined["line"], quarantined["reasons"], strict=True))
    for defect in defects:
        assert by_line[defect.line].startswith(expected_reason[defect.defect])
    assert report.tables["customers"].quarantine_reasons["row: wrong number of fields"] == 2
    assert "set aside" in (workspace / "reports/validation/churn/dirty/summary.md").read_text()


def test_crlf_file_reads_like_lf(churn_config, telco_copy: Path, workspace: Path) -> None:
    to_crlf(telco_copy / FILE_NAME)
    assert b"\r\n" in (telco_copy / FILE_NAME).read_bytes()
    report = ingest_raw_tables(churn_config, source=str(telco_copy), run_id="crlf")
    assert report.status == "passed" and report.tables["customers"].rows_quarantined == 0
    interim = pd.read_parquet(Path(report.interim_dir) / "customers.parquet")
    assert not interim["Churn"].str.contains("\r").any()


def test_blank_values_null_where_allowed_and_quarantined_where_required(
    churn_config, telco_copy: Path, workspace: Path
) -> None:
    def blank(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[[0, 1, 2], "TotalCharges"] = ["  ", "\t", ""]
        frame.loc[3, "Churn"] = " "
        return frame

    _rewrite(telco_copy, blank)
    raw = pd.read_csv(telco_copy / FILE_NAME, dtype=str, keep_default_na=False)
    report = ingest_raw_tables(churn_config, source=str(telco_copy), run_id="blanks")
    table = report.tables["customers"]
    # Whitespace-only values are counted as blank-to-null; "" is a plain missing value.
    assert table.blank_to_null["TotalCharges"] == int(raw["TotalCharges"].str.fullmatch(r"\s+").sum())
    assert table.rows_quarantined == 1
    quarantined = pd.read_csv(table.quarantine_file)
    assert (
        quarantined.loc[0, "line"] == 5 and quarantined.loc[0, "reasons"] == "Churn: missing required value"
    )


def test_missing_column_stops_the_run_and_publishes_nothing(
    churn_config, telco_copy: Path, workspace: Path
) -> None:
    _rewrite(telco_copy, lambda frame: frame.drop(columns=["TotalCharges"]))
    with pytest.raises(IngestFailed) as caught:
        ingest_raw_tables(churn_config, source=str(telco_copy), run_id="missing-col")
    report = caught.value.report
    assert _failed_expectations(report) == {("expect_column_to_exist", "TotalCharges")}
    assert "expect_column_to_exist on customers.TotalCharges: required column is missing" in str(caught.value)
    assert report.status == "failed" and report.interim_dir is None
    assert not (workspace / "data" / "interim" / "churn" / "missing-col").exists()
    saved = json.loads((workspace / "reports/validation/churn/missing-col/validation.json").read_text())
    assert saved["status"] == "failed" and saved["failures"]


def test_wrong_dtype_quarantines_every_row_and_stops(churn_config, telco_copy: Path, workspace: Path) -> None:
    # A copy where tenure was exported as text ("12 months") instead of an integer.
    _rewrite(telco_copy, lambda frame: frame.assign(tenure=frame["tenure"] + " months"))
    with pytest.raises(IngestFailed) as caught:
        ingest_raw_tables(churn_config, source=str(telco_copy), run_id="dtype")
    report = caught.value.report
    table = report.tables["customers"]
    assert table.rows_quarantined == table.rows_read and table.rows_written == 0
    assert table.quarantine_reasons == {"tenure: not an integer": table.rows_read}
    assert ("expect_quarantined_share_to_be_at_most", None) in _failed_expectations(report)
    first = pd.read_csv(table.quarantine_file).iloc[0]
    assert first["line"] == 2 and first["reasons"].startswith("tenure: not an integer ('")


def test_fractional_integer_and_out_of_range_are_row_errors(
    churn_config, telco_copy: Path, workspace: Path
) -> None:
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[0, "tenure"] = "12.5"
        frame.loc[1, "tenure"] = "480"
        frame.loc[2, "SeniorCitizen"] = "2"
        frame.loc[3, "tenure"] = "12.0"  # an integral float is still the integer 12
        return frame

    _rewrite(telco_copy, edit)
    report = ingest_raw_tables(churn_config, source=str(telco_copy), run_id="ranges")
    reasons = pd.read_csv(report.tables["customers"].quarantine_file).set_index("line")["reasons"].to_dict()
    assert reasons == {
        2: "tenure: not an integer ('12.5')",
        3: "tenure: above maximum 72 ('480')",
        4: "SeniorCitizen: not in the allowed set ('2')",
    }
    interim = pd.read_parquet(Path(report.interim_dir) / "customers.parquet")
    assert interim.loc[0, "tenure"] == 12


def test_quarantine_share_above_limit_stops(churn_config, telco_copy: Path, workspace: Path) -> None:
    rows = sum(1 for _ in open(telco_copy / FILE_NAME)) - 1
    inject_dirty_rows(
        telco_copy / FILE_NAME,
        int(rows * 0.02),
        seed=1,
        key="customerID",
        category="InternetService",
        number="MonthlyCharges",
    )
    with pytest.raises(IngestFailed, match=r"40 of 2000 rows set aside, at most 1\.00% allowed"):
        ingest_raw_tables(churn_config, source=str(telco_copy), run_id="too-dirty")


def test_duplicate_keys_stop_with_offending_values(churn_config, telco_copy: Path, workspace: Path) -> None:
    duplicate = {}

    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        duplicate["id"] = frame.loc[0, "customerID"]
        frame.loc[5, "customerID"] = frame.loc[0, "customerID"]
        return frame

    _rewrite(telco_copy, edit)
    with pytest.raises(IngestFailed) as caught:
        ingest_raw_tables(churn_config, source=str(telco_copy), run_id="dupes")
    failure = caught.value.report.failures[0]
    assert (failure.expectation, failure.column) == ("expect_column_values_to_be_unique", "customerID")
    assert duplicate["id"] in failure.examples and failure.unexpected_count == 2


def test_label_rate_and_row_floor_are_dataset_errors(churn_config, telco_copy: Path, workspace: Path) -> None:
    _rewrite(telco_copy, lambda frame: frame.head(300).assign(Churn="No"))
    with pytest.raises(IngestFailed) as caught:
        ingest_raw_tables(churn_config, source=str(telco_copy), run_id="label")
    assert _failed_expectations(caught.value.report) == {
        ("expect_label_rate_to_be_between", None),
        ("expect_table_row_count_to_be_between", None),
    }
    assert "positive-label share expected in [0.1, 0.5]; observed 0.0" in str(caught.value)


def test_warn_rules_keep_rows_and_report(tmp_path: Path, telco_copy: Path, workspace: Path) -> None:
    raw = yaml.safe_load((CONFIGS / "churn.yaml").read_text())
    raw["data"]["tables"]["customers"]["columns"]["MonthlyCharges"].update(max=100, severity="warn")
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_model_config(path, defaults=yaml.safe_load((CONFIGS / "defaults.yaml").read_text()))
    frame = pd.read_csv(telco_copy / FILE_NAME)
    above = int((frame["MonthlyCharges"] > 100).sum())
    assert above > 0

    report = ingest_raw_tables(config, source=str(telco_copy), run_id="warn")
    assert report.status == "passed_with_warnings"
    assert report.tables["customers"].rows_quarantined == 0
    assert report.tables["customers"].warnings == {"MonthlyCharges: above maximum 100": above}
    [warning] = report.warnings
    assert (warning.expectation, warning.unexpected_count) == ("expect_column_values_to_be_between", above)


def test_failed_rerun_keeps_the_previous_good_tables(churn_config, telco_copy: Path, workspace: Path) -> None:
    good = ingest_raw_tables(churn_config, source=str(telco_copy), run_id="rerun")
    before = (Path(good.interim_dir) / "customers.parquet").read_bytes()
    _rewrite(telco_copy, lambda frame: frame.drop(columns=["Contract"]))
    with pytest.raises(IngestFailed):
        ingest_raw_tables(churn_config, source=str(telco_copy), run_id="rerun")
    assert (Path(good.interim_dir) / "customers.parquet").read_bytes() == before
    leftovers = [p.name for p in (workspace / "data" / "interim" / "churn").iterdir()]
    assert leftovers == ["rerun"]


def test_missing_source_folder_is_a_clear_error(churn_config, workspace: Path) -> None:
    from tabular_mlops.storage import StorageError

    with pytest.raises(StorageError, match=r"/nowhere/telco: data folder does not exist"):
        ingest_raw_tables(churn_config, source="/nowhere/telco", run_id="nowhere")


def test_invalid_utf8_row_is_set_aside_not_altered(churn_config, telco_copy: Path, workspace: Path) -> None:
    path = telco_copy / FILE_NAME
    lines = path.read_bytes().split(b"\n")
    lines[6] = lines[6].replace(b"Female", b"Fem\xe9le", 1).replace(b"Male", b"M\xe9le", 1)
    path.write_bytes(b"\n".join(lines))
    report = ingest_raw_tables(churn_config, source=str(telco_copy), run_id="latin1")
    table = report.tables["customers"]
    assert table.rows_quarantined == 1 and table.rows_written == table.rows_read - 1
    quarantined = pd.read_csv(table.quarantine_file)
    assert quarantined.loc[0, "line"] == 7
    assert "unicode" in quarantined.loc[0, "reasons"].lower()
    interim = pd.read_parquet(Path(report.interim_dir) / "customers.parquet")
    assert not interim["gender"].str.contains("\ufffd").any()


def test_line_numbers_count_blank_lines_and_quoted_newlines(
    churn_config, telco_copy: Path, workspace: Path
) -> None:
    path = telco_copy / FILE_NAME
    lines = path.read_text().splitlines()
    fields = next(csv.reader([lines[3]]))
    fields[0] = fields[0][:5] + "\n" + fields[0][5:]  # a quoted key over physical lines 4-5
    lines[3] = ",".join(f'"{f}"' if "\n" in f else f for f in fields)
    lines.insert(5, "")  # a blank line, physical line 7
    bad = next(csv.reader([lines[7]]))
    bad[5] = "12.5"  # tenure of the record on physical line 9
    lines[7] = ",".join(bad)
    path.write_text("\n".join(lines) + "\n")
    report = ingest_raw_tables(churn_config, source=str(telco_copy), run_id="lines")
    table = report.tables["customers"]
    quarantined = pd.read_csv(table.quarantine_file)
    assert quarantined["line"].tolist() == [4, 9] and table.line_numbers == "exact"
    assert quarantined.loc[0, "reasons"].startswith("customerID: does not match")
    assert quarantined.loc[0, "raw_row"].startswith(f'"{fields[0]}",')
    assert quarantined.loc[1, "reasons"] == "tenure: not an integer ('12.5')"
    assert table.rows_read == len(pd.read_csv(path, dtype=str))
