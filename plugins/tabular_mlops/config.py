"""Typed model configs: one YAML per model under include/configs/, merged over defaults.yaml.

Every YAML is parsed once into a `ModelConfig`; a bad file raises `ConfigError` naming the file,
the field and the reason, which Airflow shows as a DagBag import error. Secrets never live here:
connections and credentials come from the environment or Airflow connections.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tabular_mlops import settings

DEFAULTS_FILE = "defaults.yaml"
# A key that looks like it holds a credential; such values belong in env vars or connections.
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_?key|access_?key|private_?key)", re.I)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(ValueError):
    """A model config that cannot be used, with the file and field it failed on."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Severity = Literal["error", "warn"]
ColumnType = Literal["int", "float", "category", "string"]
Probability = Annotated[float, Field(gt=0, lt=1)]


class ColumnSpec(_Strict):
    """One column of a raw table: its type and the row-level rules its values must meet."""

    type: ColumnType
    nullable: bool = True
    values: list[str | int] | None = None
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    # error: a violating row goes to quarantine; warn: the row stays and the report counts it.
    severity: Severity = "error"

    @field_validator("values", mode="before")
    @classmethod
    def _no_yaml_booleans(cls, values: Any) -> Any:
        # YAML 1.1 reads unquoted Yes/No/On/Off as booleans; accepting them would silently turn
        # the allowed set {"Yes", "No"} into {1, 0}.
        if isinstance(values, list):
            for value in values:
                if isinstance(value, bool):
                    raise ValueError(f'{value!r} is a YAML boolean; quote it ("Yes", "No") to mean text')
        return values

    @model_validator(mode="after")
    def _check_rules(self) -> ColumnSpec:
        if self.type == "category" and not self.values:
            raise ValueError("a category column needs its allowed 'values'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError(f"min/max only apply to int and float columns, not {self.type}")
        if self.values is not None and self.type in ("int", "float"):
            cast = int if self.type == "int" else float
            for value in self.values:
                try:
                    cast(value)
                except ValueError:
                    raise ValueError(f"allowed value {value!r} is not a valid {self.type}") from None
        if self.pattern is not None:
            if self.type != "string":
                raise ValueError("'pattern' only applies to string columns")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"'pattern' is not a valid regular expression: {exc}") from exc
        return self

    @property
    def is_numeric(self) -> bool:
        """True for int and float columns."""
        return self.type in ("int", "float")


class LabelSpec(_Strict):
    """The label column of the entity table and the positive-class rate it must show."""

    column: str
    positive: str | int
    min_rate: float = Field(default=0.0, ge=0, le=1)
    max_rate: float = Field(default=1.0, ge=0, le=1)
    severity: Severity = "error"

    @model_validator(mode="after")
    def _check_bounds(self) -> LabelSpec:
        if self.min_rate > self.max_rate:
            raise ValueError(f"min_rate ({self.min_rate}) is greater than max_rate ({self.max_rate})")
        return self


class ForeignKeySpec(_Strict):
    """A column whose values must resolve to keys of one or more parent tables."""

    column: str
    references: list[str] = Field(min_length=1)
    # Share of non-null values that must resolve; 0 disables the check (nothing is looked up).
    min_share: float = Field(default=1.0, ge=0, le=1)
    severity: Severity = "error"

    @property
    def enabled(self) -> bool:
        """False when `min_share: 0` switches the check off."""
        return self.min_share > 0

    @field_validator("references")
    @classmethod
    def _check_refs(cls, refs: list[str]) -> list[str]:
        for ref in refs:
            if ref.count(".") != 1:
                raise ValueError(f"reference {ref!r} must read 'table.column'")
        return refs


