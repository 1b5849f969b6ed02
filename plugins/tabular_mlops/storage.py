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


def join(location: str, *parts: str) -> str:
    """A child of a local folder or s3:// prefix."""
    return "/".join([location.rstrip("/"), *(p.strip("/") for p in parts)])


def list_files(location: str, aws_conn_id: str) -> list[str]:
    """Paths of every file under a location, relative to it and sorted; [] when it does not exist."""
    if not is_s3(location):
        folder = Path(location)
        if not folder.is_dir():
            return []
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    bucket, prefix = split_s3(location)
    keys = s3_hook(aws_conn_id).list_keys(bucket_name=bucket, prefix=f"{prefix}/" if prefix else "") or []
    start = len(prefix) + 1 if prefix else 0
    return sorted(key[start:] for key in keys if not key.endswith("/"))


def download(location: str, local: Path, aws_conn_id: str) -> Path:
    """Copy one file from a location (local or s3://) to a local path; return the local path."""
    local.parent.mkdir(parents=True, exist_ok=True)
    if is_s3(location):
        bucket, key = split_s3(location)
        s3_hook(aws_conn_id).get_conn().download_file(bucket, key, str(local))
    else:
        shutil.copyfile(location, local)
    return local


def local_path(location: str, workdir: Path, aws_conn_id: str) -> Path:
    """A local file for a location: a local path is read in place, an S3 object downloaded into workdir."""
    if is_s3(location):
        return download(location, workdir / Path(location).name, aws_conn_id)
    return Path(location)


def upload(local: Path, location: str, aws_conn_id: str) -> None:
    """Copy one local file to a location (local or s3://), replacing what is there."""
    if is_s3(location):
        bucket, key = split_s3(location)
        s3_hook(aws_conn_id).load_file(str(local), key=key, bucket_name=bucket, replace=True)
        return
    target = Path(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(local, target)


def delete_tree(location: str, aws_conn_id: str) -> None:
    """Remove a folder or every object under an s3:// prefix; nothing there is fine."""
    if not is_s3(location):
        shutil.rmtree(location, ignore_errors=True)
        return
    bucket, prefix = split_s3(location)
    keys = [f"{prefix}/{name}" for name in list_files(location, aws_conn_id)]
    hook = s3_hook(aws_conn_id)
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
        hook.delete_objects(bucket=bucket, keys=keys[start : start + 1000])


def replace_partition(folder: Path, destination: str, aws_conn_id: str, marker: str) -> list[str]:
    """Put a fully written local folder at destination, replacing what was there; return the files.

    Locally the folder is renamed into place, so readers see the old partition or the new one.
    S3 has no rename: the old `marker` (the manifest) goes first, so the partition reads as
    incomplete, then the old objects, then the new files, and the new marker last.
    """
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    if marker not in names:
        raise StorageError(f"{folder}: {marker} missing; refusing to publish an incomplete partition")
    if not is_s3(destination):
        target = Path(destination)
        incoming = target.with_name(f".{target.name}.incoming-{os.getpid()}")
        shutil.rmtree(incoming, ignore_errors=True)
        shutil.copytree(folder, incoming)
        publish_folder(incoming, target)
        return [str(target / name) for name in names]
    bucket, prefix = split_s3(destination)
    hook = s3_hook(aws_conn_id)
    hook.delete_objects(bucket=bucket, keys=[f"{prefix}/{marker}"])
    delete_tree(destination, aws_conn_id)
    for name in [n for n in names if n != marker] + [marker]:
        upload(folder / name, join(destination, name), aws_conn_id)
    return [join(destination, name) for name in names]
