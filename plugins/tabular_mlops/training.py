"""The train_baseline stage: split, fit with early stopping, log one pyfunc, register a version.

Rows go to train, validation or test by a seeded hash of the entity key, so an entity stays on
its side as the data grows; a dry run logs and signs the model on its run and registers nothing.

Reads the typed interim tables (and the feature table for feature-store models), writes the split's
test rows beside the run for the evaluate and gate stages, and returns small values (run id,
version) that Airflow passes between tasks.

`RunOverrides` are one run's changes to the config (`mlops train` flags, the training DAG's Params):
`apply_overrides` validates them into a copy of the config, and the run records each one as an
`override.<name>` param beside the effective values, so a run that was not the config's shows it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from tabular_mlops import settings, signing, tracking
from tabular_mlops.config import ConfigError, ModelConfig, ModelSpec, SplitSpec

LABEL = "__label"
TEST_ROWS = "test_rows.parquet"
# The drift reference logged with every version, under the run's monitoring/ artifacts.
REFERENCE_FILE = "reference.parquet"
REFERENCE_PROBABILITY = "__probability"
# Model input rows with their probabilities, logged under serving/ by versions trained before
# golden requests (the service still checks those versions against them).
GOLDEN_FILE = "golden.parquet"
# Raw request bodies (a record, or an application with its history rows) with the probabilities
# this version gives them, logged under serving/: the service replays them through its request
# path before a version takes traffic.
GOLDEN_REQUESTS = "golden_requests.json"
GOLDEN_ROWS = 50
# Run tag of a dry run: its model was logged and signed on the run, and no version was registered.
DRY_RUN_TAG = "mlops.dry_run"
# Run tag listing the overrides a run was trained with (each is also an `override.<name>` param).
OVERRIDES_TAG = "mlops.overrides"
# The overrides a DAG run takes from its Params, by Param name (null: the config's value).
PARAM_OVERRIDES = ("test_split", "learning_rate", "num_leaves", "experiment_name", "register_name")
# Estimator arguments the bundle sets itself (modeling.build_estimator), and where they come from.
RESERVED_PARAMS = {
    "scale_pos_weight": "model.imbalance",
    "random_state": "split.seed",
    "early_stopping_rounds": "model.early_stopping_rounds",
    "eval_metric": "the bundle (auc, then logloss for early stopping)",
    "callbacks": "the bundle (early stopping)",
}
MAX_NUM_LEAVES = 131_072  # LightGBM's own upper bound
MAX_REGISTERED_NAME = 256  # MLflow's registry stores names in a 256-character column


class _CloudPickleNotice(logging.Filter):
    """Drops MLflow's "Passing a Python object as `python_model`" notice, for the reason below."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passing a Python object as `python_model`")


def _quiet_cloudpickle_notice() -> None:
    """Silence MLflow's models-from-code notice once per process.

    MLflow recommends logging a model from a code file because unpickling runs code. Here every
    version is signed (HMAC over its artifacts) and nothing unpickles a version whose signature
    does not check out, which is the risk the notice is about. Models from code would rebuild the
    classifier from artifacts in load_context; serving's fast path, monitoring and the golden check
    read the unpickled object's booster, encoder and SQL, so that move belongs with the single
    predict path, not here.
    """
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    if not any(isinstance(f, _CloudPickleNotice) for f in pyfunc_log.filters):
        pyfunc_log.addFilter(_CloudPickleNotice())


@dataclass(frozen=True)
class RunOverrides:
    """One run's changes to a model config (CLI flags, DAG Params); None keeps the config's value."""

    test_split: float | None = None
    learning_rate: float | None = None
    num_leaves: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # any estimator argument (--param k=v)
    experiment_name: str | None = None
    register_name: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> RunOverrides:
        """The overrides among a DAG run's Params (absent or null: the config's value)."""
        given: dict[str, Any] = {name: (params or {}).get(name) for name in PARAM_OVERRIDES}
        return cls(**given)

    def given(self) -> dict[str, Any]:
        """Each override that was given, by name; estimator arguments as `param.<key>`."""
        found = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "params"}
        given = {name: value for name, value in found.items() if value is not None}
        return given | {f"param.{key}": value for key, value in self.params.items()}

    def renames(self, config: ModelConfig) -> bool:
        """True when the run registers under another name than `config`'s (the file's, unchanged)."""
        return self.register_name is not None and self.register_name != config.model.registered_name