class TableSpec(_Strict):
    """One raw CSV of a data source and its dataset-level expectations."""

    file: str
    columns: dict[str, ColumnSpec] = Field(min_length=1)
    primary_key: list[str] = Field(default_factory=list)
    label: LabelSpec | None = None
    # Rows the typed table must hold; 0 (the default) accepts a header-only file (no activity yet).
    min_rows: int = Field(default=0, ge=0)
    foreign_keys: list[ForeignKeySpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_columns_declared(self) -> TableSpec:
        named = list(self.primary_key) + [fk.column for fk in self.foreign_keys]
        if self.label is not None:
            named.append(self.label.column)
        for column in named:
            if column not in self.columns:
                raise ValueError(f"column {column!r} is used but not declared under 'columns'")
        for column in self.primary_key:
            if self.columns[column].nullable:
                raise ValueError(f"primary-key column {column!r} must be declared nullable: false")
        return self


class DataSpec(_Strict):
    """Where the raw tables live and how strictly they are validated."""

    source: str
    generator: Literal["home_credit", "telco"] | None = None
    aws_conn_id: str = "aws_default"
    max_quarantine_share: float = Field(default=0.01, ge=0, le=1)
    tables: dict[str, TableSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_tables(self) -> DataSpec:
        labelled = [name for name, table in self.tables.items() if table.label is not None]
        if len(labelled) != 1:
            raise ValueError(f"exactly one table must declare a 'label'; found {labelled or 'none'}")
        for name, table in self.tables.items():
            for fk in table.foreign_keys:
                for ref in fk.references:
                    ref_table, ref_column = ref.split(".")
                    if ref_table not in self.tables:
                        raise ValueError(
                            f"tables.{name}: foreign key {fk.column} references unknown table {ref_table!r}"
                        )
                    if ref_column not in self.tables[ref_table].columns:
                        raise ValueError(
                            f"tables.{name}: foreign key {fk.column} references unknown column {ref!r}"
                        )
        return self

    @property
    def label_table(self) -> str:
        """Name of the table that carries the label (the entity table of training)."""
        return next(name for name, table in self.tables.items() if table.label is not None)


class FeatureSpec(_Strict):
    """Where the feature SQL lives (under include/sql/) and which column keys an entity."""

    sql_dir: str
    entity_key: str
    # raw: the logged model takes the entity table's raw record and runs the SQL itself (churn);
    # features: it takes a row of the feature table built by the SQL (credit_risk's feature store).
    model_input: Literal["raw", "features"] = "features"
    # Standardise numeric features (linear-model habit of the churn playbook; trees do not need it).
    scale_numeric: bool = False
    # CSV under include/descriptions/ with each column's meaning (Table, Row, Description): the
    # plain words of reason codes, the SHAP summary and the model card (tabular_mlops.describe).
    descriptions: str | None = None
    # The split of the feature SQL into the part computed from the scored record and the part
    # derived from the entity's history tables (`features` = application left join history on
    # the key). With both set, `mlops materialize` writes the history view per entity into the
    # online store and serving computes only the application view per request.
    application_view: str | None = None
    history_view: str | None = None

    @field_validator("application_view", "history_view")
    @classmethod
    def _view_name(cls, value: str | None) -> str | None:
        if value is not None and not _IDENTIFIER.match(value):
            raise ValueError("a view name must be a plain identifier (the stem of a .sql file)")
        return value

    @model_validator(mode="after")
    def _both_views(self) -> FeatureSpec:
        if (self.application_view is None) != (self.history_view is None):
            raise ValueError("features.application_view and features.history_view go together")
        return self

    @property
    def online(self) -> bool:
        """True when the history part is served from the online store."""
        return self.history_view is not None

    @field_validator("sql_dir")
    @classmethod
    def _relative(cls, value: str) -> str:
        if Path(value).is_absolute() or ".." in Path(value).parts:
            raise ValueError("sql_dir must be a folder name under include/sql/")
        return value

    @field_validator("descriptions")
    @classmethod
    def _description_file(cls, value: str | None) -> str | None:
        if value is not None and (Path(value).name != value or value in (".", "..")):
            raise ValueError("descriptions must be a file name under include/descriptions/")
        return value


class SplitSpec(_Strict):
    """Train/validation/test shares and the seed of the entity-key hash that assigns them."""

    test_size: Probability = 0.2
    validation_size: Probability = 0.1
    seed: int = 42

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitSpec:
        if self.test_size + self.validation_size >= 0.9:
            raise ValueError("test_size + validation_size must leave at least 10% of the rows to train on")
        return self


class ModelSpec(_Strict):
    """Which learner to train, its hyper-parameters and the registry entry it lands in."""

    type: Literal["xgboost", "lightgbm"]
    registered_name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    params: dict[str, Any] = Field(default_factory=dict)
    early_stopping_rounds: int = Field(default=50, ge=1)
    threshold: Probability = 0.5
    # Class weighting of positives: none, balanced (neg/pos) or sqrt (its square root, milder).
    imbalance: Literal["none", "balanced", "sqrt"] = "none"


class GateSpec(_Strict):
    """Minimum quality a candidate must show on the test split before promotion."""

    min_auc: float = Field(ge=0.5, le=1)
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    # How much worse than the current production version a candidate may be and still win: the
    # lower bound of the paired bootstrap interval of the AUC difference must stay above -this.
    max_auc_drop_vs_production: float = Field(default=0.01, ge=0, le=1)
    max_brier_increase: float = Field(default=0.01, ge=0, le=1)
    # Columns of the entity table whose values are slices with their own AUC floor.
    slices: list[str] = Field(default_factory=list)
    slice_min_auc: float | None = Field(default=None, ge=0.5, le=1)
    slice_min_positives: int = Field(default=30, ge=1)
    bootstrap_rounds: int = Field(default=1000, ge=100)


class ScheduleSpec(_Strict):
    """Cron expressions of the DAGs; None means triggered only (UI, CLI or Asset)."""

    training: str | None = None
    scoring: str | None = "0 2 * * *"
    monitoring: str | None = "0 6 * * *"

    @field_validator("training", "scoring", "monitoring")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression")
        return value

    @field_validator("scoring", "monitoring")
    @classmethod
    def _fixed_time_of_day(cls, value: str | None) -> str | None:
        # A run judges the day before it, so it must run at one time of day (see day_interval).
        if value is not None:
            day_interval(value)
        return value


def day_interval(cron: str) -> timedelta:
    """How far a daily cron's run reaches back: to midnight of the day before (`M H * * *` -> 1 day + H:M).

    The DAG's data interval then starts at the day the run scores or judges; ValueError for a cron
    whose minute and hour are not single numbers (it has no one time of day).
    """
    fields = cron.split()
    if len(fields) != 5 or not all(f.isdigit() for f in fields[:2]):
        raise ValueError(
            f"{cron!r}: minute and hour must be single numbers (e.g. '0 2 * * *'), because each run "
            "handles the day that ended before it"
        )
    return timedelta(days=1, hours=int(fields[1]), minutes=int(fields[0]))


class ScoringSpec(_Strict):
    """Batch scoring: where partitions live, which table holds the entities, how bad rows are judged."""

    # Root of incoming/<model>/dt=<date>/ and predictions/<model>/dt=<date>/: a folder or s3://
    # prefix. MLOPS_LAKE overrides it; with neither, <data dir>/lake.
    lake: str | None = None
    # The data.tables entry whose rows are scored (default: the table with the label); its rows are
    # bound under the label table's name so the training SQL runs on them unchanged.
    entity_table: str | None = None
    # Share of a table's input rows that may be rejected before the run fails.
    max_rejected_share: Probability = 0.01
    # Rows per mapped scoring task, and rows per model call inside a task (bounds memory).
    chunk_rows: int = Field(default=250_000, ge=1)
    batch_rows: int = Field(default=50_000, ge=1)
    catchup: bool = False
    # How long a run waits for its input partition's completion marker, which the producer writes
    # as its last file, before it fails naming the path.
    wait_hours: float = Field(default=6.0, gt=0, le=24 * 7)
    completion_marker: str = "_SUCCESS"
    # Roots besides the lake that the `input`/`output` Params and `mlops score --input/--output` may
    # name (folders or s3:// prefixes); anything else is refused before a file is read or replaced.
    allowed_locations: list[str] = Field(default_factory=list)
    # reason_1..reason_k columns beside each probability: the row's k largest TreeSHAP
    # contributions in plain words (tabular_mlops.explain); 0 writes none and costs nothing.
    explain_top_k: int = Field(default=0, ge=0, le=20)

    @field_validator("lake", "allowed_locations")
    @classmethod
    def _usable_locations(cls, values: str | list[str] | None) -> str | list[str] | None:
        from tabular_mlops.storage import location_problem

        for value in [values] if isinstance(values, str) else values or []:
            problem = location_problem(value)
            if problem:
                raise ValueError(f"{value!r} is not a usable location: {problem}")
        return values

    @field_validator("completion_marker")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if not value or value in (".", "..") or "/" in value or any(ord(c) < 32 for c in value):
            raise ValueError(f"{value!r} must be a plain file name (no '/', not empty)")
        return value

    def lake_root(self) -> str:
        """The lake: MLOPS_LAKE, else `lake`, else <data dir>/lake (here, so DAG files parse it light)."""
        return os.environ.get("MLOPS_LAKE") or self.lake or str(settings.data_dir() / "lake")

    def allowed_roots(self) -> list[str]:
        """Where a run may read and write, canonical: the lake, then `allowed_locations`."""
        from tabular_mlops.storage import canonical_location

        roots = [settings.resolve_location(self.lake_root()), *self.allowed_locations]
        return list(dict.fromkeys(canonical_location(root) for root in roots))


class MonitoringSpec(_Strict):
    """Drift and performance thresholds that decide a breach."""

    drift_share_threshold: Probability = 0.3
    psi_threshold: float = Field(default=0.2, gt=0)
    prediction_psi_threshold: float = Field(default=0.2, gt=0)
    min_auc: float | None = Field(default=None, ge=0.5, le=1)
    max_auc_drop: float = Field(default=0.05, ge=0, le=1)
    consecutive_windows: int = Field(default=1, ge=1)
    cooldown_hours: float = Field(default=24, ge=0)
    # Quality is judged only with at least this many labelled predictions in the window.
    min_labelled_rows: int = Field(default=200, ge=1)
    # A window with fewer predictions is "not judged" for drift and estimated performance: PSI
    # and an estimated AUC on a few hundred rows move by chance more than by drift.
    min_rows: int = Field(default=500, ge=1)
    # At most this many alert emails per model per UTC day (a backfill of many windows, or a
    # flapping feature, must not flood the on-call inbox); the rest are recorded, not sent.
    alert_budget_per_day: int = Field(default=3, ge=1)
    # Training rows kept as the drift reference with every version (a seeded sample).
    reference_rows: int = Field(default=100_000, ge=100)
    # Quantile bins of numeric features for PSI (missing values get their own bin).
    psi_bins: int = Field(default=10, ge=2, le=100)
    # The report charts the bins of this many of the most drifted features; every feature's PSI
    # is in its table, and every figure is computed on every row.
    report_columns: int = Field(default=20, ge=1)


class ServingSpec(_Strict):
    """Limits of the REST service on one request of this model (checked while the body is parsed)."""

    # Rows one request may carry per history table (credit-style requests), by data.tables name;
    # a history table not listed gets default_max_history_rows. Over a cap: 422 naming the table.
    max_history_rows: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    default_max_history_rows: int = Field(default=1000, ge=1)

    def history_cap(self, table: str) -> int:
        """The most rows of `table` one scoring request may carry."""
        return self.max_history_rows.get(table, self.default_max_history_rows)


class Approver(_Strict):
    """One person who may answer a promotion's approval task."""

    # The auth manager's user id, which Airflow checks an answer against (FAB: the numeric id
    # of Security > List Users, e.g. "1"; the simple auth manager: the username).
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    email: EmailStr | None = None  # the notifier mails the task's link here


class PromotionSpec(_Strict):
    """How a gated candidate reaches production: who approves it and whether it shadows first."""

    # required: a human-in-the-loop task between gate and promote (Approve moves the alias;
    # Reject or no answer within approval_timeout_hours moves nothing).
    approval: Literal["none", "required"] = "none"
    # Who may answer; empty: anyone Airflow lets update the task's approval (HITL detail).
    approvers: list[Approver] = Field(default_factory=list)
    approval_timeout_hours: float = Field(default=72, gt=0)
    # shadow: a gated (and approved) candidate becomes the `challenger`, scored beside production
    # without answering anyone, until it wins on shadow_min_labelled labelled rows.
    mode: Literal["direct", "shadow"] = "direct"
    shadow_min_labelled: int = Field(default=500, ge=1)


class AlertSpec(_Strict):
    """Who hears about a breach, from which address, and through which Airflow SMTP connection."""

    recipients: list[EmailStr] = Field(min_length=1)
    # The From address of every mail the bundle sends for this model (breach alerts, approval
    # requests), passed to SmtpHook as `from_email`. Required, with no default: left to the SMTP
    # connection's `from_email`, a connection without one failed only at the first alert.
    sender: EmailStr
    smtp_conn_id: str = "smtp_default"


class ModelConfig(_Strict):
    """Everything the bundle knows about one model, from raw tables to alerts."""

    name: str
    description: str = ""
    owner: str = "ml-platform"
    tags: list[str] = Field(default_factory=list)
    retries: int = Field(default=2, ge=0)
    data: DataSpec
    features: FeatureSpec
    model: ModelSpec
    split: SplitSpec = SplitSpec()
    gate: GateSpec
    schedules: ScheduleSpec = ScheduleSpec()
    scoring: ScoringSpec = ScoringSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    serving: ServingSpec = ServingSpec()
    promotion: PromotionSpec = PromotionSpec()
    alerts: AlertSpec
    source_file: str = Field(default="", exclude=True)

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        # The name becomes part of DAG ids, Asset URIs and folder names.
        if not _IDENTIFIER.match(value):
            raise ValueError("name must be a Python-style identifier (letters, digits, underscores)")
        return value

    @model_validator(mode="after")
    def _check_scoring(self) -> ModelConfig:
        entity = self.scoring.entity_table
        if entity is not None and entity not in self.data.tables:
            known = ", ".join(self.data.tables)
            raise ValueError(f"scoring.entity_table {entity!r} is not one of data.tables ({known})")
        key, table = self.features.entity_key, self.scoring_entity_table
        if key not in self.data.tables[table].columns:
            raise ValueError(f"features.entity_key {key!r} is not a column of {table}")
        return self

    @model_validator(mode="after")
    def _check_serving(self) -> ModelConfig:
        unknown = sorted(set(self.serving.max_history_rows) - set(self.data.tables))
        if unknown:
            known = ", ".join(self.data.tables)
            raise ValueError(f"serving.max_history_rows: {', '.join(unknown)} not in data.tables ({known})")
        return self

    @property
    def scoring_entity_table(self) -> str:
        """The data.tables entry whose rows batch scoring scores."""
        return self.scoring.entity_table or self.data.label_table

    @property
    def sql_path(self) -> Path:
        """Folder of this model's feature SQL."""
        return settings.sql_dir() / self.features.sql_dir


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _secret_keys(node: Any, path: str = "") -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if _SECRET_KEY.search(str(key)):
                yield where
            yield from _secret_keys(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _secret_keys(value, f"{path}[{i}]")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, not {type(raw).__name__}")
    return raw


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} invalid field(s)"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        got = error.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"  {field}: {error['msg']}{shown}")
    return "\n".join(lines)


def load_model_config(path: Path, defaults: dict[str, Any] | None = None) -> ModelConfig:
    """Parse one model YAML merged over the shared defaults; raise ConfigError naming file and field."""
    path = Path(path)
    if defaults is None:
        defaults_path = path.parent / DEFAULTS_FILE
        defaults = _read_yaml(defaults_path) if defaults_path.exists() else {}
    # Top-level keys starting with "x-" only hold YAML anchors (the Compose file convention).
    raw = {k: v for k, v in _deep_merge(defaults, _read_yaml(path)).items() if not str(k).startswith("x-")}
    secrets = list(_secret_keys(raw))
    if secrets:
        raise ConfigError(
            f"{path}: {', '.join(secrets)}: secrets must not live in YAML; "
            "use an environment variable or an Airflow connection"
        )
    raw.setdefault("name", path.stem)
    try:
        config = ModelConfig.model_validate({**raw, "source_file": str(path)})
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None
    if config.name != path.stem:
        raise ConfigError(f"{path}: name: {config.name!r} must match the file name {path.stem!r}")
    return config


def model_config_files(directory: Path | None = None) -> list[Path]:
    """Model YAML files in a stable order (defaults.yaml and files starting with '_' excluded)."""
    directory = Path(directory) if directory is not None else settings.config_dir()
    return sorted(
        p for p in directory.glob("*.yaml") if p.name != DEFAULTS_FILE and not p.name.startswith("_")
    )


def load_model_configs(directory: Path | None = None) -> dict[str, ModelConfig]:
    """Every model config in the folder, keyed by model name, in file-name order."""
    directory = Path(directory) if directory is not None else settings.config_dir()
    defaults_path = directory / DEFAULTS_FILE
    defaults = _read_yaml(defaults_path) if defaults_path.exists() else {}
    configs = [load_model_config(path, defaults) for path in model_config_files(directory)]
    return {config.name: config for config in configs}


def get_model_config(name: str, directory: Path | None = None) -> ModelConfig:
    """The config of one model by name; ConfigError lists the known names when it is missing."""
    directory = Path(directory) if directory is not None else settings.config_dir()
    path = directory / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in model_config_files(directory)) or "none"
        raise ConfigError(f"no config for model {name!r} in {directory} (known: {known})")
    return load_model_config(path)
