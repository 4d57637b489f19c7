"""Re-ID methods: a registry of :class:`~occreid.methods.base.ReIDMethod` classes and ``create_method``.

Every module of this package registers its method in :data:`METHODS` when imported; the registry imports
them all on the first lookup of a name it does not hold yet (so ``vit`` users never import open_clip).
"""

from __future__ import annotations

from typing import Any

from occreid.errors import OccreidError
from occreid.methods.base import METHODS, ReIDMethod
from occreid.models.factory import skip_pretrained


def method_config(name: str, cfg: Any = None) -> Any:
    """The config dataclass of method ``name`` from an instance, a mapping (validated) or None (defaults)."""
    cls = METHODS.get(name).config_cls
    if cfg is None:
        return cls()
    if isinstance(cfg, cls):
        return cfg
    if isinstance(cfg, dict):
        from occreid.config import from_dict  # the one dict → dataclass converter (validates keys and types)

        return from_dict(cls, cfg, key=f"method.{name}", source="<config>")
    raise OccreidError(f"config of method '{name}' must be a {cls.__name__} or a mapping, got {type(cfg).__name__}")


def create_method(
    name: str, cfg: Any, num_classes: int, num_cams: int, *, load_pretrained: bool = True
) -> ReIDMethod:
    """Build method ``name`` for ``num_classes`` training identities and ``num_cams`` cameras.

    ``load_pretrained=False`` builds every backbone with random weights, whatever the config says (used
    when a trained state dict is loaded right after, e.g. by :func:`occreid.engine.checkpoint.load_model`).
    """
    cls = METHODS.get(name)
    cfg = method_config(name, cfg)
    if load_pretrained:
        return cls(cfg, num_classes, num_cams)
    with skip_pretrained():
        return cls(cfg, num_classes, num_cams)


__all__ = ["METHODS", "ReIDMethod", "create_method", "method_config"]
