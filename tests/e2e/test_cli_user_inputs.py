"""What users have and type: a CSV file for `--data`/`--input`, the playbook's training flags,
`mlops evaluate` against an alias, and the same overrides as training DAG Params.

One module registry (real SQLite MLflow) and three trainings shared by every test: the baseline
(`mlops train --data <file>`, promoted), a run with every override (refused by a deliberately high
AUC floor, so production stays on the baseline for `mlops evaluate`) and one DAG run with Params.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import last_json, run_mlops

PROJECT_DIR = Path(__file__).resolve().parents[2]
TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"
LOW_FLOORS = ("--min-auc", "0.6", "--min-accuracy", "0.6")  # 2,000 generated customers
OVERRIDES = (
    "--test-split",
    "0.25",
    "--num-leaves",
    "64",
    "--learning-rate",
    "0.05",
    "--param",
    "max_depth=6",
    "--param",
    "min_child_samples=10",
    "--experiment-name",
    "churn-tuning",
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The module's registry, data, reports and lake, in this process and in every `mlops` it runs."""
    folder = tmp_path_factory.mktemp("user_inputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        patch.setenv("MLOPS_MLFLOW_DIR", str(folder))
        patch.setenv("MLOPS_DATA_DIR", str(folder / "data"))
        patch.setenv("MLOPS_REPORTS_DIR", str(folder / "reports"))
        patch.setenv("MLOPS_LAKE", str(folder / "lake"))
        yield folder


@pytest.fixture(scope="module")
def telco_file(root: Path, telco_raw: Path) -> Path:
    """The generated Telco table as a user has it: one file, under a name of their own (in the lake)."""
    target = root / "lake" / "exports" / "telco.csv"
    target.parent.mkdir(parents=True)
    shutil.copyfile(telco_raw / TELCO_FILE, target)
    return target


@pytest.fixture(scope="module")
def baseline(telco_file: Path) -> dict[str, Any]:
    """`mlops train --data <file>` with the config's values: version 1, promoted."""
    result = run_mlops("train", "--model", "churn", "--data", str(telco_file), *LOW_FLOORS)
    assert result.returncode == 0, result.stderr[-3000:]
    return last_json(result)


@pytest.fixture(scope="module")
def tuned(baseline: dict[str, Any], telco_file: Path) -> tuple[int, dict[str, Any], str]:
    """Every override at once; the AUC floor 0.99 refuses it, so production stays on the baseline."""
    result = run_mlops(
        "train", "--model", "churn", "--data", str(telco_file), *OVERRIDES, "--min-auc", "0.99"
    )
    return result.returncode, last_json(result), result.stderr


def _run(run_id: str) -> Any:
    from tabular_mlops import tracking

    return tracking.configure().get_run(run_id)


def _estimator(name: str, version: str) -> dict[str, Any]:
    """The hyper-parameters of the booster a registry version holds (loaded as consumers load it)."""
    from tabular_mlops import signing

    return signing.load_verified(name, version).unwrap_python_model().estimator.get_params()


def test_train_takes_a_single_csv_and_records_no_overrides(baseline: dict, telco_file: Path) -> None:
    assert baseline["version"] == "1" and baseline["promoted"] is True
    assert "overrides" not in baseline
    run = _run(baseline["run_id"])
    assert not [k for k in run.data.params if k.startswith("override.")]
    assert "mlops.overrides" not in run.data.tags
    assert run.data.params["split.test_size"] == "0.2" and run.data.params["model.num_leaves"] == "15"
    manifest = json.loads((Path(run.data.tags["interim_dir"]) / "_manifest.json").read_text())
    assert manifest["source"] == str(telco_file)


def test_validate_and_score_take_a_single_csv(baseline: dict, telco_file: Path, root: Path) -> None:
    validated = run_mlops("validate", "--model", "churn", "--data", str(telco_file), "--run-id", "file")
    assert validated.returncode == 0, validated.stderr
    assert last_json(validated)["tables"]["customers"]["read"] == 2000
    assert f"customers: reading {telco_file} with the row rules" in validated.stderr

    output = root / "lake" / "predictions" / "churn" / "from-file"
    scored = run_mlops("score", "--model", "churn", "--input", str(telco_file), "--output", str(output))
    assert scored.returncode == 0, scored.stderr
    assert last_json(scored)["counts"]["scored"] == 2000
    manifest = json.loads((output / "_manifest.json").read_text())
    assert manifest["input"]["location"] == str(telco_file)  # the user's file, not a staging copy
    assert manifest["input"]["tables"][0]["file"] == "telco.csv"


def test_validate_takes_a_single_csv_on_s3(bucket: str, s3_client: Any, telco_raw: Path, root: Path) -> None:
    s3_client.upload_file(str(telco_raw / TELCO_FILE), bucket, "exports/customers.csv")
    validated = run_mlops("validate", "--model", "churn", "--data", f"s3://{bucket}/exports/customers.csv")
    assert validated.returncode == 0, validated.stderr
    assert last_json(validated)["tables"]["customers"]["written"] == 2000
    missing = run_mlops("validate", "--model", "churn", "--data", f"s3://{bucket}/exports/nobody.csv")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"s3://{bucket}/exports/nobody.csv: no such file; churn reads one table" in missing.stderr


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`mlops <args>` in this process (an escaping exception fails the test): exit code and stderr."""
    from tabular_mlops.cli import main

    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def test_wrong_paths_of_a_multi_table_model_name_the_expected_files(
    root: Path, home_credit_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = sorted(p.name for p in home_credit_raw.glob("*.csv"))
    single = str(home_credit_raw / "application_train.csv")
    result = run_mlops("validate", "--model", "credit_risk", "--data", single)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if "error:" in line]
    assert error.startswith(f"mlops validate: error: {single} is a single file, but credit_risk reads 8")
    assert all(name in error for name in expected)
    code, stderr = _main(capsys, "train", "--model", "credit_risk", "--data", single)
    assert code == 1 and stderr.startswith(f"mlops train: error: {single} is a single file")

    partial = tmp_path / "home_credit"  # a folder holding two of the eight tables
    partial.mkdir()
    for name in ("application_train.csv", "application_test.csv"):
        shutil.copyfile(home_credit_raw / name, partial / name)
    code, stderr = _main(capsys, "validate", "--model", "credit_risk", "--data", str(partial))
    assert code == 1
    assert f"file bureau.csv not found in the source ({partial})" in stderr
    hint = next(line for line in stderr.splitlines() if line.strip().startswith(f"{partial}:"))
    assert "credit_risk reads 8 tables from one folder" in hint and all(n in hint for n in expected)
    assert "the location holds: application_test.csv, application_train.csv" in hint


def test_each_override_lands_on_the_run_and_in_the_model(tuned: tuple, baseline: dict) -> None:
    from tabular_mlops import registry, tracking

    code, summary, stderr = tuned
    assert code == 1 and summary["gate"]["passed"] is False  # the 0.99 floor, by design
    assert summary["version"] == "2" and summary["overrides"]["num_leaves"] == 64
    run = _run(summary["run_id"])
    params = run.data.params
    assert {k: v for k, v in params.items() if k.startswith("override.")} == {
        "override.test_split": "0.25",
        "override.num_leaves": "64",
        "override.learning_rate": "0.05",
        "override.param.max_depth": "6",
        "override.param.min_child_samples": "10",
        "override.experiment_name": "churn-tuning",
    }
    assert run.data.tags["mlops.overrides"] == (
        "experiment_name,learning_rate,num_leaves,param.max_depth,param.min_child_samples,test_split"
    )
    # The effective values beside them, and the model they made.
    assert params["split.test_size"] == "0.25" and params["model.num_leaves"] == "64"
    assert params["model.n_estimators"] == "600"  # what no override touched stays the config's
    assert 0.2 < int(params["rows.test"]) / 2000 < 0.3
    assert tracking.configure().get_experiment(run.info.experiment_id).name == "churn-tuning"
    booster = _estimator("churn-classifier", "2")
    assert (booster["num_leaves"], booster["learning_rate"], booster["max_depth"]) == (64, 0.05, 6)
    assert booster["min_child_samples"] == 10 and _estimator("churn-classifier", "1")["num_leaves"] == 15
    assert registry.alias_version("churn-classifier", registry.PRODUCTION) == baseline["version"]
    assert "overrides of the config: test_split=0.25" in stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--test-split", "1.5"), "--test-split 1.5 refused: Input should be less than 1"),
        (("--param", "nonsense=1"), "--param nonsense=1 refused: LGBMClassifier (lightgbm, churn) has no"),
        (("--register-name", "Churn Model"), "--register-name 'Churn Model' refused: String should match"),
    ],
)
def test_bad_override_values_are_one_line_errors(
    root: Path, telco_file: Path, flags: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stderr = _main(
        capsys, "train", "--model", "churn", "--data", str(telco_file), "--run-id", "bad", *flags
    )
    assert code == 2, stderr
    assert stderr.startswith(f"mlops train: error: {message}") and len(stderr.strip().splitlines()) == 1
    assert not (root / "data" / "interim" / "churn" / "bad").exists()  # refused before reading data


def test_evaluate_compares_a_version_with_the_alias_on_the_same_rows(
    tuned: tuple, baseline: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_mlops("evaluate", "--model", "churn", "--version", "2", "--baseline-alias", "production")
    assert result.returncode == 0, result.stderr
    compared = last_json(result)
    assert compared["version"] == "2" and compared["baseline"] == {"alias": "production", "version": "1"}
    rows, metrics = compared["rows"], compared["metrics"]
    assert rows["split"] == "test" and rows["n"] == metrics["version"]["n"] == metrics["baseline"]["n"]
    assert metrics["version"]["n_positive"] == metrics["baseline"]["n_positive"] == rows["positives"]
    for name in ("roc_auc", "accuracy", "brier", "log_loss"):
        difference = metrics["version"][name] - metrics["baseline"][name]
        assert metrics["difference"][name] == pytest.approx(difference)
    low, high = compared["roc_auc_difference_95ci"]
    assert low <= metrics["difference"]["roc_auc"] <= high
    table = [line.split() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert table[0] == ["metric", "v2", "v1", "(production)", "difference"]
    assert table[1][0] == "roc_auc" and float(table[1][1]) == pytest.approx(
        metrics["version"]["roc_auc"], 1e-3
    )

    code, stderr = _main(capsys, "evaluate", "--model", "churn", "--version", "9")
    assert (code, stderr) == (1, "mlops evaluate: error: churn-classifier has no version '9'\n")
    code, stderr = _main(
        capsys, "evaluate", "--model", "churn", "--version", "2", "--baseline-alias", "champion"
    )
    assert code == 1
    assert (
        stderr
        == "mlops evaluate: error: churn-classifier has no alias 'champion' (aliases: production -> v1)\n"
    )


@pytest.fixture(scope="module")
def dagbag(root: Path, airflow_db: str) -> Any:
    """The bundle's DAGs, parsed with this module's environment."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_DIR / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


def _conf(**given: Any) -> dict[str, Any]:
    """A run_conf naming every override Param (dag.test keeps the last run's values otherwise)."""
    names = ("test_split", "learning_rate", "num_leaves", "experiment_name", "register_name")
    return {"dry_run": False, **dict.fromkeys(names), **given}


def test_training_dag_takes_a_file_and_the_same_overrides(
    dagbag: Any, telco_file: Path, baseline: dict
) -> None:
    from airflow.sdk.exceptions import ParamValidationError
    from tabular_mlops import registry, tracking

    dag = dagbag.get_dag("churn_training")
    assert {"test_split", "learning_rate", "num_leaves", "experiment_name", "register_name"} <= set(
        dag.params
    )
    assert "num_leaves" not in dagbag.get_dag("credit_risk_training").params  # XGBoost has none
    for name, bad in (("test_split", 1.5), ("num_leaves", 1), ("register_name", "Churn Model")):
        with pytest.raises(ParamValidationError):
            dag.params.get_param(name).resolve(bad)

    conf = _conf(data=str(telco_file), test_split=0.3, num_leaves=31, min_auc=0.6, min_accuracy=0.6)
    run = dag.test(run_conf={**conf, "experiment_name": "churn-dag", "register_name": "churn-dag-scratch"})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    client = tracking.configure()
    [version] = client.search_model_versions("name = 'churn-dag-scratch'")
    params = client.get_run(version.run_id).data.params
    assert (params["override.test_split"], params["override.num_leaves"]) == ("0.3", "31")
    assert params["override.register_name"] == "churn-dag-scratch" and params["model.num_leaves"] == "31"
    experiment = client.get_experiment(client.get_run(version.run_id).info.experiment_id)
    assert experiment.name == "churn-dag" and _estimator("churn-dag-scratch", "1")["num_leaves"] == 31
    # Registered, evaluated and gated under its own name; no alias moved anywhere.
    assert (
        version.tags["gate.passed"] == "true" and not client.get_registered_model("churn-dag-scratch").aliases
    )
    assert run.get_task_instance("promote").xcom_pull(task_ids="promote")["skipped"] == "register_name"
    assert registry.alias_version("churn-classifier", registry.PRODUCTION) == baseline["version"]

    refused = dag.test(run_conf=_conf(data=str(telco_file), register_name="credit-risk-classifier"))
    states = {ti.task_id: (ti.state, ti.try_number) for ti in refused.get_task_instances()}
    assert refused.state == "failed" and states["data_ingest"] == ("failed", 1)  # no retries
    assert states["train"][0] == "upstream_failed"
