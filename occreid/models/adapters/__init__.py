"""Checkpoint adapters: pure functions that rename the state dicts released with the papers to our names.

One module per source: :mod:`~occreid.models.adapters.dpm` (stone96123/DPM) and
:mod:`~occreid.models.adapters.clipreid` (Syliz517/CLIP-ReID). Nothing is imported here, so one adapter's
dependencies never load with another's; import the module you need.
"""
