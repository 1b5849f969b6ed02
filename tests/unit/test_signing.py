"""Model signatures: what verifies, what is refused and why, and where the key comes from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tabular_mlops import signing

KEY = b"k" * 32
DIGESTS = {"MLmodel": "a" * 64, "python_model.pkl": "b" * 64, "code/tabular_mlops/x.py": "c" * 64}


def _signed(
    name: str = "churn", version: str = "3", run_id: str = "r1", digests: dict[str, str] = DIGESTS
) -> signing.Signed:
    return signing.Signed(name, version, run_id, digests)


def _keys(*keys: bytes) -> signing.SigningKeys:
    return signing.SigningKeys(keys[0] if keys else None, tuple(keys))


def test_a_signature_verifies_and_names_its_key() -> None:
    tag = signing.signature(KEY, _signed())
    assert tag.startswith("hmac-sha256:v1:") and signing.key_id(KEY) in tag
    assert KEY.decode() not in tag
    assert signing.verify(_keys(KEY), _signed(), tag) == signing.key_id(KEY)


@pytest.mark.parametrize(
    "change",
    [
        {"python_model.pkl": "d" * 64},  # a pickle swapped
        {"code/evil.py": "e" * 64},  # a module added beside the code
    ],
)
def test_changed_or_added_artifacts_are_refused(change: dict[str, str]) -> None:
    tag = signing.signature(KEY, _signed())
    with pytest.raises(signing.SignatureError, match="churn version 3: its artifacts changed"):
        signing.verify(_keys(KEY), _signed(digests={**DIGESTS, **change}), tag)


def test_a_removed_artifact_and_a_signature_replayed_elsewhere_are_refused() -> None:
    tag = signing.signature(KEY, _signed())
    fewer = {k: v for k, v in DIGESTS.items() if k != "MLmodel"}
    with pytest.raises(signing.SignatureError, match="artifacts changed"):
        signing.verify(_keys(KEY), _signed(digests=fewer), tag)
    with pytest.raises(signing.SignatureError, match="credit_risk version 3: its artifacts changed"):
        signing.verify(_keys(KEY), _signed(name="credit_risk"), tag)
    # The same artifacts registered again as a new version (a refused candidate replayed), or
    # pointed at another run's golden records and reference data: the copied tag does not verify.
    with pytest.raises(signing.SignatureError, match="churn version 9: its artifacts changed"):
        signing.verify(_keys(KEY), _signed(version="9"), tag)
    with pytest.raises(signing.SignatureError, match="churn version 3: its artifacts changed"):
        signing.verify(_keys(KEY), _signed(run_id="someone-elses-run"), tag)


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        (None, "is not signed"),
        ("", "is not signed"),
        ("sha1:deadbeef", "not a signature this bundle writes"),
        ("hmac-sha256:v1:" + "0" * 16 + ":" + "z" * 64, "not a signature this bundle writes"),
        ("hmac-sha256:v1:" + "0" * 16 + ":" + "a" * 64 + "\n", "not a signature this bundle writes"),
    ],
)
def test_missing_and_malformed_tags_are_refused(tag: str | None, reason: str) -> None:
    with pytest.raises(signing.SignatureError, match=reason):
        signing.verify(_keys(KEY), _signed(version="7"), tag)


def test_a_signature_by_an_unknown_key_is_refused_and_previous_keys_verify() -> None:
    old, new = b"o" * 32, b"n" * 32
    tag = signing.signature(old, _signed())
    with pytest.raises(signing.SignatureError, match=f"key {signing.key_id(old)}, which is not configured"):
        signing.verify(_keys(new), _signed(), tag)
    assert signing.verify(_keys(new, old), _signed(), tag) == signing.key_id(old)


def test_keys_come_from_the_environment_first_then_the_airflow_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = {"conn_type": "generic", "password": "from-the-connection-0123"}
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_MODEL_SIGNING", json.dumps(connection))
    monkeypatch.setenv(signing.KEY_ENV, "from-the-environment-0123")
    monkeypatch.setenv(signing.PREVIOUS_KEYS_ENV, "old-key-number-one-0123, old-key-number-two-0123")
    keys = signing.signing_keys()
    assert keys.current == b"from-the-environment-0123"
    assert keys.verifying[1:] == (b"old-key-number-one-0123", b"old-key-number-two-0123")
    monkeypatch.delenv(signing.KEY_ENV)
    assert signing.signing_keys().current == b"from-the-connection-0123"
    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_MODEL_SIGNING")
    monkeypatch.delenv(signing.PREVIOUS_KEYS_ENV)
    assert not signing.signing_keys().configured


def test_a_short_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signing.KEY_ENV, "short")
    with pytest.raises(
        signing.SignatureError, match="MLOPS_MODEL_SIGNING_KEY: a signing key needs at least 16"
    ):
        signing.signing_keys()


def test_digests_cover_every_file_and_refuse_symlinks(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "MLmodel").write_text("flavors: {}")
    (tmp_path / "code" / "m.py").write_text("x = 1")
    digests = signing.artifact_digests(tmp_path)
    assert sorted(digests) == ["MLmodel", "code/m.py"]
    (tmp_path / "code" / "m.py").write_text("x = 2")
    assert signing.artifact_digests(tmp_path)["code/m.py"] != digests["code/m.py"]
    (tmp_path / "link").symlink_to(tmp_path / "MLmodel")
    with pytest.raises(signing.SignatureError, match="link: a model artifact may not be a symlink"):
        signing.artifact_digests(tmp_path)
