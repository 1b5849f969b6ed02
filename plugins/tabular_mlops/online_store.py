"""The online store: each entity's history features, materialised in batch, read per request.

A model whose feature SQL is split (`features.application_view` / `features.history_view`) gets
its history view computed in batch, by the very SQL of a registry version, and written to Redis
keyed by the entity key. Serving then computes only the application part per request and takes
the rest from here, as Feast and Tecton serve aggregates (docs/serving.md, the online store).

Layout, all under one hash tag so a Redis cluster keeps a model's keys on one slot:
`mlops:online:{<model>}:<sql>` (prefix: MLOPS_ONLINE_STORE_PREFIX) is a namespace per history
SQL (`<sql>`: the first 16 hex digits of its fingerprint), so versions that share the SQL share
the features and a version whose SQL differs never reads features another SQL computed. In a
namespace, `:current` names the live generation, `:rows:<gen>` maps each entity key to its
packed features and `:meta:<gen>` says what computed them (version, SQL, columns, source, as-of).

A full materialisation writes a new generation and swaps `:current` to it and deletes the old
one in one server-side script, so a reader sees the old features or the new ones, and an entity
that left the source is gone. An upsert (after a scoring run) replaces the entities of one
partition in the live generation. A lock per namespace keeps two writers apart; generations left
by a killed writer are swept by the next one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

URL_ENV = "MLOPS_ONLINE_STORE_URL"
DEFAULT_URL = "redis://127.0.0.1:6379/0"
# Key prefix: two deployments (or test runs) sharing one Redis keep apart by setting their own.
PREFIX_ENV = "MLOPS_ONLINE_STORE_PREFIX"
DEFAULT_PREFIX = "mlops:online"
FORMAT = 1
_HEADER = struct.Struct("<Bd")  # format, as-of (epoch seconds); then the null bitmap, then values
LOCK_SECONDS = 900
WRITE_BATCH = 2_000  # entities per HSET: big enough to amortise the round trip, small in memory
log = logging.getLogger(__name__)

# The live generation and the entities' rows in it, read together.
_LOOKUP = """
local gen = redis.call('GET', KEYS[1])
if not gen then return false end
return {gen, redis.call('HMGET', ARGV[1] .. ':rows:' .. gen, unpack(ARGV, 2))}
"""


class OnlineStoreError(RuntimeError):
    """The online store cannot be used as asked; the message says what to do."""


class StoreUnavailable(OnlineStoreError):
    """The online store did not answer (down, unreachable or refusing the connection)."""


def store_url() -> str:
    """MLOPS_ONLINE_STORE_URL, else the local Redis a laptop and the CI machine run."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


def url_configured() -> bool:
    """True when the deployment named its online store (a missing one is then an error)."""
    return bool(os.environ.get(URL_ENV))


def redacted(url: str) -> str:
    """The URL without its password, for logs, /health and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str | None = None, timeout: float = 2.0) -> Any:
    """A redis-py client with short timeouts: a request waits milliseconds, not minutes, for it."""
    import redis

    return redis.Redis.from_url(
        url or store_url(), socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
    )


def sql_fingerprint(sql: dict[str, str]) -> str:
    """SHA-256 of a view closure's SQL (names and text, in run order)."""
    return hashlib.sha256(json.dumps(list(sql.items())).encode()).hexdigest()


def namespace(model: str, fingerprint: str) -> str:
    """The key prefix of one model's features computed by one history SQL."""
    prefix = os.environ.get(PREFIX_ENV) or DEFAULT_PREFIX
    return f"{prefix}:{{{model}}}:{fingerprint[:16]}"


def pack(as_of: float, values: np.ndarray) -> bytes:
    """One entity's features: header, null bitmap, then only the non-null float64 values."""
    missing = np.isnan(values)
    return _HEADER.pack(FORMAT, as_of) + np.packbits(missing).tobytes() + values[~missing].tobytes()


def as_of(blob: bytes) -> float:
    """The as-of time (epoch seconds) of a packed entity, without unpacking its values."""
    return float(_HEADER.unpack_from(blob)[1])


def unpack(blob: bytes, width: int) -> tuple[float, np.ndarray]:
    """(as-of, float64 values with NaN for nulls) of a packed entity."""
    version, as_of = _HEADER.unpack_from(blob)
    if version != FORMAT:
        raise OnlineStoreError(f"online store row format {version} is not {FORMAT}: materialise again")
    bits = (width + 7) // 8
    start = _HEADER.size
    missing = np.unpackbits(np.frombuffer(blob, np.uint8, bits, start), count=width).astype(bool)
    out = np.full(width, np.nan)
    out[~missing] = np.frombuffer(blob, np.float64, offset=start + bits)
    return as_of, out


