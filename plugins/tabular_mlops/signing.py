"""Only versions this bundle made are ever loaded: HMAC signatures over a version's artifacts.

A registered version is a pickle plus code that runs when it is loaded, so whoever can write to the
registry could otherwise run code on every worker and serving process. Training signs what it
registers: an HMAC-SHA256, keyed by `MLOPS_MODEL_SIGNING_KEY`, over the registered name, the version
number, its training run id (whose golden records and reference data consumers trust) and the
SHA-256 of every file of the version's model artifacts, kept as the version tag `mlops.signature`.
Copying a signature onto another version, even one made from the same artifacts, does not verify.
Every consumer (the gate, batch scoring, monitoring, serving) downloads the artifacts, checks the
signature over exactly the bytes it downloaded, and only then unpickles them (`load_verified`).
A dry run registers nothing: its logged model is signed as a run tag instead, with the version
field `unregistered`, and the evaluate stage loads it the same way (`load_verified_run`).

The key comes from the environment or the Airflow connection `mlops_model_signing` (its password),
never from YAML. Rotation: verification also accepts the keys in
`MLOPS_MODEL_SIGNING_PREVIOUS_KEYS` (comma-separated) while `mlops sign` re-signs versions with the
new key. With no key at all (a laptop) versions are loaded unverified, with a warning every time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabular_mlops import tracking

log = logging.getLogger(__name__)


KEY_ENV = "MLOPS_MODEL_SIGNING_KEY"
PREVIOUS_KEYS_ENV = "MLOPS_MODEL_SIGNING_PREVIOUS_KEYS"
CONNECTION_ID = "mlops_model_signing"
SIGNATURE_TAG = "mlops.signature"
# The version field of a dry run's signature: its model is logged on the run, never registered.
UNREGISTERED = "unregistered"
_SCHEME = "hmac-sha256:v1"
# scheme, key id (a fingerprint, never the key), 64 hex digits: anything else is refused unparsed.
_TAG_PATTERN = re.compile(r"hmac-sha256:v1:(?P<key_id>[0-9a-f]{16}):(?P<mac>[0-9a-f]{64})")
_MIN_KEY_BYTES = 16
UNVERIFIED_WARNING = (
    "MODEL SIGNATURES ARE NOT CHECKED: MLOPS_MODEL_SIGNING_KEY is not set, so {what} is loaded "
    "without proof that this bundle made it; anyone who can write to the registry can run code "
    "here. Set the key (docs/security.md)."
)


class SignatureError(RuntimeError):
    """A version that is unsigned, signed with an unknown key, or whose artifacts changed."""


@dataclass(frozen=True)
class SigningKeys:
    """The key that signs, and every key that may verify (the signing one first)."""

    current: bytes | None
    verifying: tuple[bytes, ...]

    @property
    def configured(self) -> bool:
        """True when signatures are made and checked."""
        return self.current is not None


def key_id(key: bytes) -> str:
    """A fingerprint naming a key in the tag and in errors without revealing it."""
    return hashlib.sha256(b"tabular-mlops key id\0" + key).hexdigest()[:16]


def _checked(value: str, source: str) -> bytes:
    key = value.strip().encode()
    if len(key) < _MIN_KEY_BYTES:
        raise SignatureError(f"{source}: a signing key needs at least {_MIN_KEY_BYTES} characters")
    return key


def _connection_key() -> str | None:
    """The password of the Airflow connection, when Airflow is installed and defines it."""
    try:
        from airflow.sdk import BaseHook
    except ImportError:  # serving runs without Airflow: the environment is its only source
        return None
    try:
        return BaseHook.get_connection(CONNECTION_ID).password or None
    except Exception:  # noqa: BLE001 - not defined (or no metadata DB): no key from Airflow
        return None


def signing_keys() -> SigningKeys:
    """The configured keys: the environment first, then the Airflow connection."""
    tracking.load_dotenv_once()
    value = os.environ.get(KEY_ENV) or _connection_key()
    current = _checked(value, KEY_ENV) if value else None
    previous = [
        _checked(v, PREVIOUS_KEYS_ENV) for v in os.environ.get(PREVIOUS_KEYS_ENV, "").split(",") if v.strip()
    ]
    return SigningKeys(current, tuple(k for k in (current, *previous) if k is not None))


def artifact_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under the folder, by relative POSIX path."""
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise SignatureError(f"{path.relative_to(folder)}: a model artifact may not be a symlink")
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            digests[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return digests


@dataclass(frozen=True)
class Signed:
    """What a signature binds: the version's identity and its artifacts' digests."""

    name: str
    version: str
    run_id: str
    digests: dict[str, str]

    def message(self) -> bytes:
        """The canonical bytes the HMAC is computed over."""
        fields = {"scheme": _SCHEME, "registered_name": self.name, "version": str(self.version)}
        return json.dumps({**fields, "run_id": self.run_id, "files": self.digests}, sort_keys=True).encode()


def _mac(key: bytes, signed: Signed) -> str:
    return hmac.new(key, signed.message(), hashlib.sha256).hexdigest()


def signature(key: bytes, signed: Signed) -> str:
    """The tag value: scheme, key id and the HMAC over the version's identity and artifact digests."""
    return f"{_SCHEME}:{key_id(key)}:{_mac(key, signed)}"


def verify(keys: SigningKeys, signed: Signed, tag: str | None) -> str:
    """Check a version's tag against its downloaded artifacts; return the key id that signed it."""
    what = f"{signed.name} version {signed.version}"
    if not tag:
        raise SignatureError(f"{what} is not signed (no {SIGNATURE_TAG} tag): this bundle did not make it")
    parsed = _TAG_PATTERN.fullmatch(tag)
    if parsed is None:
        raise SignatureError(f"{what}: its {SIGNATURE_TAG} tag is not a signature this bundle writes")
    key = next((k for k in keys.verifying if key_id(k) == parsed["key_id"]), None)
    if key is None:
        raise SignatureError(f"{what} is signed with key {parsed['key_id']}, which is not configured here")
    if not hmac.compare_digest(_mac(key, signed), parsed["mac"]):
        raise SignatureError(f"{what}: its artifacts changed after signing (signature does not match)")
    return parsed["key_id"]


def _download(name: str, version: str, into: Path) -> Path:
    """The version's model artifacts, downloaded (not loaded) into a fresh folder."""
    return _download_uri(f"models:/{name}/{version}", into)


def _download_uri(uri: str, into: Path) -> Path:
    """A model's artifacts (`models:/...` or `runs:/...`), downloaded (not loaded) into a folder."""
    import mlflow

    tracking.configure()
    return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(into)))


