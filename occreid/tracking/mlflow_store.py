"""Where MLflow runs are stored, and how many processes write one SQLite store without losing records.

Why this exists: the DAG runs train and evaluate jobs in parallel (``dvc repro`` with several jobs, or one
SLURM job per experiment), and all of them log into the same ``sqlite:///mlflow.db``. Plain MLflow on SQLite
then fails in three ways: two processes race to create the schema of a fresh database, writers hit
"database is locked" when the lock is held longer than SQLite's busy timeout, and artifacts land in
``./mlruns`` of whatever folder a job happened to start in. This module fixes each:

- the store is opened (schema created or upgraded, default experiment written) and experiments are created
  while holding an exclusive ``fcntl.flock`` on ``<db>.lock`` beside the database, so exactly one process
  initialises it;
- every write goes through :func:`retry_locked`, which retries "database is locked" with jittered
  exponential backoff on top of MLflow's own 20 s busy timeout (writes are transactions: a locked write
  left nothing behind, so retrying it cannot duplicate a record);
- an experiment created here gets an explicit artifact location ``<folder of the db>/mlartifacts/<name>``,
  inside the project whatever the working directory.

Relative SQLite paths are resolved against the project root (not the working directory) for the same reason.
For many nodes of a cluster, a tracking server (``http://...``) is the better store: SQLite over NFS is slow
and its locks are only as good as the file system's. A server URI is used as it is (the server chooses the
artifact store); MLflow's HTTP retries, which by default keep a request going for about four minutes, are
bounded by :func:`bound_http_retries`, and :func:`probe_server` finds a server that is not there at all before
the first request, so that an unreachable server costs a job seconds, not minutes.

How long a write may wait for a locked store is bounded too (``$OCCREID_TRACKING_TIMEOUT``, default 60 s):
past that, :mod:`occreid.tracking.run` gives up on the store for the rest of the run rather than stall
training.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from occreid.errors import OccreidError

if TYPE_CHECKING:  # mlflow takes seconds to import: only when a run is really tracked
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
T = TypeVar("T")

ENV_URI = "MLFLOW_TRACKING_URI"
ENV_ENABLED = "OCCREID_TRACKING"
ENV_PROJECT_ROOT = "OCCREID_PROJECT_ROOT"
ENV_TIMEOUT = "OCCREID_TRACKING_TIMEOUT"
ENV_ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"
DEFAULT_TIMEOUT = 60.0  # seconds a tracking call may keep retrying a locked store
# MLflow's own knobs for requests to a tracking server, with the values used unless the user set them:
# 3 retries 0 + 2 + 4 s apart (plus jitter), 30 s per request (MLflow: 7 retries up to 120 s apart, 120 s).
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
PROJECT_MARKERS = ("dvc.yaml", "params.yaml", "Snakefile")
DB_NAME = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"

_FALSE = {"0", "false", "no", "off"}
_TRUE = {"1", "true", "yes", "on"}
_LOCKED = ("database is locked", "database table is locked", "database schema is locked")
_BUSY_SERVER = re.compile(r"too many (429|500|502|503|504) error responses")
PROBE_CONNECT_TIMEOUT = 5.0  # seconds to open a connection to a tracking server before calling it unreachable


def project_root(start: str | Path | None = None) -> Path:
    """The project folder: ``$OCCREID_PROJECT_ROOT``, else the nearest folder upwards holding ``dvc.yaml``,
    ``params.yaml`` or ``Snakefile``, else the working directory.

    Searching upwards lets a job started in a sub-folder still find the project's store.
    """
    env = os.environ.get(ENV_PROJECT_ROOT)
    if env:
        return Path(env).expanduser().resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / m).exists() for m in PROJECT_MARKERS):
            return folder
    return here


def tracking_enabled(params_enabled: bool = True) -> bool:
    """Whether runs are logged: ``$OCCREID_TRACKING`` (0/1, false/true, off/on) wins over params.

    Quick tests and debugging runs set ``OCCREID_TRACKING=0`` to skip MLflow (and its import) entirely.
    """
    value = os.environ.get(ENV_ENABLED, "").strip().lower()
    if not value:
        return params_enabled
    if value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise OccreidError(
        f"environment variable {ENV_ENABLED}={value!r} is not a switch",
        fix=f"set {ENV_ENABLED}=0 to disable tracking or {ENV_ENABLED}=1 to enable it",
    )


def store_timeout() -> float:
    """Seconds one tracking call may keep retrying a locked store: ``$OCCREID_TRACKING_TIMEOUT`` or 60."""
    value = os.environ.get(ENV_TIMEOUT, "").strip()
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise OccreidError(f"environment variable {ENV_TIMEOUT}={value!r} is not a number of seconds > 0",
                           fix=f"unset it (default {DEFAULT_TIMEOUT:g} s) or set e.g. {ENV_TIMEOUT}=30")
    return seconds


def is_server(uri: str) -> bool:
    """True for a tracking server URI (``http://`` or ``https://``)."""
    return uri.lower().startswith(("http://", "https://"))


def probe_server(uri: str, connect_timeout: float = PROBE_CONNECT_TIMEOUT) -> None:
    """Raise :class:`ConnectionError` when no tracking server can be connected to at ``uri`` (refused, unknown
    host, no route, or no connection within ``connect_timeout`` s: a firewall dropping packets).

    One quick ``GET <uri>/health`` before a run instead of finding out through MLflow's retried requests.
    Any answer counts as reachable, even an HTTP error, a TLS problem or a slow reply: the real requests then
    decide, with MLflow's own handling of authentication and certificates.
    """
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=(connect_timeout, 30.0)).close()
    except (requests.exceptions.SSLError, requests.exceptions.ReadTimeout):
        return
    except (requests.exceptions.ConnectionError, requests.exceptions.ConnectTimeout) as exc:
        reason = re.findall(r"\[Errno -?\d+\][^\"')(]*", str(exc)) or ["no connection"]
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            reason = [f"no connection within {connect_timeout:g} s"]
        raise ConnectionError(f"no tracking server answers at {uri}: {reason[-1].strip()}") from None


