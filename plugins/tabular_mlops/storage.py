"""Reading and writing locations that are either local folders or s3:// prefixes.

S3 goes through the Airflow amazon provider's S3Hook and a named Airflow connection (aws_default
unless the config names another), so credentials live in the connection, never in code or YAML.
The same hook resolves `AIRFLOW_CONN_<ID>` variables when called from the shell.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from tabular_mlops import settings

# The manifest of a published predictions partition, written last (see scoring.publish).
MANIFEST = "_manifest.json"
# Marks a tree the bundle is writing (a run's staging folder, an S3 partition mid-publish):
# {"written_by": OWNER, "files": [...]}, a name ending in "/" claiming a whole folder.
OWNER_MARKER = "_owner.json"
OWNER = "tabular_mlops"
# Foreign entries named in a refusal; the rest are counted.
_SHOWN = 5
# A manifest lists a few files; anything bigger is not one of ours.
_MARKER_BYTES = 16 << 20
# One path segment an allowed location may have: not empty, not "." or "..", no control characters.
_SEGMENT = r"(?!\.\.?(?:/|$))[^/\x00-\x1f\x7f]+"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class StorageError(RuntimeError):
    """A location that cannot be read or written, with the location in the message."""


class UnsafeTarget(StorageError):
    """A destructive write refused because the target holds something this bundle did not write."""


class ForbiddenLocation(StorageError):
    """A location given by a user that lies outside the allowed roots or cannot be trusted to stay in."""


def is_s3(location: str) -> bool:
    """True for s3:// URIs."""
    return location.startswith("s3://")