def experiment_for(config: ModelConfig, overrides: RunOverrides | None = None) -> str:
    """The MLflow experiment of a training run: the override, else the model's (tracking)."""
    if overrides is not None and overrides.experiment_name is not None:
        return overrides.experiment_name
    return tracking.experiment_name(config.name)


def apply_overrides(
    config: ModelConfig, overrides: RunOverrides | None, naming: Callable[[str], str] = str
) -> ModelConfig:
    """A copy of `config` with the run's overrides, validated like the YAML is.

    ConfigError names the override as the caller spells it (`naming`: "test_split" -> "--test-split").
    """
    if overrides is None or not overrides.given():
        return config
    split = config.split
    if overrides.test_split is not None:
        values = {**config.split.model_dump(), "test_size": overrides.test_split}
        where = f"split.test_size; split.validation_size is {config.split.validation_size}"
        split = _validated(SplitSpec, values, f"{naming('test_split')} {overrides.test_split}", where)
    model_updates: dict[str, Any] = {}
    params = estimator_overrides(config, overrides, naming)
    if params:
        model_updates["params"] = {**config.model.params, **params}
    if overrides.register_name is not None:
        _check_register_name(config, overrides.register_name, naming("register_name"))
        model_updates["registered_name"] = overrides.register_name
    model = config.model
    if model_updates:
        label = f"{naming('register_name')} {overrides.register_name!r}"
        values = {**config.model.model_dump(), **model_updates}
        model = _validated(ModelSpec, values, label, "model.registered_name: lower-case letters, digits, '-'")
    if overrides.experiment_name is not None:
        _check_experiment_name(overrides.experiment_name, naming("experiment_name"))
    return config.model_copy(update={"split": split, "model": model})


def estimator_overrides(
    config: ModelConfig, overrides: RunOverrides, naming: Callable[[str], str] = str
) -> dict[str, Any]:
    """The estimator arguments the run changes, checked against the configured learner's get_params().

    `learning_rate` applies to both boosters; `num_leaves` is LightGBM's and is refused for XGBoost,
    whose trees are sized by max_depth (or max_leaves with grow_policy lossguide) instead.
    """
    wanted = {key: (f"{naming('param')} {key}={value!r}", value) for key, value in overrides.params.items()}
    if overrides.learning_rate is not None:
        rate = overrides.learning_rate
        if not 0 < rate <= 1:
            raise ConfigError(f"{naming('learning_rate')} {rate} refused: must be above 0 and at most 1")
        _merge(wanted, "learning_rate", naming("learning_rate"), rate)
    if overrides.num_leaves is not None:
        leaves = overrides.num_leaves
        if config.model.type != "lightgbm":
            depth = config.model.params.get("max_depth", "its default")
            raise ConfigError(
                f"{naming('num_leaves')} applies to LightGBM, but {config.name} trains {config.model.type}, "
                f"whose trees are sized by max_depth (now {depth}): use {naming('param')} max_depth=N, or "
                f"{naming('param')} max_leaves=N with {naming('param')} grow_policy=lossguide"
            )
        if isinstance(leaves, bool) or not isinstance(leaves, int) or not 2 <= leaves <= MAX_NUM_LEAVES:
            raise ConfigError(
                f"{naming('num_leaves')} {leaves!r} refused: a whole number from 2 to {MAX_NUM_LEAVES}"
            )
        _merge(wanted, "num_leaves", naming("num_leaves"), leaves)
    if wanted:
        _check_estimator_keys(config, wanted)
    return {key: value for key, (_label, value) in wanted.items()}


def _merge(wanted: dict[str, tuple[str, Any]], key: str, label: str, value: Any) -> None:
    """Add a dedicated flag's estimator argument; ConfigError when a --param gave it another value."""
    if key in wanted and wanted[key][1] != value:
        raise ConfigError(f"{label} {value!r} and {wanted[key][0]} disagree: give {key} once")
    wanted[key] = (label, value)