def browse_hint(uri: str) -> str:
    """How to look at the runs of ``uri``: a server has its own UI; a local store needs ``mlflow ui``."""
    return f"open {uri} in a browser" if is_server(uri) else f"mlflow ui --backend-store-uri {uri}"


class QuietMlflowRetries(logging.Filter):
    """urllib3 logs a WARNING line for every retry of a request. For MLflow's API calls occreid reports the
    outcome itself (one warning when the server stays unreachable), so those lines become DEBUG lines here."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Retrying") and "/api/2.0/mlflow" in message:
            log.debug("%s", message)
            return False
        return True


def bound_http_retries(uri: str) -> dict[str, str]:
    """For a server URI, set MLflow's HTTP retry variables to :data:`HTTP_RETRY_DEFAULTS` where the user has
    not set them, and quieten urllib3's per-retry warnings for MLflow requests; returns what was set.
    MLflow reads the variables per request, so this bounds every later call of the process."""
    if not is_server(uri):
        return {}
    added = {k: v for k, v in HTTP_RETRY_DEFAULTS.items() if not os.environ.get(k)}
    os.environ.update(added)
    pool_log = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, QuietMlflowRetries) for f in pool_log.filters):
        pool_log.addFilter(QuietMlflowRetries())
    return added


def _file_store_path(uri: str) -> str | None:
    """The folder of MLflow's file store named by ``uri`` (``file:`` URI or a plain path), else None."""
    if uri.startswith("file:"):
        return uri[len("file://"):] if uri.startswith("file://") else uri[len("file:"):]
    if uri.startswith("databricks") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri):
        return None  # another scheme, or the bare "databricks" / "databricks-uc" MLflow accepts
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (query string dropped), or None for other stores."""
    if not uri.startswith("sqlite:"):
        return None
    if not uri.startswith("sqlite:///"):
        raise OccreidError(
            f"tracking URI {uri!r} names no database file",
            fix="use sqlite:///mlflow.db (relative to the project) or sqlite:////absolute/path/mlflow.db",
        )
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        raise OccreidError(f"tracking URI {uri!r}: an in-memory database loses every run",
                           fix="use a file, e.g. sqlite:///mlflow.db")
    return Path(path)


def normalize_uri(uri: str, root: str | Path | None = None) -> str:
    """Make a relative SQLite path absolute against the project root; other URIs are returned unchanged.

    MLflow's old file store (``./mlruns``, ``file:...``) is refused with a clear error unless
    ``$MLFLOW_ALLOW_FILE_STORE`` is true, as MLflow 3 does (then its relative folder is made absolute too).
    """
    folder = _file_store_path(uri)
    if folder is not None:
        if os.environ.get(ENV_ALLOW_FILE_STORE, "").strip().lower() not in _TRUE:
            raise OccreidError(
                f"tracking URI {uri!r} is MLflow's file store, which MLflow 3 refuses by default",
                fix="use the default sqlite:///mlflow.db or a tracking server (http://host:5000); to keep a "
                f"./mlruns folder set {ENV_ALLOW_FILE_STORE}=true",
            )
        base = Path(root) if root is not None else project_root()
        return (base / folder).resolve().as_uri()  # an absolute folder stays itself
    path = sqlite_path(uri)
    if path is None or path.is_absolute():
        return uri
    query = uri.split("?", 1)[1] if "?" in uri else ""
    absolute = (Path(root) if root is not None else project_root()) / path
    return f"sqlite:///{absolute.resolve()}" + (f"?{query}" if query else "")


def tracking_uri(params_uri: str | None = None) -> str:
    """The store to log to: ``$MLFLOW_TRACKING_URI`` wins, then params ``tracking.uri``, then
    ``sqlite:///<project root>/mlflow.db``. Relative SQLite paths are made absolute (see module doc)."""
    uri = os.environ.get(ENV_URI) or params_uri or f"sqlite:///{DB_NAME}"
    return normalize_uri(uri.strip())


