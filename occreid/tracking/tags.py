"""What a run records about itself: flattened params, a params hash and the code version.

Why: MLflow params are a flat string→string table, while our configs are nested dataclasses. Flattening
with dotted keys keeps them searchable (``params.optim.lr = '0.0003'``); the sha256 of the resolved config
(``params_hash``) finds every run made with identical settings however the YAML was ordered; the git commit
and a dirty flag say which code produced a number, and whether that code can be checked out again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TAG_GIT_COMMIT = "git_commit"
TAG_GIT_DIRTY = "git_dirty"
TAG_PARAMS_HASH = "params_hash"
TAG_STAGE = "stage"
TAG_EXPERIMENT = "experiment"
TAG_DATASET = "dataset"
TAG_METHOD = "method"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"  # shown by the MLflow UI
UNKNOWN = "unknown"
SEP = "."


def to_plain(obj: Any) -> Any:
    """Dataclasses → dicts, tuples → lists, paths → str: the JSON view of a resolved config."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def flatten(config: Any, sep: str = SEP) -> dict[str, Any]:
    """Nested mappings (or dataclasses) → one level with ``sep``-joined keys; leaves are kept as they are.

    An empty mapping is kept as a leaf ``{}`` so that :func:`unflatten` restores it. Keys that themselves
    contain ``sep`` cannot be told apart after flattening.
    """
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(f"{prefix}{sep}{k}" if prefix else str(k), v)
        else:
            out[prefix] = value

    plain = to_plain(config)
    if not isinstance(plain, Mapping):
        raise TypeError(f"flatten expects a mapping or a dataclass, got {type(config).__name__}")
    for key, value in plain.items():
        walk(str(key), value)
    return out


def unflatten(flat: Mapping[str, Any], sep: str = SEP) -> dict[str, Any]:
    """Inverse of :func:`flatten`."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(sep)
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def stringify(value: Any) -> str:
    """A param value as MLflow stores it: strings as is, lists/dicts as sorted JSON, other scalars ``str``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, Mapping)):
        return json.dumps(to_plain(value), sort_keys=True, default=str)
    return str(value)


def truncate(value: str, limit: int) -> str:
    """Cut ``value`` to ``limit`` characters, ending with a hash of the full text so distinct values stay
    distinct (MLflow refuses or silently cuts longer param values, depending on the version)."""
    if len(value) <= limit:
        return value
    suffix = f"...[sha256:{hashlib.sha256(value.encode()).hexdigest()[:12]}]"
    return value[: max(0, limit - len(suffix))] + suffix


def params_hash(config: Any) -> str:
    """sha256 of the config as canonical JSON (sorted keys, no spaces): equal for equal settings."""
    text = json.dumps(to_plain(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(repo: str | Path) -> tuple[str, str]:
    """``(commit sha, "true"/"false")`` of the checkout at ``repo``; ``("unknown", "unknown")`` outside git
    or before the first commit. Dirty means tracked files differ from the commit (untracked files, e.g.
    ignored DVC outputs, do not count)."""
    repo = Path(repo)
    commit = _git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if not commit:
        return UNKNOWN, UNKNOWN
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    dirty = UNKNOWN if status is None else ("true" if status else "false")
    return commit, dirty


def standard_tags(
    *,
    repo: str | Path,
    config: Any = None,
    stage: str | None = None,
    experiment: str | None = None,
    dataset: str | None = None,
    method: str | None = None,
) -> dict[str, str]:
    """The tags every occreid run carries: git commit and dirty flag, params hash (when a config is
    given), stage, experiment, dataset, method (those given)."""
    commit, dirty = git_state(repo)
    tags = {TAG_GIT_COMMIT: commit, TAG_GIT_DIRTY: dirty}
    if commit != UNKNOWN:
        tags[MLFLOW_GIT_COMMIT] = commit
    if config is not None:
        tags[TAG_PARAMS_HASH] = params_hash(config)
    for key, value in ((TAG_STAGE, stage), (TAG_EXPERIMENT, experiment), (TAG_DATASET, dataset),
                       (TAG_METHOD, method)):
        if value is not None:
            tags[key] = str(value)
    return tags
