"""Realistic occlusion augmentation (DPEFormer's ROA): an object library cut from photographs, and the paste.

The ``occluders`` stage builds the library of a training dataset once (:func:`build_library`: photographs → SAM or
classical masks → filtered RGBA crops → ``data/occluders/<dataset>/`` with ``manifest.json`` and
``contact_sheet.png``); a method loads it (:meth:`OccluderLibrary.load`) and augments training images with
:class:`OccluderPaste` (:class:`PasteConfig`: the paper's position/scale rules, the reference code's variant, and
the Cut&Paste baseline).
"""

from occreid.occluders.backends import MASK_BACKENDS, Candidate, create_mask_backend
from occreid.occluders.build import build_library
from occreid.occluders.config import ClassicalConfig, FilterConfig, OccludersConfig, SamConfig
from occreid.occluders.library import OccluderLibrary, library_writer, write_library
from occreid.occluders.paste import OccluderPaste, PasteConfig, Placement, composite

__all__ = [
    "MASK_BACKENDS", "Candidate", "create_mask_backend", "build_library", "ClassicalConfig", "FilterConfig",
    "OccludersConfig", "SamConfig", "OccluderLibrary", "library_writer", "write_library", "OccluderPaste",
    "PasteConfig", "Placement", "composite",
]
