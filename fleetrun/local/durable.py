"""The local runtime's durable state: moto's backends as a snapshot plus a journal of writes.

`FLEETRUN_DATA_DIR/state/` holds `snapshot.bin` (a consistent pickle of every stand-in backend
and of the runtime's own positions, taken under the write lock) and `journal-<generation>.log`,
the mutating requests acknowledged since that snapshot, in order. On start the snapshot is loaded
and the journal replayed through the same moto application; a new snapshot replaces both on a
clean stop once the journal holds `close_snapshot_bytes` (a smaller one is quicker to replay at
the next start than a large state is to write), after a non-replayable request (KMS key
material is drawn from `os.urandom`), and once the journal passes `compact_bytes`.

Promises: each mutating request is written to the journal (it reaches the operating system)
before its answer is sent, so a killed runtime loses no acknowledged write; the journal is
fsynced every `fsync_seconds` (0: after each write), so a machine crash loses at most that much.

Replay is deterministic: mutating requests run one at a time under `lock`, each with moto's
random generator seeded from a recorded seed and moto's clock frozen at a recorded instant
(a thread-local override of `moto.core.utils.utcnow`); replay sets the same seed and instant.
Only requests that succeeded (2xx) are journaled: a refused request changed nothing.

A torn journal tail (the runtime died mid-write) is cut at the last complete record and the cut
bytes kept beside it, with a warning; a snapshot that cannot be read stops the start with
`StateUnreadable` and nothing is overwritten.
"""

from __future__ import annotations

import contextlib
import copyreg
import datetime
import gc
import io
import itertools
import json
import logging
import os
import pickle
import random
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

logger = logging.getLogger("fleetrun.local.durable")

#: the stand-in services whose backends are kept (one pickle: shared references stay shared)
SERVICES = ("dynamodb", "dynamodbstreams", "sqs", "kms", "s3", "scheduler", "ses", "sesv2", "events", "sts")
#: requests that change nothing: actions starting so, and stateless cryptography
_READ_PREFIXES = ("Get", "List", "Describe", "Query", "Scan", "BatchGet", "TransactGet", "Head")
_STATELESS = frozenset({"Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
                        "GenerateDataKeyPair", "GenerateRandom", "Sign", "Verify", "GenerateMac", "VerifyMac"})
#: requests whose effect replay cannot reproduce (random key material): a snapshot follows them
_NOT_REPLAYABLE = frozenset({"CreateKey", "ImportKeyMaterial", "ReplicateKey", "CreateGrant"})
_SNAPSHOT_MAGIC = b"FLEETRUN-SNAPSHOT-1\n"
_RECORD_HEADER = struct.Struct("<II")  # payload length, crc32 of the payload
_SNAPSHOT_HEADER = struct.Struct("<QI")  # payload length, crc32
_KEPT_ENVIRON = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
                 "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SCRIPT_NAME", "REMOTE_ADDR")

#: GET here on the stand-in's port: how many requests it has served (bench/local_e2e.py)
REQUESTS_PATH = "/fleetrun/requests"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class StateUnreadable(Exception):
    """The snapshot (or the journal's base) cannot be read: the start stops, nothing is touched."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(
            f"cannot read the local state {path}: {reason}. Nothing was changed. Restore the directory "
            f"{path.parent} from a backup (`fleetrun local snapshot`), or start afresh with "
            f"`fleetrun local reset` (this deletes every task, node and secret of the local runtime)."
        )


class StateInUse(Exception):
    """Another process (a running runtime) holds the state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        super().__init__(f"{directory} is in use by a running fleetrun runtime: stop it first (Ctrl-C)")