def _check_estimator_keys(config: ModelConfig, wanted: dict[str, tuple[str, Any]]) -> None:
    """Refuse arguments the configured estimator does not have, the bundle sets, or of the wrong kind."""
    from tabular_mlops.modeling import build_estimator

    estimator = build_estimator(config.model, 1.0, config.split.seed)
    known = estimator.get_params()
    kind = f"{type(estimator).__name__} ({config.model.type}, {config.name})"
    for key, (label, value) in wanted.items():
        if key in RESERVED_PARAMS:
            raise ConfigError(f"{label} refused: {key} is set by {RESERVED_PARAMS[key]}, not by hand")
        if key not in known:
            names = ", ".join(sorted(k for k in known if k not in RESERVED_PARAMS))
            raise ConfigError(f"{label} refused: {kind} has no parameter {key!r}; it has: {names}")
        current = known[key]
        numeric = isinstance(current, int | float) and not isinstance(current, bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{label} refused: {key} takes a number (now {current!r})")
        if isinstance(current, bool) and not isinstance(value, bool):
            raise ConfigError(f"{label} refused: {key} takes true or false (now {current!r})")


def _validated(kind: type[Any], values: dict[str, Any], label: str, where: str) -> Any:
    """`kind` validated from `values`; ConfigError naming the override and the field it sets."""
    from pydantic import ValidationError

    try:
        return kind.model_validate(values)
    except ValidationError as exc:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(f"{label} refused: {reasons} ({where})") from None


def _check_register_name(config: ModelConfig, name: str, label: str) -> None:
    """Refuse a registry name too long for MLflow or belonging to another model config."""
    from tabular_mlops.config import load_model_configs

    if len(name) > MAX_REGISTERED_NAME:
        raise ConfigError(f"{label}: at most {MAX_REGISTERED_NAME} characters, got {len(name)}")
    folder = Path(config.source_file).parent if config.source_file else None
    for other in load_model_configs(folder).values():
        if other.name != config.name and other.model.registered_name == name:
            raise ConfigError(
                f"{label} {name!r} refused: it is the registered model of {other.name} "
                f"({other.source_file}); a run of {config.name} must not add versions to it"
            )


def _check_experiment_name(name: str, label: str) -> None:
    """Refuse an experiment name MLflow would refuse, or that only differs from another by spaces."""
    from mlflow.utils.validation import MAX_EXPERIMENT_NAME_LENGTH

    if not name.strip() or name != name.strip():
        raise ConfigError(f"{label} {name!r} refused: empty, or starts or ends with a space")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(f"{label} {name!r} refused: it contains a control character")
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        raise ConfigError(f"{label}: at most {MAX_EXPERIMENT_NAME_LENGTH} characters, got {len(name)}")


@dataclass
class TrainResult:
    """What one training run produced."""

    model: str
    run_id: str
    # None after a dry run: the model stays on the run (model_uri), unregistered.
    version: str | None
    registered_name: str
    model_uri: str
    best_iteration: int
    rows: dict[str, int]
    seconds: float
    work_dir: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


@dataclass
class _Split:
    """The model input rows, their labels, and the train / validation / test row positions."""

    frame: pd.DataFrame
    y: np.ndarray
    parts: dict[str, np.ndarray]


@dataclass
class _Fitted:
    """The fitted classifier and the pieces of its fit the run logs."""

    classifier: Any
    feature_rows: pd.DataFrame
    categorical: list[str]
    numeric: list[str]
    encoded_columns: list[str]  # the preprocessor's output columns, which importance is over
    best_iteration: int


def work_dir_for(config: ModelConfig, run_id: str) -> Path:
    """Folder of one training run's local working files (features, test rows)."""
    return settings.data_dir() / "training" / config.name / run_id


def label_vector(config: ModelConfig, frame: pd.DataFrame) -> np.ndarray:
    """1 where the label column holds the configured positive value, else 0."""
    spec = config.data.tables[config.data.label_table].label
    assert spec is not None  # noqa: S101 - type narrowing: label_table is the table with a label
    values = frame[spec.column]
    positive: Any = spec.positive
    if values.dtype.kind in "biuf":
        positive = int(positive)
    else:
        values = values.astype(str)
        positive = str(positive)
    return (values == positive).to_numpy().astype(int)


def model_input_frame(config: ModelConfig, interim_dir: Path, features_path: Path | None) -> pd.DataFrame:
    """Rows the logged model takes (raw entity records or feature rows) plus the label column."""
    table = config.data.label_table
    label_spec = config.data.tables[table].label
    assert label_spec is not None  # noqa: S101 - type narrowing: label_table is the table with a label
    key = config.features.entity_key
    entity_path = Path(interim_dir) / f"{table}.parquet"
    if config.features.model_input == "raw":
        entity = pd.read_parquet(entity_path)
        return entity.drop(columns=[label_spec.column]).assign(**{LABEL: label_vector(config, entity)})
    if features_path is None:
        raise ValueError(f"{config.name}: the feature table is needed (features.model_input = features)")
    entity = pd.read_parquet(entity_path, columns=[key, label_spec.column])
    frame = _feature_rows_of(features_path, key, entity[key])
    return frame.assign(**{LABEL: label_vector(config, entity)})


def _feature_rows_of(features_path: Path, key: str, keys: pd.Series) -> pd.DataFrame:
    """The feature rows of `keys` in their order (all-null where an entity has none), read once.

    The rows are taken in Arrow and converted column by column, freeing each as it goes, and Arrow's
    pool hands the pages it no longer uses back to the system: a merge of two pandas frames, with
    the pool keeping what parquet decoding had used, held 5.1 GB for a 1.5 GB table at full size.
    """
    import pyarrow.parquet as pq

    pool = pa.default_memory_pool()
    table = pq.read_table(features_path)
    pool.release_unused()
    index = pd.Index(table.column(key).to_numpy())
    if not index.is_unique:
        raise ValueError(f"{features_path}: the feature table repeats {key} values")
    positions = index.get_indexer(keys.to_numpy())
    rows = table.take(pa.array(positions, mask=positions < 0))
    del table
    frame = rows.to_pandas(self_destruct=True, split_blocks=True)
    del rows
    pool.release_unused()
    frame[key] = keys.to_numpy()  # entities without a feature row keep their key, as a left join does
    return frame


def split_positions(keys: pd.Series, split: SplitSpec) -> np.ndarray:
    """Where each entity goes, 0 train, 1 validation, 2 test, from a seeded hash of its key.

    An entity keeps its side however the data set grows or is reordered, so production's training
    entities never land in a later candidate's test rows (which would flatter production in the
    paired comparison). The shares hold in expectation, not exactly, and the label is not
    stratified: an assignment fixed per entity cannot depend on the others' labels. At the sizes the
    gate judges (hundreds of test positives) the positive rate of a part stays within a few points.
    """
    salt = f"{split.seed}\0".encode()
    # SHA-256, not Python's hash() or pandas' hashing: the same key must fall on the same side on
    # every machine and library version.
    draws = np.fromiter(
        (
            int.from_bytes(hashlib.sha256(salt + key.encode()).digest()[:8], "big") / 2.0**64
            for key in keys.astype(str)
        ),
        dtype=float,
        count=len(keys),
    )
    test_bound = split.test_size
    return np.where(draws < test_bound, 2, np.where(draws < test_bound + split.validation_size, 1, 0))


def split_indices(keys: pd.Series, config: ModelConfig) -> dict[str, np.ndarray]:
    """Train / validation / test row positions by the hash of the entity key (`split_positions`)."""
    where = split_positions(keys, config.split)
    return {name: np.flatnonzero(where == side) for side, name in enumerate(("train", "valid", "test"))}


def signature_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The input example with integer columns as floats, so the signature accepts missing values."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype.kind in "iu" or str(out[column].dtype) in ("Int64", "Int32", "Int16", "Int8"):
            out[column] = out[column].astype("float64")
        elif str(out[column].dtype) in ("string", "boolean"):
            out[column] = out[column].astype(object)
    return out


def config_hash(config: ModelConfig) -> str:
    """Stable hash of the parsed config (what the run was configured with)."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def git_commit() -> str:
    """Commit of the project checkout (with -dirty when it has uncommitted changes), or unknown."""
    try:
        head = subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["git", "-C", str(settings.project_dir()), "rev-parse", "HEAD"],  # noqa: S607 - the host's git on PATH, read-only provenance
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["git", "-C", str(settings.project_dir()), "status", "--porcelain", "--untracked-files=no"],  # noqa: S607 - as above
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def input_fingerprint(interim_dir: Path) -> str:
    """Fingerprint of the raw files behind the interim tables (from the ingest manifest)."""
    manifest = json.loads((Path(interim_dir) / "_manifest.json").read_text())
    digests = sorted(f"{name}:{t.get('source_sha256')}" for name, t in manifest["tables"].items())
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("xgboost", "lightgbm", "scikit-learn", "mlflow", "duckdb", "pandas", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def model_requirements(config: ModelConfig) -> list[str]:
    """Exact versions of what the logged model needs to load and predict."""
    names = ["mlflow", "pandas", "numpy", "scikit-learn", "pyarrow", "duckdb", "pydantic", "pyyaml"]
    names.append("xgboost" if config.model.type == "xgboost" else "lightgbm")
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for name in names:
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            # A pin the serving image cannot install would only fail later, far from the cause.
            raise RuntimeError(
                f"{config.name}: the model needs {name!r} to load, but it is not installed here"
            ) from None
    return pinned


def _log_parquet(frame: pd.DataFrame, name: str, artifact_path: str) -> None:
    """Log a frame as `<artifact_path>/<name>` (parquet) on the active MLflow run."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def _log_reference(config: ModelConfig, data: _Split, fitted: _Fitted, importance: pd.Series) -> None:
    """Log what monitoring compares a window against: a seeded sample of the validation rows'
    features with the version's probabilities, and the importance of each input feature.

    Held-out rows, not training rows: the trees fit their training rows, so in-sample probabilities
    are more extreme than anything the version gives new rows, and prediction drift would fire on
    a window identical to the training data. The entity key rides along to show which rows they are.
    """
    import mlflow

    from tabular_mlops.drift import column_importance

    classifier, held_out = fitted.classifier, data.parts["valid"]
    rng = np.random.default_rng(config.split.seed)
    take = min(len(held_out), config.monitoring.reference_rows)
    sample = np.sort(rng.choice(held_out, size=take, replace=False))
    key = config.features.entity_key
    reference = fitted.feature_rows.iloc[sample][[key, *classifier.feature_columns]].reset_index(drop=True)
    reference[REFERENCE_PROBABILITY] = classifier.predict_proba(data.frame.iloc[sample])
    _log_parquet(reference, REFERENCE_FILE, "monitoring")
    columns = column_importance(importance, fitted.categorical, fitted.numeric)
    mlflow.log_dict(columns, "monitoring/column_importance.json")


def _log_calibrator(
    classifier: Any, frame: pd.DataFrame, y: np.ndarray, held_out: np.ndarray, say: Any
) -> None:
    """Log the calibration map that monitoring estimates a window's performance with before its
    labels arrive (`estimation.CALIBRATOR_FILE`), fitted on the validation rows' probabilities.

    Validation rows: the trees never fit them (they only chose when to stop, one number), and the
    test rows stay untouched for the gate. A validation part with one class only gets no map;
    monitoring then says the run has none.
    """
    import mlflow

    from tabular_mlops.estimation import CALIBRATOR_FILE, fit_calibrator

    labels = y[held_out]
    if np.unique(labels).size < 2:
        say(f"no {CALIBRATOR_FILE}: the {len(held_out)} validation rows do not hold both classes")
        return
    calibrator = fit_calibrator(
        labels, classifier.predict_proba(frame.iloc[held_out]), fitted_on="validation rows (early stopping)"
    )
    mlflow.log_text(calibrator.to_json(), CALIBRATOR_FILE)


def _log_golden(config: ModelConfig, classifier: Any, rows: pd.DataFrame, interim_dir: Path) -> None:
    """Log raw request bodies of test entities with the probabilities this version gives their
    model input rows: a service replays them through its whole request path (schema, feature SQL,
    encoder, booster) and refuses the version if an answer moves."""
    import mlflow

    if config.features.model_input == "raw":
        requests = pa.Table.from_pandas(rows, preserve_index=False).to_pylist()
        probabilities = classifier.predict_proba(rows)
    else:
        key = config.features.entity_key
        requests = golden_requests(config, interim_dir, rows[key].tolist())
        chosen = rows.set_index(key).loc[[r["application"][key] for r in requests]].reset_index()
        probabilities = classifier.predict_proba(chosen[rows.columns])
    golden = {"requests": requests, "probabilities": [float(p) for p in probabilities]}
    mlflow.log_dict(golden, f"serving/{GOLDEN_REQUESTS}")


def golden_requests(config: ModelConfig, interim_dir: Path, keys: list[Any]) -> list[dict[str, Any]]:
    """Requests of the entities `keys` (in order): the application and every history table's rows,
    read from the interim tables, leaving out entities whose history exceeds a serving cap."""
    key = config.features.entity_key
    label = config.data.tables[config.data.label_table].label
    drop = {label.column} if label is not None else set()
    applications = _interim_rows(interim_dir, config.data.label_table, key, keys)
    history: dict[str, list[dict[str, Any]]] = {}
    for table in config.data.tables:
        if table in (config.scoring_entity_table, config.data.label_table):
            continue
        link, values = key, keys
        linked = _parent(config, table)
        if linked is not None:  # hangs off another history table (bureau_balance off bureau)
            link, parent, column = linked
            values = sorted({r[column] for r in history[parent]})
        history[table] = _interim_rows(interim_dir, table, link, values)
    requests = []
    for application in applications:
        request = _history_request(config, history, application[key])
        if request is not None:
            record = {k: v for k, v in application.items() if k not in drop}
            requests.append({"application": record, **request})
    return requests


def _history_request(
    config: ModelConfig, history: dict[str, list[dict[str, Any]]], entity: Any
) -> dict[str, list[dict[str, Any]]] | None:
    """One entity's history rows per table (None when a table holds more than its serving cap)."""
    key = config.features.entity_key
    mine: dict[str, list[dict[str, Any]]] = {}
    for table, rows in history.items():
        linked = _parent(config, table)
        if linked is None:
            mine[table] = [r for r in rows if r[key] == entity]
        else:
            link, parent, column = linked
            ids = {r[column] for r in mine[parent]}
            mine[table] = [r for r in rows if r[link] in ids]
        if len(mine[table]) > config.serving.history_cap(table):
            return None
    return mine


def _interim_rows(interim_dir: Path, table: str, column: str, values: list[Any]) -> list[dict[str, Any]]:
    """Rows of an interim table whose `column` is one of `values`, in file order, as Python values."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    data = pq.read_table(Path(interim_dir) / f"{table}.parquet")
    wanted = pa.array(values, type=data.schema.field(column).type)
    return data.filter(pc.is_in(data[column], value_set=wanted)).to_pylist()


def _parent(config: ModelConfig, table: str) -> tuple[str, str, str] | None:
    """(column, parent table, parent column) of a history table without the entity key."""
    spec = config.data.tables[table]
    if config.features.entity_key in spec.columns:
        return None
    fk = spec.foreign_keys[0]
    parent, column = fk.references[0].split(".", 1)
    return fk.column, parent, column


def _register(
    name: str, run_id: str, logged_uri: str, lineage: dict[str, str], register: bool, say: Any
) -> tuple[str | None, str]:
    """Register and sign the run's model as a new version, or (a dry run) sign it on the run only."""
    import mlflow

    if not register:
        mlflow.set_tag(DRY_RUN_TAG, "true")
        signed = signing.sign_run(name, run_id)
        say(f"dry run: nothing registered; the model stays on run {run_id} ({_signed_word(signed)})")
        return None, signing.run_model_uri(run_id)
    version = str(mlflow.register_model(logged_uri, name, tags={"run_id": run_id, **lineage}).version)
    signed = signing.sign(name, version)
    say(f"registered {name} version {version} ({_signed_word(signed)})")
    return version, f"models:/{name}/{version}"


def _record_overrides(overrides: RunOverrides | None, say: Any) -> None:
    """Log each override as param `override.<name>` and list them in the run tag OVERRIDES_TAG."""
    import mlflow

    given = overrides.given() if overrides is not None else {}
    if not given:
        return
    mlflow.log_params({f"override.{name}": value for name, value in given.items()})
    mlflow.set_tag(OVERRIDES_TAG, ",".join(sorted(given)))
    say("overrides of the config: " + ", ".join(f"{name}={value!r}" for name, value in given.items()))


def _signed_word(signature: str | None) -> str:
    return "signed" if signature else "UNSIGNED: no key"


def _load_split(config: ModelConfig, interim_dir: Path, features_path: Path | None) -> _Split:
    """The model input rows and labels, split by the hash of the entity key."""
    frame = model_input_frame(config, interim_dir, features_path)
    y = frame.pop(LABEL).to_numpy()
    return _Split(frame, y, split_indices(frame[config.features.entity_key], config))


def _fit(config: ModelConfig, data: _Split, say: Any) -> _Fitted:
    """Build the classifier with the config's feature SQL, fit its encoder and booster (early stopping)."""
    from tabular_mlops.features import read_sql_folder
    from tabular_mlops.modeling import (
        build_estimator,
        build_preprocessor,
        fit_estimator,
        make_classifier,
        positive_weight,
        split_columns,
    )

    y, parts = data.y, data.parts
    sql = read_sql_folder(config.sql_path)
    classifier = make_classifier(config, sql, [], None, None)
    feature_rows = classifier.feature_rows(data.frame)
    categorical, numeric = split_columns(feature_rows, exclude={config.features.entity_key})
    classifier.feature_columns = categorical + numeric
    preprocessor = build_preprocessor(categorical, numeric, config.features.scale_numeric)
    # One take per part (rows and columns at once): a full column selection first would copy the
    # whole feature table once more.
    columns = feature_rows.columns.get_indexer(classifier.feature_columns)
    x_train = preprocessor.fit_transform(feature_rows.iloc[parts["train"], columns])
    x_valid = preprocessor.transform(feature_rows.iloc[parts["valid"], columns])
    estimator = build_estimator(
        config.model, positive_weight(config.model, y[parts["train"]]), config.split.seed
    )
    say(f"training {config.model.type} on {len(parts['train']):,} rows, {x_train.shape[1]} encoded features")
    best = fit_estimator(config.model, estimator, x_train, y[parts["train"]], x_valid, y[parts["valid"]])
    classifier.preprocessor, classifier.estimator = preprocessor, estimator
    return _Fitted(classifier, feature_rows, categorical, numeric, list(x_train.columns), best)


def _lineage(config: ModelConfig, interim_dir: Path, origin: dict[str, str] | None) -> dict[str, str]:
    """Where a version comes from (code, raw files, config, Airflow run): run and version tags."""
    return {
        "git_commit": git_commit(),
        "input_fingerprint": input_fingerprint(interim_dir),
        "config_hash": config_hash(config),
        "interim_dir": str(interim_dir),
        **{f"airflow_{k}": v for k, v in (origin or {}).items()},
    }


def _log_run_facts(
    config: ModelConfig, name: str, lineage: dict[str, str], best: int, parts: dict[str, np.ndarray]
) -> None:
    """Tag the run with its lineage and library versions; log the config's and the fit's params."""
    import mlflow

    mlflow.set_tags(
        {"model": config.name, **lineage, **{f"lib.{k}": v for k, v in library_versions().items()}}
    )
    mlflow.log_params({f"model.{k}": v for k, v in config.model.params.items()})
    mlflow.log_params(
        {
            "model.type": config.model.type,
            "model.threshold": config.model.threshold,
            "model.imbalance": config.model.imbalance,
            "split.seed": config.split.seed,
            "split.test_size": config.split.test_size,
            "split.validation_size": config.split.validation_size,
            "model.registered_name": name,
            "best_iteration": best,
            "rows.train": len(parts["train"]),
            "rows.valid": len(parts["valid"]),
            "rows.test": len(parts["test"]),
        }
    )


def _log_checks(config: ModelConfig, data: _Split, fitted: _Fitted, interim_dir: Path, say: Any) -> pd.Series:
    """Log the features and their importance, and what monitoring and serving check the version
    against (drift reference, calibration map, golden requests); return the importance."""
    import mlflow

    from tabular_mlops.modeling import feature_importance

    classifier, frame = fitted.classifier, data.frame
    mlflow.log_dict({"features": classifier.feature_columns}, "features/feature_columns.json")
    importance = feature_importance(classifier.estimator, fitted.encoded_columns)
    mlflow.log_dict(importance.head(200).round(6).to_dict(), "features/importance.json")
    _log_reference(config, data, fitted, importance)
    _log_calibrator(classifier, frame, data.y, data.parts["valid"], say)
    _log_golden(config, classifier, frame.iloc[data.parts["test"][:GOLDEN_ROWS]], interim_dir)
    return importance


def _log_model(config: ModelConfig, data: _Split, classifier: Any) -> str:
    """Log the classifier as the run's pyfunc `model` with its signature; return the logged URI."""
    import mlflow
    from mlflow.models import infer_signature

    example = signature_frame(data.frame.iloc[data.parts["train"][:5]])
    signature = infer_signature(example, classifier.predict(None, example))
    _quiet_cloudpickle_notice()
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=classifier,
        signature=signature,
        input_example=example,
        code_paths=[str(Path(__file__).resolve().parent)],
        # Pinned from this environment: MLflow's own inference would load the model in a subprocess.
        pip_requirements=model_requirements(config),
    )
    return str(info.model_uri)


