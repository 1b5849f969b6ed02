"""Model configs: the shipped YAMLs parse, and every kind of broken file names file, field, reason."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from tabular_mlops.config import ConfigError, get_model_config, load_model_config, load_model_configs

CONFIGS = Path(__file__).resolve().parents[2] / "include" / "configs"


def test_shipped_configs_parse_with_expected_defaults() -> None:
    configs = load_model_configs(CONFIGS)
    assert list(configs) == sorted(configs)
    assert {"churn", "credit_risk"} <= set(configs)
    churn, credit = configs["churn"], configs["credit_risk"]
    assert churn.model.type == "lightgbm" and churn.model.registered_name == "churn-classifier"
    assert credit.model.type == "xgboost" and credit.model.registered_name == "credit-risk-classifier"
    assert churn.gate.min_auc == 0.82 and churn.gate.min_accuracy == 0.78
    # Shared defaults reach every model unless the model overrides them.
    assert churn.data.max_quarantine_share == 0.01
    assert churn.schedules.scoring == "0 2 * * *"
    assert churn.alerts.smtp_conn_id == "smtp_default" and churn.alerts.recipients
    assert churn.alerts.sender == credit.alerts.sender == "mlops-alerts@example.com"
    assert churn.data.label_table == "customers"
    assert credit.data.label_table == "application_train"
    assert len(credit.data.tables) == 8


def _config_dir(tmp_path: Path, edit: Any) -> Path:
    """A copy of the shipped churn config with `edit(raw_dict)` applied."""
    folder = tmp_path / "configs"
    folder.mkdir()
    shutil.copy(CONFIGS / "defaults.yaml", folder)
    raw = yaml.safe_load((CONFIGS / "churn.yaml").read_text())
    edit(raw)
    (folder / "churn.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def _set(path: str, value: Any) -> Any:
    def edit(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "field", "reason"),
    [
        (_set("model.type", "catboost"), "model.type", "'xgboost' or 'lightgbm'"),
        (_set("model.threshold", 1.5), "model.threshold", "less than 1"),
        (_set("gate.min_auc", "high"), "gate.min_auc", "valid number"),
        (_set("schedules.scoring", "every day"), "schedules.scoring", "not a valid cron expression"),
        (_set("alerts.recipients", ["not-an-email"]), "alerts.recipients.0", "email"),
        (_set("alerts.sender", "mlops-alerts.example.com"), "alerts.sender", "not a valid email address"),
        (_set("model.registered_name", "Churn Classifier"), "model.registered_name", "pattern"),
        (_set("data.tables.customers.columns.tenure.type", "integer"), "columns.tenure.type", "'int'"),
        (
            _set("data.tables.customers.columns.gender.values", None),
            "columns.gender",
            "a category column needs its allowed 'values'",
        ),
        (
            _set("data.tables.customers.columns.tenure.min", 80),
            "columns.tenure",
            "min (80.0) is greater than max (72.0)",
        ),
        (
            _set("data.tables.customers.label.column", "Churned"),
            "data.tables.customers",
            "column 'Churned' is used but not declared",
        ),
        (
            _set("data.tables.customers.primary_key", ["customerID", "gender"]),
            "data.tables.customers",
            "'gender' must be declared nullable: false",
        ),
        (
            _set("data.tables.customers.columns.Partner.values", [True, False]),
            "columns.Partner.values",
            "YAML boolean; quote it",
        ),
        (
            _set("data.tables.customers.columns.customerID.pattern", "([A-Z"),
            "columns.customerID",
            "not a valid regular expression",
        ),
        (_set("features.sql_dir", "../../etc"), "features.sql_dir", "under include/sql/"),
        (_set("features.descriptions", "../x.csv"), "features.descriptions", "under include/descriptions/"),
        (_set("scoring.explain_top_k", 21), "scoring.explain_top_k", "less than or equal to 20"),
        (_set("scoring.explain_top_k", -1), "scoring.explain_top_k", "greater than or equal to 0"),
        (_set("model.learning_rate", 0.1), "model.learning_rate", "Extra inputs are not permitted"),
        (_set("split.test_size", 0), "split.test_size", "greater than 0"),
        (
            _set(
                "data.tables.customers.foreign_keys",
                [{"column": "customerID", "references": ["accounts.id"]}],
            ),
            "data",
            "references unknown table 'accounts'",
        ),
    ],
)
def test_broken_config_names_file_field_and_reason(
    tmp_path: Path, edit: Any, field: str, reason: str
) -> None:
    folder = _config_dir(tmp_path, edit)
    with pytest.raises(ConfigError) as caught:
        load_model_configs(folder)
    message = str(caught.value)
    assert str(folder / "churn.yaml") in message
    assert field in message
    assert reason in message


def test_a_config_without_an_alert_sender_fails_at_load_naming_the_field(tmp_path: Path) -> None:
    """The From address is checked when the config loads, not at the first alert's SMTP call."""
    folder = _config_dir(tmp_path, lambda raw: raw["alerts"].pop("sender"))
    with pytest.raises(ConfigError) as caught:
        load_model_configs(folder)
    expected = f"{folder / 'churn.yaml'}: 1 invalid field(s)\n  alerts.sender: Field required"
    assert str(caught.value) == expected


def test_secrets_in_yaml_are_refused(tmp_path: Path) -> None:
    folder = _config_dir(tmp_path, _set("model.params", {"aws_secret_access_key": "abc"}))
    with pytest.raises(
        ConfigError, match=r"model\.params\.aws_secret_access_key: secrets must not live in YAML"
    ):
        load_model_configs(folder)


def test_invalid_yaml_and_wrong_top_level(tmp_path: Path) -> None:
    bad = tmp_path / "churn.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"churn\.yaml: not valid YAML"):
        load_model_config(bad, defaults={})
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_model_config(bad, defaults={})


def test_name_must_match_file(tmp_path: Path) -> None:
    folder = _config_dir(tmp_path, _set("name", "attrition"))
    with pytest.raises(ConfigError, match="'attrition' must match the file name 'churn'"):
        load_model_configs(folder)


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"no config for model 'fraud'.*known: churn, credit_risk"):
        get_model_config("fraud", CONFIGS)


def test_a_third_model_needs_only_a_yaml(tmp_path: Path) -> None:
    folder = _config_dir(tmp_path, lambda raw: None)
    raw = yaml.safe_load((CONFIGS / "churn.yaml").read_text())
    raw["model"]["registered_name"] = "churn-b-classifier"
    raw["features"]["sql_dir"] = "churn_b"
    (folder / "churn_b.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    configs = load_model_configs(folder)
    assert list(configs) == ["churn", "churn_b"]
    assert configs["churn_b"].model.registered_name == "churn-b-classifier"