def hold(directory: Path) -> int:
    """Lock `directory` for this process (released when it exits, even by `kill -9`); the lock's fd."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateInUse(directory) from None
    return fd


@dataclass
class Recovery:
    """What `Store.open` found."""

    snapshot: bool = False
    replayed: int = 0
    #: replayed requests that failed (a replay that diverged; logged)
    failed: int = 0
    #: a warning about a torn journal tail, or ""
    torn: str = ""
    seconds: float = 0.0


# --- moto's clock and random generator, pinned per request --------------------------------------
_pinned = threading.local()
_real_utcnow: Callable[[], datetime.datetime] | None = None


def _utcnow() -> datetime.datetime:
    at: datetime.datetime | None = getattr(_pinned, "at", None)
    if at is not None:
        return at
    assert _real_utcnow is not None
    return _real_utcnow()


def install_clock() -> None:
    """Route every `utcnow` moto imported through `_utcnow` (idempotent)."""
    global _real_utcnow
    import moto.backends  # noqa: F401  (the service modules import `utcnow` by name)
    from moto.core import utils

    if _real_utcnow is not None:
        return
    _real_utcnow = utils.utcnow
    for name, module in list(sys.modules.items()):
        if (name == "moto" or name.startswith("moto.")) and getattr(module, "utcnow", None) is _real_utcnow:
            module.utcnow = _utcnow  # type: ignore[attr-defined]


class _Pinned:
    def __init__(self, at: float, seed: int) -> None:
        self.at, self.seed = at, seed

    def __enter__(self) -> None:
        from moto.moto_api._internal import mock_random

        install_clock()
        _pinned.at = datetime.datetime.fromtimestamp(self.at, datetime.UTC).replace(tzinfo=None)
        mock_random.seed(self.seed)

    def __exit__(self, *_: object) -> None:
        _pinned.at = None


# --- pickling what the stand-in holds --------------------------------------------------------------
def _item_attributes(attributes: dict[str, Any]) -> Any:
    """An item's attributes as moto keeps them, without re-checking the item's size per key."""
    from moto.dynamodb.models.dynamo_type import LimitedSizeDict

    restored = LimitedSizeDict()
    dict.update(restored, attributes)
    return restored


def _private_key_holder(cls: type, state: dict[str, Any], pem: bytes) -> Any:
    """moto's wrapper of a KMS private key, its key loaded back from PKCS#8 PEM."""
    holder: Any = object.__new__(cls)
    holder.__dict__.update(state, private_key=_load_private_key(pem))
    return holder


def _load_private_key(pem: bytes) -> Any:
    """A private key from PKCS#8 PEM (also how snapshots written before the wrapper's own
    reduction hold their keys)."""
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(pem, password=None)


def _reduce_private_key_holder(holder: Any) -> tuple[Any, ...]:
    from cryptography.hazmat.primitives import serialization

    pem = holder.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
    state = {k: v for k, v in holder.__dict__.items() if k != "private_key"}
    return (_private_key_holder, (type(holder), state, pem))


def _reduce_lock(lock: Any) -> tuple[Any, ...]:
    return (type(lock), ())


def _reduce_item_attributes(attributes: dict[str, Any]) -> tuple[Any, ...]:
    return (_item_attributes, (dict(attributes),))


class _Pickler(pickle.Pickler):
    """Locks become new locks; KMS private keys travel as PKCS#8 PEM; an item's attributes
    travel as a plain dict (unpickling moto's `LimitedSizeDict` key by key recomputes the whole
    item's size at every key: a minute instead of seconds for 140,000 items). Special cases go
    in the dispatch table, looked up by exact type in C: a `reducer_override` would be a Python
    call for each of the millions of objects a snapshot holds."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        from moto.dynamodb.models.dynamo_type import LimitedSizeDict
        from moto.kms.utils import ECDSAPrivateKey, RSAPrivateKey

        self.dispatch_table = {
            **copyreg.dispatch_table,
            LimitedSizeDict: _reduce_item_attributes,
            type(threading.Lock()): _reduce_lock,
            type(threading.RLock()): _reduce_lock,
            RSAPrivateKey: _reduce_private_key_holder,
            ECDSAPrivateKey: _reduce_private_key_holder,
        }


def _dump(value: Any) -> bytes:
    buffer = io.BytesIO()
    with _collector_paused():
        _Pickler(buffer).dump(value)
    return buffer.getvalue()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while millions of objects are pickled or unpickled (each
    collection would walk all the objects made so far: 3x the time); their cycles are found at
    the next collection after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --- which requests write ------------------------------------------------------------------------
def action_of(environ: dict[str, Any], body: bytes) -> str | None:
    """The AWS action of a request (JSON target or query `Action=`), None for REST-style requests."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return str(target).rsplit(".", 1)[-1]
    for source in (environ.get("QUERY_STRING", ""), body.decode("utf-8", "replace") if body[:7] == b"Action=" or
                   b"&Action=" in body else ""):
        found = parse_qs(source).get("Action")
        if found:
            return str(found[0])
    return None