def _keep_work_files(config: ModelConfig, run_id: str, data: _Split, importance: pd.Series) -> Path:
    """Write the test rows and the importance where the evaluate and gate stages read them."""
    work_dir = work_dir_for(config, run_id)
    work_dir.mkdir(parents=True, exist_ok=True)
    test = data.parts["test"]
    test_rows = data.frame.iloc[test].assign(**{LABEL: data.y[test]})
    test_rows.to_parquet(work_dir / TEST_ROWS, index=False)
    importance.to_frame("importance").to_parquet(work_dir / "importance.parquet")
    return work_dir


def train_candidate(
    config: ModelConfig,
    interim_dir: Path,
    features_path: Path | None,
    origin: dict[str, str] | None = None,
    progress: Any = None,
    register: bool = True,
    overrides: RunOverrides | None = None,
) -> TrainResult:
    """Fit the configured booster, log the pyfunc with lineage, register it as a new version.

    With `register=False` (a dry run) the signed model stays on the MLflow run: no version.
    `config` already carries the run's `overrides` (apply_overrides); they are recorded on the run,
    and their experiment_name, if any, is the run's experiment.
    """
    import mlflow

    say = progress or (lambda _m: None)
    started = time.perf_counter()
    data = _load_split(config, interim_dir, features_path)
    fitted = _fit(config, data, say)
    name = tracking.registered_name(config.model.registered_name)
    experiment_id = tracking.ensure_experiment(experiment_for(config, overrides))
    lineage = _lineage(config, interim_dir, origin)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{config.name}-train") as run:
        run_id = run.info.run_id
        say(f"MLflow run {run_id}")
        _log_run_facts(config, name, lineage, fitted.best_iteration, data.parts)
        _record_overrides(overrides, say)
        importance = _log_checks(config, data, fitted, interim_dir, say)
        logged_uri = _log_model(config, data, fitted.classifier)
        work_dir = _keep_work_files(config, run_id, data, importance)
        version, model_uri = _register(name, run_id, logged_uri, lineage, register, say)
    return TrainResult(
        model=config.name,
        run_id=run_id,
        version=version,
        registered_name=name,
        model_uri=model_uri,
        best_iteration=fitted.best_iteration,
        rows={k: len(v) for k, v in data.parts.items()},
        seconds=round(time.perf_counter() - started, 1),
        work_dir=str(work_dir),
    )