def artifact_location(uri: str, experiment_name: str) -> str | None:
    """Artifact folder URI for a new experiment of a SQLite store: ``<db folder>/mlartifacts/<name>``.

    None for other stores (a tracking server chooses its own artifact store).
    """
    path = sqlite_path(uri)
    if path is None:
        return None
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment_name).strip("._") or "experiment"
    return (path.resolve().parent / ARTIFACT_DIR / safe).as_uri()


@contextlib.contextmanager
def store_lock(uri: str, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<db>.lock`` (SQLite stores only; a no-op elsewhere).

    Waits at most ``timeout`` seconds (None: for ever), then raises :class:`TimeoutError`.
    """
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a+b") as fh:
        if timeout is None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        else:
            deadline, delay = time.monotonic() + timeout, 0.01
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"{path}.lock held by another process for {timeout:g} s") from None
                    time.sleep(delay)
                    delay = min(0.5, delay * 2)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def is_locked_error(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it wraps) is SQLite's transient "database is locked", or a tracking
    server that kept answering "busy" (HTTP 429/500/502/503/504 through all of MLflow's own retries: a server
    on SQLite reports its locked database as 500). Such a write left nothing behind and may be retried."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        if any(s in text for s in _LOCKED) or _BUSY_SERVER.search(text):
            return True
        current = current.__cause__ or current.__context__
    return False


def retry_locked(
    fn: Callable[..., T],
    *args: Any,
    attempts: int = 12,
    base_delay: float = 0.05,
    max_delay: float = 5.0,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.monotonic,
    **kwargs: Any,
) -> T:
    """Call ``fn(*args, **kwargs)``, retrying "database is locked" with jittered exponential backoff.

    Jitter (a factor in [0.5, 1.5)) keeps processes that collided from colliding again in lock-step. Any
    other error, or the last locked error after ``attempts`` tries, or one whose retry would start more than
    ``timeout`` seconds after the first call, propagates. (Each call may itself wait for MLflow's 20 s SQLite
    busy timeout, so a store locked for good costs about ``max(timeout, 20 s)``.)
    """
    start = clock()
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == attempts - 1 or not is_locked_error(exc):
                raise
            delay = min(max_delay, base_delay * 2**attempt) * (0.5 + rng())
            if timeout is not None and clock() + delay - start > timeout:
                raise
            log.debug("tracking store locked (attempt %d/%d), retrying in %.2f s", attempt + 1, attempts, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def open_experiment(uri: str, experiment_name: str, timeout: float | None = None) -> tuple["MlflowClient", str]:
    """A client for ``uri`` and the id of ``experiment_name`` (created when missing).

    The store is opened and the experiment created under :func:`store_lock`, so concurrent first runs
    neither race on the schema nor create the experiment twice. A tracking server may still report that
    another client created the experiment first; then its id is read back. ``timeout`` bounds the wait for
    the lock and each locked retry.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with store_lock(uri, timeout):
        client = retry_locked(MlflowClient, tracking_uri=uri, timeout=timeout)
        experiment = retry_locked(client.get_experiment_by_name, experiment_name, timeout=timeout)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                raise OccreidError(
                    f"MLflow experiment '{experiment_name}' is deleted in {uri}",
                    fix=f"restore it (mlflow experiments restore --experiment-id {experiment.experiment_id}) "
                    "or choose another experiment name",
                )
            return client, experiment.experiment_id
        try:
            experiment_id = retry_locked(
                client.create_experiment, experiment_name,
                artifact_location=artifact_location(uri, experiment_name), timeout=timeout,
            )
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(getattr(exc, "error_code", "")):
                raise
            experiment_id = retry_locked(client.get_experiment_by_name, experiment_name,
                                         timeout=timeout).experiment_id
        log.info("created MLflow experiment '%s' in %s", experiment_name, uri)
        return client, experiment_id