def location_problem(value: str) -> str | None:
    """What makes a location unusable as a root or a user-given location, or None when it is fine.

    Only the text is judged (symlinks are resolved by `canonical_location`): empty, control
    characters, a scheme other than s3://, an S3 URI without a valid bucket or with empty, "."
    or ".." segments (S3 keys are literal, so `s3://lake/a/../b` is refused, never normalised).
    """
    if not value.strip():
        return "it is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "it contains a control character"
    if not is_s3(value):
        return "only s3:// URIs and local paths are accepted" if _SCHEME.match(value) else None
    bucket, _, key = value[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        return f"{bucket!r} is not a valid S3 bucket name"
    segments = key.rstrip("/").split("/") if key.rstrip("/") else []
    if any(s in ("", ".", "..") for s in segments):
        return "an S3 key may not have empty, '.' or '..' segments"
    return None


def canonical_location(value: str) -> str:
    """A location in the form roots are compared in; StorageError when it is unusable.

    S3 loses its trailing slash; a local path becomes absolute (a relative one is anchored at the
    project) with `..` and symlinks resolved, so a link out of the lake shows where it leads.
    """
    problem = location_problem(value)
    if problem:
        raise StorageError(f"{value!r}: not a usable location: {problem}")
    if is_s3(value):
        return value.rstrip("/")
    return os.path.realpath(settings.resolve_location(value))


def is_within(location: str, root: str) -> bool:
    """True when a canonical location is the canonical root or lies under it on a '/' boundary."""
    if is_s3(location) != is_s3(root):
        return False
    return location == root or location.startswith(root.rstrip("/") + "/")


def check_allowed(name: str, value: str, roots: list[str]) -> str:
    """The canonical form of a user-given location `name`, when it lies under one of the roots.

    ForbiddenLocation names the parameter, the value and the roots otherwise.
    """
    allowed = ", ".join(roots)
    problem = location_problem(value)
    if problem:
        raise ForbiddenLocation(f"{name}={value!r} refused: {problem}; allowed roots: {allowed}")
    location = canonical_location(value)
    if not any(is_within(location, root) for root in roots):
        shown = "" if location == value.rstrip("/") else f" (resolves to {location})"
        raise ForbiddenLocation(f"{name}={value!r}{shown} is outside the allowed roots: {allowed}")
    return location


def _regex_escape(text: str) -> str:
    """Escape regex metacharacters the same way for ECMA-262 (the form) and Python's re (jsonschema)."""
    return "".join("\\" + c if c in "\\^$.|?*+()[]{}" else c for c in text)


def roots_pattern(roots: list[str]) -> str:
    """A JSON-schema `pattern` accepting exactly the locations under one of the canonical roots.

    Segments may not be empty, "." or ".."; `$(?!\\n)` because Python's `$` also matches before a
    final newline. Symlinks cannot be judged by a pattern: the task checks again with them resolved.
    """
    alternatives = [f"{_regex_escape(root.rstrip('/'))}(?:/{_SEGMENT})*/?" for root in roots]
    return f"^(?:{'|'.join(alternatives)})$(?!\\n)"


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


# Linux renameat2(2) flags: fail if the new name exists / swap two names in one step.
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100
# Tests set this to interrupt a publish at a named step (locally "copied", "swapped"; on S3
# "claimed", "unmarked", "cleared", "uploaded", "marked"); None in production.
FAULT_HOOK: Callable[[str], None] | None = None


def _fault_point(step: str) -> None:
    """Give a test the chance to crash the publish here (see FAULT_HOOK)."""
    if FAULT_HOOK is not None:
        FAULT_HOOK(step)


def _renameat2(source: Path, target: Path, flags: int) -> None:
    """renameat2(2) through libc; OSError with the errno (ENOSYS/EINVAL where it is unsupported)."""
    import ctypes

    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc/Linux: no atomic exchange here
        raise OSError(errno.ENOSYS, "renameat2 is not available") from None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if call(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(source), None, str(target))


def _swap_into_place(new: Path, final: Path) -> bool:
    """Give `new` the name `final` in one atomic step; True when an older `final` now sits at `new`.

    A fresh name is a plain rename that refuses to overwrite; an existing folder is exchanged with
    the new one (RENAME_EXCHANGE), so the name never points at nothing. Where the filesystem
    cannot exchange (not Linux, some network filesystems), the old folder is renamed away first:
    not atomic, the gap docs/scoring.md names.
    """
    while True:
        try:
            _renameat2(new, final, _RENAME_NOREPLACE)
            return False
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            return _two_step_replace(new, final)
        try:
            _renameat2(new, final, _RENAME_EXCHANGE)
            return True
        except FileNotFoundError:
            continue  # removed meanwhile by a concurrent publish: the plain rename applies again


def _two_step_replace(new: Path, final: Path) -> bool:
    """The fallback without an atomic exchange: old folder to a scratch name, new folder in."""
    if not final.exists():
        os.replace(new, final)
        return False
    aside = Path(tempfile.mkdtemp(dir=final.parent, prefix=scratch_prefix(final)))
    os.replace(final, aside)  # onto the empty scratch folder
    os.replace(new, final)
    os.replace(aside, new)
    return True


def scratch_prefix(final: Path) -> str:
    """Name prefix of a publish's scratch folder beside `final`: hidden, and naming host and process.

    A reader of `<parent>/` skips it (dot first); `sweep_scratch` removes it once its process is gone.
    """
    return f".{final.name}.incoming-{_host_tag()}-{os.getpid()}-"


def _host_tag() -> str:
    """This host's name as it appears in scratch names: no '-', which separates their fields."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def sweep_scratch(final: Path) -> None:
    """Remove scratch folders of earlier publishes to `final` whose process died on this host.

    A live process (this host, its pid running) or another host's folder is left alone: it may be
    a publish in progress.
    """
    pattern = re.compile(rf"\.{re.escape(final.name)}\.incoming-(?P<host>[^-]+)-(?P<pid>\d+)-[^-]+")
    host = _host_tag()
    for path in final.parent.glob(f".{glob.escape(final.name)}.incoming-*"):
        found = pattern.fullmatch(path.name)
        if found is None or found["host"] != host or _alive(int(found["pid"])):
            continue
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    """True when a process with this pid runs on this host (or cannot be signalled by us)."""
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def publish_folder(staging: Path, final: Path) -> None:
    """Move a fully written folder to `final` in one atomic rename; an older folder there is removed.

    Readers of `final` see the old folder or the new one, never neither and never a mix: the two
    are exchanged in one system call, and the old one, now at the staging name, is deleted after.
    Leftovers of publishes that died are swept first.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_scratch(final)
    _fault_point("copied")
    if _swap_into_place(staging, final):
        _fault_point("swapped")
        shutil.rmtree(staging)


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


def exists(location: str, aws_conn_id: str) -> bool:
    """True when a file (local path or s3:// object) is there."""
    if not is_s3(location):
        return Path(location).is_file()
    bucket, key = split_s3(location)
    return bool(s3_hook(aws_conn_id).check_for_key(key, bucket_name=bucket))


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


def _local_entries(folder: Path) -> list[str]:
    """Every file and symlink under a folder, relative and sorted; symlinked folders are not entered."""
    entries = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        base = Path(root)
        # A symlink to a folder shows up in dirs; it is an entry of its own, never walked into.
        names = files + [d for d in dirs if (base / d).is_symlink()]
        entries += [(base / name).relative_to(folder).as_posix() for name in names]
    return sorted(entries)


def _read_marker(location: str, name: str, aws_conn_id: str) -> Any:
    """The parsed JSON of a marker file at a location, None when it is not a plain, small JSON file."""
    if not is_s3(location) and Path(location, name).is_symlink():
        return None  # a symlinked "manifest" could point anywhere (/dev/zero); it claims nothing
    with tempfile.TemporaryDirectory(prefix="mlops-marker-") as tmp:
        try:
            local = download(join(location, name), Path(tmp) / name, aws_conn_id)
            if local.stat().st_size > _MARKER_BYTES:
                return None
            return json.loads(local.read_text())
        except Exception:  # bad JSON, OSError or one of botocore's many: an unreadable marker claims nothing
            return None


def _claimed(name: str, record: Any) -> set[str] | None:
    """The entries a marker claims for the bundle, or None when the marker is not the bundle's.

    A partition's manifest is recognised by the fields scoring has always written; the owner
    marker by its `written_by`.
    """
    if not isinstance(record, dict):
        return None
    if name == OWNER_MARKER and record.get("written_by") == OWNER:
        files = record.get("files")
    elif name == MANIFEST and all(k in record for k in ("model", "model_version", "run_id", "published_at")):
        output = record.get("output")
        files = output.get("files") if isinstance(output, dict) else None
    else:
        return None
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        return None
    return {*files, name}


def _covered(entry: str, claimed: set[str]) -> bool:
    """True when a claimed name is the entry itself or a claimed folder ("name/") holds it."""
    return entry in claimed or any(c.endswith("/") and entry.startswith(c) for c in claimed)


def _refusal(location: str, foreign: list[str], why: str) -> UnsafeTarget:
    """The error of a refused target, naming the first few foreign entries."""
    more = len(foreign) - _SHOWN
    shown = ", ".join(foreign[:_SHOWN]) + (f" and {more} more" if more > 0 else "")
    return UnsafeTarget(
        f"{location}: refusing to replace or delete it: {why}; {len(foreign)} file(s) there were "
        f"not written by this bundle: {shown}. Nothing was changed; choose an empty location or "
        "one holding a partition this bundle published"
    )


def owned_entries(location: str, aws_conn_id: str) -> list[str]:
    """What lies under a location, after checking this bundle wrote all of it; UnsafeTarget otherwise.

    Every destructive call (replace, delete) goes through here first, so a mistyped or hostile
    target (s3://mlflow/1, a home folder) is refused before anything is touched. Empty is fine;
    otherwise a marker of the bundle (a partition's manifest or the owner marker) must be at the
    top and claim every entry.
    """
    if is_s3(location):
        entries = list_files(location, aws_conn_id)
    else:
        folder = Path(location)
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            kind = "a symlink" if folder.is_symlink() else "a file"
            raise UnsafeTarget(f"{location}: refusing to replace or delete it: it is {kind}, not a folder")
        entries = _local_entries(folder) if folder.is_dir() else []
    if not entries:
        return []
    claimed: set[str] = set()
    markers = [m for m in (MANIFEST, OWNER_MARKER) if m in entries]
    for marker in markers:
        claimed |= _claimed(marker, _read_marker(location, marker, aws_conn_id)) or set()
    foreign = [e for e in entries if not _covered(e, claimed)]
    if not foreign:
        return entries
    why = "it has no manifest of this bundle" if not claimed else "its manifest does not list everything"
    raise _refusal(location, foreign, why)


def claim(location: str, entries: Iterable[str], aws_conn_id: str) -> None:
    """Mark a location as being written by the bundle (after the ownership check), before writing there."""
    owned_entries(location, aws_conn_id)
    _write_claim(location, entries, aws_conn_id)


def _write_claim(location: str, entries: Iterable[str], aws_conn_id: str) -> None:
    """The owner marker claiming `entries` (callers have checked ownership)."""
    with tempfile.TemporaryDirectory(prefix="mlops-claim-") as tmp:
        marker = Path(tmp) / OWNER_MARKER
        marker.write_text(json.dumps({"written_by": OWNER, "files": sorted(set(entries))}, indent=2))
        upload(marker, join(location, OWNER_MARKER), aws_conn_id)


def _delete(location: str, names: list[str], aws_conn_id: str) -> None:
    """Remove the named entries under a location, in order (callers have checked ownership)."""
    if not is_s3(location):
        for name in names:
            Path(location, name).unlink(missing_ok=True)
        return
    bucket, prefix = split_s3(location)
    keys = [f"{prefix}/{name}" if prefix else name for name in names]
    hook = s3_hook(aws_conn_id)
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
        hook.delete_objects(bucket=bucket, keys=keys[start : start + 1000])


def _prune_empty(folder: Path) -> None:
    """Remove empty sub-folders left after deleting files, deepest first, then the folder if empty."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for root, dirs, _ in os.walk(folder, topdown=False):
        for name in dirs:
            path = Path(root) / name
            if not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


def delete_tree(location: str, aws_conn_id: str, keep: Collection[str] = ()) -> None:
    """Remove what the bundle wrote under a location, except `keep`; UnsafeTarget if anything is foreign.

    Markers go last, so a delete cut short leaves a tree that is still recognised as the bundle's.
    """
    entries = owned_entries(location, aws_conn_id)
    markers = (MANIFEST, OWNER_MARKER)
    doomed = [e for e in entries if e not in keep and e not in markers]
    doomed += [e for e in entries if e in markers and e not in keep]
    _delete(location, doomed, aws_conn_id)
    if not is_s3(location):
        _prune_empty(Path(location))


def replace_partition(folder: Path, destination: str, aws_conn_id: str, marker: str = MANIFEST) -> list[str]:
    """Put a fully written local folder at destination, replacing what was there; return the files.

    The destination must be empty or hold a partition this bundle wrote (`owned_entries`); the
    check runs before anything is moved or deleted. Locally the folder is copied to a hidden
    scratch folder beside the target and exchanged with it in one atomic rename
    (`publish_folder`), so readers see the old partition or the new one, never neither. S3 has
    no rename: an owner marker claiming old and new files goes first (a publish cut short can
    be re-run), then the old `marker` (the manifest) goes, so the partition reads as incomplete
    (readers skip it), then the old objects, then the new files, the new marker and last the
    owner marker is removed.
    """
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    if marker not in names:
        raise StorageError(f"{folder}: {marker} missing; refusing to publish an incomplete partition")
    old = owned_entries(destination, aws_conn_id)
    if not is_s3(destination):
        target = Path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        # A fresh name beside the target, so no older folder is ever removed to make room.
        incoming = Path(tempfile.mkdtemp(dir=target.parent, prefix=scratch_prefix(target)))
        try:
            shutil.copytree(folder, incoming, dirs_exist_ok=True)
            publish_folder(incoming, target)
        finally:  # a failed copy leaves no scratch behind (a killed one is swept next time)
            shutil.rmtree(incoming, ignore_errors=True)
        return [str(target / name) for name in names]
    _write_claim(destination, [*old, *names], aws_conn_id)  # `old` passed the ownership check above
    _fault_point("claimed")
    _delete(destination, [marker] if marker in old else [], aws_conn_id)
    _fault_point("unmarked")
    _delete(destination, [n for n in old if n not in (marker, OWNER_MARKER)], aws_conn_id)
    _fault_point("cleared")
    for name in [n for n in names if n != marker]:
        upload(folder / name, join(destination, name), aws_conn_id)
    _fault_point("uploaded")
    upload(folder / marker, join(destination, marker), aws_conn_id)
    _fault_point("marked")
    _delete(destination, [OWNER_MARKER], aws_conn_id)
    return [join(destination, name) for name in names]
