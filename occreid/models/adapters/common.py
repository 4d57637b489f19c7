"""What every checkpoint adapter shares: short name listings for error messages, reshaping across singleton
axes, and the strict check that an adapted state dict loads into the model it is meant for."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from occreid.errors import OccreidError

_SHOWN = 12  # names listed in an error message


def listing(names: Sequence[str]) -> str:
    """Sorted names, at most ``_SHOWN`` of them, with a count of the rest."""
    names = sorted(names)
    more = f" (+{len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def fit_shape(value: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    """``value`` in ``shape`` when they differ at most by singleton axes (e.g. SIE [8,1,D] vs [8,D])."""
    if tuple(value.shape) == shape:
        return value
    squeeze = lambda s: tuple(d for d in s if d != 1)  # noqa: E731
    if squeeze(value.shape) == squeeze(shape):
        return value.reshape(shape)
    return None


def check_fits(out: dict[str, torch.Tensor], expected: Mapping[str, Sequence[int]], *, what: str, fix: str,
               optional: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """``out`` reshaped to ``expected`` (our model's names → shapes), or one :class:`OccreidError` listing every
    name missing from the checkpoint (``optional`` ones excepted), every name the model lacks and every shape
    that does not fit — so a ``strict=True`` load of the result cannot fail."""
    problems = []
    missing = [k for k in expected if k not in out and k not in optional]
    extra = [k for k in out if k not in expected]
    if missing:
        problems.append(f"missing in the checkpoint: {listing(missing)}")
    if extra:
        problems.append(f"not in the model: {listing(extra)}")
    wrong = []
    for k, shape in expected.items():
        if k in out:
            fitted = fit_shape(out[k], tuple(shape))
            if fitted is None:
                wrong.append(f"{k} {tuple(out[k].shape)} vs {tuple(shape)}")
            else:
                out[k] = fitted
    if wrong:
        problems.append(f"shape mismatch (checkpoint vs model): {listing(wrong)}")
    if problems:
        raise OccreidError(f"{what} checkpoint does not fit this model: " + "; ".join(problems), fix=fix)
    return out