def is_mutating(environ: dict[str, Any], body: bytes) -> bool:
    if str(environ.get("PATH_INFO", "")).startswith("/moto-api"):
        return False
    action = action_of(environ, body)
    if action is not None:
        return not action.startswith(_READ_PREFIXES) and action not in _STATELESS
    return environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD", "OPTIONS")


# --- the store -----------------------------------------------------------------------------------
@dataclass
class Store:
    directory: Path
    fsync_seconds: float = 1.0
    compact_bytes: int = 16 * 1024 * 1024
    #: a clean stop snapshots from this journal size on (10,000 tasks: a 10 s snapshot; 1 MB of
    #: journal: about a second of replay)
    close_snapshot_bytes: int = 1024 * 1024
    #: serialises every mutating request, and snapshots
    lock: threading.RLock = field(default_factory=threading.RLock)
    meta: dict[str, Any] = field(default_factory=dict)
    generation: int = 0
    _fd: int = -1
    _journal_bytes: int = 0
    _dirty: bool = False
    _closed: threading.Event = field(default_factory=threading.Event)
    _app: WsgiApp | None = None
    _syncer: threading.Thread | None = None
    _lock_fd: int = -1
    _served: Iterator[int] = field(default_factory=itertools.count)

    @property
    def snapshot_path(self) -> Path:
        return self.directory / "snapshot.bin"

    def journal_path(self, generation: int | None = None) -> Path:
        return self.directory / f"journal-{self.generation if generation is None else generation}.log"

    # --- start --------------------------------------------------------------------------------
    def open(self, app: WsgiApp) -> Recovery:
        """Load the snapshot and replay the journal into moto's backends through `app`."""
        started = time.monotonic()
        self._app = app
        self._lock_fd = hold(self.directory)
        install_clock()
        recovery = Recovery()
        journals = sorted(self.directory.glob("journal-*.log"), key=_generation_of)
        if self.snapshot_path.exists():
            state = _read_snapshot(self.snapshot_path)
            self._restore(state)
            recovery.snapshot = True
        elif journals and _generation_of(journals[-1]) > 0:
            raise StateUnreadable(self.snapshot_path, f"it is missing but {journals[-1].name} needs it")
        path = self.journal_path()
        if path.exists():
            good, torn = self._replay(path, recovery)
            if torn:
                kept = path.with_name(f"{path.name}.torn-{int(time.time())}")
                with path.open("rb") as source:
                    source.seek(good)
                    kept.write_bytes(source.read())
                os.truncate(path, good)
                recovery.torn = (f"{path} ended in an incomplete record: {torn} byte(s) after offset {good} "
                                 f"were not replayed (the write they held was never acknowledged); kept in {kept}")
                logger.warning("%s", recovery.torn)
        for stale in journals:
            if _generation_of(stale) < self.generation:
                stale.unlink()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._journal_bytes = os.fstat(self._fd).st_size
        self._syncer = threading.Thread(target=self._sync_loop, name="journal fsync", daemon=True)
        self._syncer.start()
        recovery.seconds = time.monotonic() - started
        return recovery

    def _restore(self, state: dict[str, Any]) -> None:
        from moto.backends import get_backend

        self.generation = int(state["generation"])
        self.meta = dict(state["meta"])
        for name, backends in state["backends"].items():
            live = get_backend(name)
            dict.clear(live)
            dict.update(live, backends)
        _register_buckets()

    def _replay(self, path: Path, recovery: Recovery) -> tuple[int, int]:
        """Apply every complete record; (offset after the last one, bytes of a torn tail)."""
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            header_end = offset + _RECORD_HEADER.size
            if header_end > len(data):
                break
            length, crc = _RECORD_HEADER.unpack_from(data, offset)
            payload = data[header_end:header_end + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            try:
                record = pickle.loads(payload)
            except Exception:
                break
            self._apply(record, recovery)
            offset = header_end + length
        return offset, len(data) - offset

    def _apply(self, record: tuple[Any, ...], recovery: Recovery) -> None:
        if record[0] == "meta":
            _, key, value = record
            self.meta[key] = value
            return
        if record[0] == "release":
            _release_in_flight(record[1])
            return
        _, at, seed, kept, body = record
        environ: dict[str, Any] = {**kept, "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
                                   "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.multithread": False,
                                   "wsgi.multiprocess": False, "wsgi.run_once": False}
        status: list[str] = []
        assert self._app is not None
        with _Pinned(at, seed):
            for _ in self._app(environ, lambda s, headers, exc_info=None: status.append(s)):
                pass
        recovery.replayed += 1
        if not status or not status[0].startswith("2"):
            recovery.failed += 1
            logger.warning("replaying %s %s answered %s", kept.get("REQUEST_METHOD"), kept.get("PATH_INFO"),
                           status[0] if status else "nothing")

    # --- serving ------------------------------------------------------------------------------
    def wrap(self, app: WsgiApp, observer: Callable[[str | None, bytes], None] | None = None) -> WsgiApp:
        """`app` with every mutating request journaled before its answer leaves; `observer`
        hears of each journaled one (its action and body) after the lock is released."""

        def journaled(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == REQUESTS_PATH:  # the bench's count of requests served
                start_response("200 OK", [("Content-Type", "application/json")])
                return [json.dumps({"requests": next(self._served)}).encode()]
            next(self._served)
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            if not is_mutating(environ, body):
                return app(environ, start_response)
            answer: list[Any] = []

            def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
                answer[:] = [status, headers, exc_info]
                return lambda _chunk: None

            action = action_of(environ, body)
            recorded = False
            with self.lock:
                at, seed = time.time(), random.getrandbits(63)
                before = _queue_sizes() if action == "ReceiveMessage" else None
                with _Pinned(at, seed):
                    chunks = b"".join(app(environ, capture))
                # an empty receive changed nothing, unless it dead-lettered or expired messages
                idle = before is not None and b"ReceiptHandle" not in chunks and before == _queue_sizes()
                if str(answer[0]).startswith("2") and not idle:
                    kept = {k: v for k, v in environ.items() if k.startswith("HTTP_") or k in _KEPT_ENVIRON}
                    self._append(("request", at, seed, kept, body))
                    recorded = True
                    if action in _NOT_REPLAYABLE:
                        self.snapshot()
            if recorded and observer is not None:
                observer(action, body)
            start_response(*answer)
            return [chunks]

        return journaled

    def release_in_flight(self) -> int:
        """Make the SQS messages the last runtime's consumers had received visible again now: those
        consumers died with it (on AWS they would come back after their visibility timeout)."""
        with self.lock:
            at = time.time()
            released = _release_in_flight(at)
            if released:
                self._append(("release", at))
        return released

    def put_meta(self, key: str, value: Any) -> None:
        """Keep one of the runtime's own values (a stream position, a schedule's progress)."""
        with self.lock:
            self.meta[key] = value
            self._append(("meta", key, value))

    def _append(self, record: tuple[Any, ...]) -> None:
        payload = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _RECORD_HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        written = 0
        while written < len(frame):
            written += os.write(self._fd, frame[written:])
        self._journal_bytes += len(frame)
        if self.fsync_seconds <= 0:
            os.fsync(self._fd)
        else:
            self._dirty = True
        if self._journal_bytes > self.compact_bytes:
            self.snapshot()

    def _sync_loop(self) -> None:
        while not self._closed.wait(max(self.fsync_seconds, 0.05)):
            self.sync()

    def sync(self) -> None:
        if self._dirty and self._fd >= 0:
            self._dirty = False
            os.fsync(self._fd)

    # --- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> Path:
        """Write a consistent snapshot and start a new, empty journal; returns the snapshot's path."""
        from moto.backends import get_backend

        from fleetrun.local import moto_fixes

        with self.lock, moto_fixes.LOCK:
            state = {
                "generation": self.generation + 1,
                "meta": self.meta,
                "backends": {name: dict(get_backend(name)) for name in SERVICES},  # type: ignore[call-overload]
            }
            _write_snapshot(self.snapshot_path, _dump(state))
            self.generation += 1
            old_fd, old_path = self._fd, self.journal_path(self.generation - 1)
            self._fd = os.open(self.journal_path(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            _fsync_directory(self.directory)
            self._journal_bytes, self._dirty = 0, False
            if old_fd >= 0:
                os.close(old_fd)
            old_path.unlink(missing_ok=True)
        return self.snapshot_path

    def close(self) -> int | None:
        """A final snapshot if the journal is large (the next start loads it without replaying
        much), then stop syncing. Returns the bytes of journal kept instead of a snapshot, None
        after a snapshot."""
        if self._fd < 0:
            return None
        kept: int | None = self._journal_bytes
        if self._journal_bytes >= self.close_snapshot_bytes:
            self.snapshot()
            kept = None
        self._closed.set()
        with self.lock:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.close(self._lock_fd)
        return kept


def forget() -> None:
    """Drop everything the stand-in holds in this process: what a test or a tool that borrowed a
    state directory (`Store.open`) leaves behind before moto's own mocks run again."""
    from moto.backends import get_backend

    for name in SERVICES:
        dict.clear(get_backend(name))  # type: ignore[call-overload]
    _register_buckets()


def _register_buckets() -> None:
    """S3's bucket namespace is global: moto keeps it beside the backends (bucket -> partition,
    account). Rebuilt from the buckets the backends hold, or a stale entry makes every later
    lookup of that bucket recurse and every create of it fail."""
    from moto.s3.models import s3_backends

    s3_backends.bucket_accounts.clear()
    for account_id, by_partition in dict.items(s3_backends):
        for partition, backend in dict.items(by_partition):
            for name in backend.buckets:
                s3_backends.bucket_accounts[name] = (partition, account_id)


def _queue_sizes() -> list[int]:
    from moto.backends import get_backend

    return [len(queue._messages) for account in get_backend("sqs").values() for backend in account.values()
            for queue in backend.queues.values()]


def _release_in_flight(at: float) -> int:
    from moto.backends import get_backend

    released = 0
    with _Pinned(at, 0):
        for account in get_backend("sqs").values():
            for backend in account.values():
                for queue in backend.queues.values():
                    for message in list(queue.pending_messages):
                        message.change_visibility(0)
                        queue.pending_messages.discard(message)
                        released += 1
    return released


def _generation_of(path: Path) -> int:
    try:
        return int(path.name.removeprefix("journal-").removesuffix(".log"))
    except ValueError:
        return -1


def _write_snapshot(path: Path, payload: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as out:
        out.write(_SNAPSHOT_MAGIC + _SNAPSHOT_HEADER.pack(len(payload), zlib.crc32(payload)))
        out.write(payload)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def _read_snapshot(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise StateUnreadable(path, str(error)) from error
    start = len(_SNAPSHOT_MAGIC) + _SNAPSHOT_HEADER.size
    if not data.startswith(_SNAPSHOT_MAGIC) or len(data) < start:
        raise StateUnreadable(path, "it is not a fleetrun snapshot (bad header)")
    length, crc = _SNAPSHOT_HEADER.unpack_from(data, len(_SNAPSHOT_MAGIC))
    payload = memoryview(data)[start:]
    if len(payload) != length or zlib.crc32(payload) != crc:
        raise StateUnreadable(path, f"it is damaged ({len(payload)} of {length} bytes, checksum mismatch)")
    try:
        with _collector_paused():
            state: dict[str, Any] = pickle.loads(payload)
    except Exception as error:
        raise StateUnreadable(path, f"it does not load ({error!r}); was it written by another moto version?") from error
    return state


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_records(path: Path) -> Iterator[tuple[Any, ...]]:
    """The complete records of a journal (for tests and inspection)."""
    data = path.read_bytes()
    offset = 0
    while offset + _RECORD_HEADER.size <= len(data):
        length, crc = _RECORD_HEADER.unpack_from(data, offset)
        payload = data[offset + _RECORD_HEADER.size:offset + _RECORD_HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            return
        yield pickle.loads(payload)
        offset += _RECORD_HEADER.size + length


def backup(data_dir: Path, target: Path) -> Path:
    """Copy a stopped runtime's data directory to `target` (`fleetrun local snapshot`)."""
    import shutil

    fd = hold(data_dir / "state")
    try:
        shutil.copytree(data_dir, target, ignore=shutil.ignore_patterns("lock", "*.tmp"))
    finally:
        os.close(fd)
    return target


def reset(data_dir: Path) -> list[Path]:
    """Delete a stopped runtime's state, tokens and agent sandboxes (`fleetrun local reset`)."""
    import shutil

    if not data_dir.exists():
        return []
    fd = hold(data_dir / "state")
    removed = sorted(data_dir.iterdir())
    try:
        for path in removed:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    finally:
        os.close(fd)
    return removed