def _facts(name: str, version: str) -> tuple[str | None, str]:
    """(signature tag, training run id) of a version as the registry holds it."""
    details = tracking.configure().get_model_version(name, str(version))
    return details.tags.get(SIGNATURE_TAG), str(details.run_id or "")


def _downloaded(name: str, version: str) -> tuple[str | None, Signed]:
    """The version's tag, and what it must sign, from the artifacts as they download now."""
    tag, run_id = _facts(name, version)
    with tempfile.TemporaryDirectory(prefix="mlops-sign-") as scratch:
        digests = artifact_digests(_download(name, version, Path(scratch)))
    return tag, Signed(name, str(version), run_id, digests)


def _write(key: bytes, signed: Signed) -> str:
    tag = signature(key, signed)
    tracking.configure().set_model_version_tag(signed.name, signed.version, SIGNATURE_TAG, tag)
    return tag


def sign(name: str, version: str) -> str | None:
    """Sign a registered version with the current key (None, with a warning, when there is none)."""
    keys = signing_keys()
    if keys.current is None:
        log.warning("%s version %s registered UNSIGNED: %s is not set", name, version, KEY_ENV)
        return None
    return _write(keys.current, _downloaded(name, version)[1])


def verify_version(name: str, version: str) -> str | None:
    """Check a registered version without loading it; the signing key's id (None: no key, unchecked)."""
    keys = signing_keys()
    if not keys.configured:
        log.warning(UNVERIFIED_WARNING.format(what=f"{name} version {version}"))
        return None
    tag, signed = _downloaded(name, version)
    return verify(keys, signed, tag)


