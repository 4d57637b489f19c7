"""Named backbone variants as data, and ``create_backbone`` which builds one.

A variant (:class:`BackboneSpec`) says which library architecture it starts from, what it overrides, its
default taps and drop-path rate, and where published weights come from. Construction is separate from the
choice of weights: ``pretrained=None`` gives a random init, a path loads a local file, a tag asks the
library's hub. Each family (``vit`` here; CLIP elsewhere) registers one builder in :data:`BUILDERS`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence, TypeVar

from torch import nn

from occreid.registry import Registry

T = TypeVar("T")


@dataclass(frozen=True)
class BackboneSpec:
    """One named backbone variant."""

    name: str
    family: str  # key in BUILDERS
    source: str  # the library's architecture name (timm model name for family "vit")
    arch: dict[str, Any] = field(default_factory=dict)  # overrides of the source architecture
    taps: tuple[int, ...] = ()  # default taps, 1-based block numbers
    drop_path: float = 0.0
    default_tag: str | None = None  # weights tag used for pretrained="default"; None: no published weights
    pretrained_size: tuple[int, int] = (224, 224)  # input size the weights were trained at (their pos-embed grid)


class LazyRegistry(Registry[T]):
    """A :class:`Registry` whose entries live in modules imported on the first miss.

    Families and methods register themselves when their module is imported; importing all of them up front
    would make every ``vit`` user pay for open_clip. A lookup (``get``, ``in``, ``names``) of a name not yet
    registered imports the modules ``modules()`` lists, once, then answers; ``module_for(name)``, when given,
    names the one module to try first (so ``vit`` imports only the vit method).
    """

    def __init__(
        self, kind: str, modules: Callable[[], Iterable[str]], module_for: Callable[[str], str] | None = None
    ):
        super().__init__(kind)
        self._modules = modules
        self._module_for = module_for
        self._loaded = False

    def _load(self, name: str) -> None:
        if name in self._entries:
            return
        if self._module_for is not None:
            module = self._module_for(name)
            if importlib.util.find_spec(module) is not None:
                importlib.import_module(module)
                if name in self._entries:
                    return
        self.load_all()

    def load_all(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # first: a module being imported may look names up itself
        try:
            for module in self._modules():
                importlib.import_module(module)
        except BaseException:
            self._loaded = False
            raise

    def get(self, name: str) -> T:
        self._load(name)
        return super().get(name)

    def names(self) -> list[str]:
        self.load_all()
        return super().names()

    def __contains__(self, name: str) -> bool:
        self._load(name)
        return super().__contains__(name)

    def __len__(self) -> int:
        self.load_all()
        return super().__len__()


#: modules of backbone families other than "vit" (each registers its builder and its variants)
FAMILY_MODULES = ("occreid.models.clip_backbone",)


def _family_modules() -> list[str]:
    return [m for m in FAMILY_MODULES if importlib.util.find_spec(m) is not None]


BACKBONES: LazyRegistry[BackboneSpec] = LazyRegistry("backbone", _family_modules)
BUILDERS: LazyRegistry[Callable[..., nn.Module]] = LazyRegistry("backbone family", _family_modules)
_SKIP_PRETRAINED = [False]  # set by skip_pretrained()


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    return BACKBONES.register(spec.name)(spec)


# A CPU-sized ViT for demos and tests: ViT-B/16's layout, shrunk (0.5 M parameters).
register_backbone(BackboneSpec(
    name="vit_tiny", family="vit", source="vit_base_patch16_224",
    arch=dict(embed_dim=96, depth=4, num_heads=4, patch_size=16), taps=(1, 2, 3, 4), drop_path=0.0,
))
# The CPU demo's model: patch 8 gives a 8x4 grid on 64x32 crops (patch 16 gives only 4x2 tokens, too coarse
# to learn part-level identity cues on synthocc from scratch).
register_backbone(BackboneSpec(
    name="vit_tiny_p8", family="vit", source="vit_base_patch16_224",
    arch=dict(embed_dim=96, depth=4, num_heads=4, patch_size=8), taps=(1, 2, 3, 4), drop_path=0.0,
))
# The CPU demo's model since the 10-minute demo: vit_tiny_p8 at width 64 (4 heads of 16). A DPM training step
# costs half of vit_tiny_p8's (the mask generator's first conv, 4 taps x D -> 2D, dominates it and scales with D^2).
register_backbone(BackboneSpec(
    name="vit_mini_p8", family="vit", source="vit_base_patch16_224",
    arch=dict(embed_dim=64, depth=4, num_heads=4, patch_size=8), taps=(1, 2, 3, 4), drop_path=0.0,
))
register_backbone(BackboneSpec(
    name="vit_small_patch16_224", family="vit", source="vit_small_patch16_224",
    taps=(2, 4, 10, 12), drop_path=0.1, default_tag="augreg_in21k_ft_in1k",
))
# TransReID / DPM: ImageNet-21k → 1k ViT-B/16, the weights of jx_vit_base_p16_224-80ecf9dd.pth.
register_backbone(BackboneSpec(
    name="vit_base_patch16_224", family="vit", source="vit_base_patch16_224",
    taps=(2, 4, 10, 12), drop_path=0.1, default_tag="orig_in21k_ft_in1k",
))


@contextlib.contextmanager
def skip_pretrained() -> Iterator[None]:
    """Within this block ``create_backbone`` ignores ``pretrained`` (random init): for rebuilding a trained
    model whose weights are loaded next, without reading (or downloading) the original pretrained file."""
    previous = _SKIP_PRETRAINED[0]
    _SKIP_PRETRAINED[0] = True
    try:
        yield
    finally:
        _SKIP_PRETRAINED[0] = previous


def create_backbone(
    name: str,
    *,
    pretrained: str | None = None,
    img_size: Sequence[int] = (256, 128),
    stride: int | None = None,
    num_cams: int = 0,
    sie_coef: float = 3.0,
    sie_mode: str = "all",
    taps: Sequence[int] | None = None,
    drop_path: float | None = None,
    return_attn: bool = False,
) -> nn.Module:
    """Build backbone ``name``; its ``forward(x, camids)`` returns a :class:`~occreid.models.base.BackboneOutput`.

    ``stride`` None = patch size (no overlap); ``num_cams`` 0 = no camera embedding; ``taps`` None = the
    variant's default taps, ``()`` = none; ``drop_path`` None = the variant's rate; ``return_attn`` fills
    ``attn_logits`` with the last block's CLS→patch logits.
    """
    spec = BACKBONES.get(name)
    if _SKIP_PRETRAINED[0]:
        pretrained = None
    return BUILDERS.get(spec.family)(
        spec,
        pretrained=pretrained,
        img_size=tuple(img_size),
        stride=stride,
        num_cams=num_cams,
        sie_coef=sie_coef,
        sie_mode=sie_mode,
        taps=taps,
        drop_path=drop_path,
        return_attn=return_attn,
    )


@dataclass
class BackboneConfig:
    """Params of a method's backbone (``method.<name>.backbone``); ``build`` calls :func:`create_backbone`."""

    name: str = "vit_tiny"
    pretrained: str | None = None  # None: random init; a file path; "default" or a hub tag
    img_size: list[int] = field(default_factory=lambda: [256, 128])  # [H, W], must equal the transforms' size
    stride: int | None = None  # patch stride; None = patch size (no overlap). DPM: 11 or 12
    sie: bool = True  # camera embedding (SIE) over the training cameras
    sie_coef: float = 3.0  # TransReID/DPM 3.0, CLIP-ReID 1.0
    sie_mode: Literal["all", "cls"] = "all"  # add to every token (TransReID/DPM) or the CLS token (CLIP-ReID)
    drop_path: float | None = None  # None = the variant's rate
    taps: list[int] | None = None  # None = the variant's taps

    def build(self, num_cams: int, *, return_attn: bool = False) -> nn.Module:
        return create_backbone(
            self.name,
            pretrained=self.pretrained,
            img_size=self.img_size,
            stride=self.stride,
            num_cams=num_cams if self.sie else 0,
            sie_coef=self.sie_coef,
            sie_mode=self.sie_mode,
            taps=self.taps,
            drop_path=self.drop_path,
            return_attn=return_attn,
        )


def _register_vit() -> None:
    from occreid.models.vit import build_vit

    BUILDERS.register("vit")(build_vit)


_register_vit()


def backbone_for(default: BackboneConfig | None, per_dataset: dict[str, BackboneConfig], dataset: str,
                 section: str) -> BackboneConfig:
    """The backbone a per-dataset stage (prompts, saliency) runs for ``dataset``: its entry in
    ``<section>.dataset_backbones``, else ``<section>.backbone``.

    Why per dataset: those outputs are shared by every experiment training on the dataset and must be made
    with the same image encoder as theirs, and the CPU demo (clip_tiny on synthocc) lives in the same
    params.yaml as the papers' settings (ViT-B/16 on the real datasets)."""
    from occreid.errors import OccreidError

    chosen = per_dataset.get(dataset, default)
    if chosen is None:
        raise OccreidError(f"'{section}' names no backbone for dataset '{dataset}'",
                           fix=f"set {section}.backbone, or {section}.dataset_backbones.{dataset}, to the CLIP "
                               "backbone of the experiments training on it")
    return chosen
