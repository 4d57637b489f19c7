"""One entry point for released checkpoints: which adapter loads a method's published weights, and a sha256 check.

Why: ``weights: <file>`` on an experiment makes the train stage import a released model instead of training
(the evaluate stage then scores it like any other run). The adapters themselves are the pure renames of
``dpm.py`` / ``clipreid.py``; this module only picks one by method name and pins the file's content, since DVC
tracks the path in params.yaml but not the bytes of a file outside the DAG: with ``weights_sha256`` set, a
changed file is an error instead of a silently different number.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from occreid.errors import OccreidError
from occreid.models.adapters.clipreid import load_clipreid_checkpoint
from occreid.models.adapters.dpeformer import load_dpeformer_checkpoint
from occreid.models.adapters.dpm import load_dpm_checkpoint

LOADERS = {"dpm": load_dpm_checkpoint, "clipreid": load_clipreid_checkpoint, "dpeformer": load_dpeformer_checkpoint}


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_released(method, method_name: str, path: str | Path, sha256: str | None = None) -> str:
    """Load the released checkpoint ``path`` into the built ``method`` (strict, through its adapter); returns the
    file's sha256, checked against ``sha256`` when given."""
    path = Path(path)
    if method_name not in LOADERS:
        raise OccreidError(f"method '{method_name}' has no adapter for released checkpoints", path=path,
                           fix=f"weights: works for {sorted(LOADERS)}; train this method instead")
    if not path.is_file():
        raise OccreidError("released checkpoint not found", path=path, fix="download it or correct 'weights:'")
    digest = sha256_of(path)
    if sha256 and digest != sha256.lower():
        raise OccreidError(f"checkpoint sha256 is {digest}, params say {sha256}", path=path,
                           fix="use the file the hash names, or update weights_sha256")
    LOADERS[method_name](method, path)
    return digest