def resign(name: str, version: str) -> str:
    """Verify a version with any configured key, then sign it with the current one (key rotation)."""
    keys = signing_keys()
    if keys.current is None:
        raise SignatureError(f"{KEY_ENV} is not set: there is no key to sign {name} version {version} with")
    tag, signed = _downloaded(name, version)
    verify(keys, signed, tag)
    return _write(keys.current, signed)


def is_signed(name: str, version: str) -> bool:
    """True when the version carries a signature tag (of any key; not verified)."""
    return bool(_facts(name, version)[0])


def check_signed(name: str, version: str) -> None:
    """Cheap early check (no download): with a key configured, the version carries a known signature."""
    keys = signing_keys()
    if not keys.configured:
        return
    tag, run_id = _facts(name, version)
    parsed = _TAG_PATTERN.fullmatch(tag or "")
    if parsed is None or parsed["key_id"] not in {key_id(k) for k in keys.verifying}:
        verify(keys, Signed(name, str(version), run_id, {}), tag)  # raises with the precise reason


def load_verified(name: str, version: str) -> Any:
    """The version as a pyfunc, loaded only after its signature checks out over the downloaded bytes."""

    def check(keys: SigningKeys, local: Path) -> None:
        tag, run_id = _facts(name, version)
        verify(keys, Signed(name, str(version), run_id, artifact_digests(local)), tag)

    return _load_checked(f"models:/{name}/{version}", f"{name} version {version}", check)


def run_model_uri(run_id: str) -> str:
    """Where a training run logged its model (the one model a dry run leaves, unregistered)."""
    return f"runs:/{run_id}/model"


def _run_signed(name: str, run_id: str, digests: dict[str, str]) -> Signed:
    # UNREGISTERED is no version number, so a run's signature never verifies as a version's.
    return Signed(name, UNREGISTERED, run_id, digests)


def sign_run(name: str, run_id: str) -> str | None:
    """Sign the model a dry run logged but did not register, as the run's `mlops.signature` tag."""
    keys = signing_keys()
    if keys.current is None:
        log.warning("%s: the model of run %s is UNSIGNED: %s is not set", name, run_id, KEY_ENV)
        return None
    with tempfile.TemporaryDirectory(prefix="mlops-sign-") as scratch:
        digests = artifact_digests(_download_uri(run_model_uri(run_id), Path(scratch)))
    tag = signature(keys.current, _run_signed(name, run_id, digests))
    tracking.configure().set_tag(run_id, SIGNATURE_TAG, tag)
    return tag


def load_verified_run(name: str, run_id: str) -> Any:
    """A run's logged model as a pyfunc, loaded only after the run's signature checks out."""

    def check(keys: SigningKeys, local: Path) -> None:
        tag = tracking.configure().get_run(run_id).data.tags.get(SIGNATURE_TAG)
        verify(keys, _run_signed(name, run_id, artifact_digests(local)), tag)

    return _load_checked(run_model_uri(run_id), f"{name} (run {run_id})", check)


def _load_checked(uri: str, what: str, check: Callable[[SigningKeys, Path], None]) -> Any:
    """Download a model, run `check(keys, folder)` on the bytes (with a key configured), then load it."""
    import mlflow

    keys = signing_keys()
    scratch = Path(tempfile.mkdtemp(prefix="mlops-model-"))
    path_before = list(sys.path)
    try:
        local = _download_uri(uri, scratch)
        if keys.configured:
            check(keys, local)
        else:
            log.warning(UNVERIFIED_WARNING.format(what=what))
        return mlflow.pyfunc.load_model(str(local))
    finally:
        # Loading is complete here: the pickle is in memory and the package is already imported.
        # MLflow put the version's code/ folder first on sys.path; it is about to be deleted, and a
        # stale entry under /tmp is a place another user could plant a module.
        sys.path[:] = path_before
        shutil.rmtree(scratch, ignore_errors=True)