@dataclass(frozen=True)
class Meta:
    """What computed a generation's features."""

    generation: str
    entity_key: str
    columns: list[str]
    model_name: str | None
    model_version: str | None
    sql_sha256: str
    source: str
    as_of: str
    materialized_at: str
    rows: int

    @classmethod
    def from_hash(cls, generation: str, raw: dict[bytes, bytes]) -> Meta:
        """Read a `:meta:<gen>` hash."""
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            generation=generation,
            entity_key=fields["entity_key"],
            columns=json.loads(fields["columns"]),
            model_name=fields.get("model_name") or None,
            model_version=fields.get("model_version") or None,
            sql_sha256=fields["sql_sha256"],
            source=fields["source"],
            as_of=fields["as_of"],
            materialized_at=fields["materialized_at"],
            rows=int(fields["rows"]),
        )


def iso(epoch: float) -> str:
    """UTC ISO time of epoch seconds."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def wrap_errors(action: str, url: str) -> Any:
    """Context manager: redis-py's connection errors as StoreUnavailable naming the store."""
    import contextlib

    import redis

    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(
                f"online store {redacted(url)} unreachable while {action}: {exc}"
            ) from None

    return guard()


def new_generation() -> str:
    """A generation id that sorts by time and never repeats."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


class NotMaterialized(OnlineStoreError):
    """The store holds no features computed by this SQL (never materialised, or another SQL)."""


@dataclass(frozen=True)
class Lookup:
    """The live generation's metadata and each asked entity's packed row (None: not in the store)."""

    meta: Meta
    rows: list[bytes | None]


class OnlineReader:
    """The read side of one model's namespace for one history SQL (serving's, one per version).

    Not thread-safe for its metadata cache; serving calls it from the model's scorer thread."""

    def __init__(self, model: str, sql: dict[str, str], url: str | None = None, timeout: float = 0.5) -> None:
        self.model = model
        self.url = url or store_url()
        self.fingerprint = sql_fingerprint(sql)
        self.prefix = namespace(model, self.fingerprint)
        self.client = connect(self.url, timeout)
        self._lookup = self.client.register_script(_LOOKUP)
        self._meta: Meta | None = None

    def lookup(self, keys: list[str]) -> Lookup:
        """The rows of these entity keys in the live generation, with what computed them."""
        for _ in range(2):  # a swap between the rows and the metadata read: read both again
            with wrap_errors("reading features", self.url):
                found = self._lookup(keys=[f"{self.prefix}:current"], args=[self.prefix, *keys])
                if not found:
                    raise NotMaterialized(
                        f"the online store {redacted(self.url)} holds no {self.model} history features "
                        f"computed by this version's SQL ({self.fingerprint[:16]}): run "
                        f"`mlops materialize --model {self.model}`"
                    )
                generation = found[0].decode()
                meta = self._meta
                if meta is None or meta.generation != generation:
                    raw = self.client.hgetall(f"{self.prefix}:meta:{generation}")
                    if not raw:
                        continue
                    meta = self._meta = Meta.from_hash(generation, raw)
            return Lookup(meta, list(found[1]))
        raise StoreUnavailable(f"online store {redacted(self.url)}: the live generation kept changing")

    def status(self) -> dict[str, Any]:
        """What /health shows: reachable, and the live generation's version, as-of time and size."""
        out: dict[str, Any] = {"url": redacted(self.url), "namespace": self.prefix}
        try:
            generation = self.client.get(f"{self.prefix}:current")
            if generation is None:
                return {**out, "reachable": True, "materialized": False}
            raw = self.client.hgetall(f"{self.prefix}:meta:{generation.decode()}")
        except Exception as exc:  # /health reports any failure of the store, it never raises
            return {**out, "reachable": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        if not raw:
            return {**out, "reachable": True, "materialized": False}
        meta = Meta.from_hash(generation.decode(), raw)
        return {
            **out,
            "reachable": True,
            "materialized": True,
            "generation": meta.generation,
            "model_version": meta.model_version,
            "as_of": meta.as_of,
            "materialized_at": meta.materialized_at,
            "entities": meta.rows,
        }

    def close(self) -> None:
        """Release the connection pool."""
        self.client.close()
