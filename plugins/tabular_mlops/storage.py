"""Reading and writing locations that are either local folders or s3:// prefixes.

S3 goes through the Airflow amazon provider's S3Hook and a named Airflow connection (aws_default
unless the config names another), so credentials live in the connection, never in code or YAML.
The same hook resolves `AIRFLOW_CONN_<ID>` variables when called from the shell.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any


class StorageError(RuntimeError):
    """A location that cannot be read or written, with the location in the message."""


def is_s3(location: str) -> bool:
    """True for s3:// URIs."""
    return location.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """Bucket and key (or prefix, without a trailing slash) of an s3:// URI."""
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri}: an S3 location needs a bucket, as in s3://bucket/prefix")
    return bucket, key.rstrip("/")


def s3_hook(aws_conn_id: str) -> Any:
    """An S3Hook on the named Airflow connection (imported lazily: the provider is heavy)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=aws_conn_id)


def stage_files(source: str, names: list[str], aws_conn_id: str, workdir: Path) -> dict[str, Path | None]:
    """Local paths of the named files under `source`; S3 objects are downloaded into workdir first.

    A file that does not exist maps to None so the caller can report every missing table at once.
    """
    if not is_s3(source):
        folder = Path(source)
        if not folder.is_dir():
            raise StorageError(f"{source}: data folder does not exist")
        return {name: (folder / name if (folder / name).is_file() else None) for name in names}

    bucket, prefix = split_s3(source)
    hook = s3_hook(aws_conn_id)
    client = hook.get_conn()
    workdir.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path | None] = {}
    for name in names:
        key = f"{prefix}/{name}" if prefix else name
        try:
            exists = hook.check_for_key(key, bucket_name=bucket)
        except Exception as exc:  # botocore raises many types; the message is what helps
            raise StorageError(
                f"s3://{bucket}/{key}: cannot be checked through connection {aws_conn_id!r}: {exc}"
            ) from exc
        if not exists:
            staged[name] = None
            continue
        local = workdir / name
        # download_file streams to disk in parts, so a 2 GB table never sits in memory.
        client.download_file(bucket, key, str(local))
        staged[name] = local
    return staged


def upload_folder(folder: Path, destination: str, aws_conn_id: str) -> list[str]:
    """Copy every file under folder to an s3:// prefix or a local folder; return what was written."""
    written = []
    if is_s3(destination):
        bucket, prefix = split_s3(destination)
        hook = s3_hook(aws_conn_id)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(folder).as_posix()}".lstrip("/")
            hook.load_file(str(path), key=key, bucket_name=bucket, replace=True)
            written.append(f"s3://{bucket}/{key}")
        return written
    target = Path(destination)
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        out = target / path.relative_to(folder)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out)
        written.append(str(out))
    return written


def fingerprint(path: Path) -> str:
    """sha256 of a file, read in blocks so large tables hash in constant memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish_folder(staging: Path, final: Path) -> None:
    """Move a fully written folder into place, replacing an older one without a half-state."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)
