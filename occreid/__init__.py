"""occreid: occluded person re-identification — DPM++, DPM, CLIP-ReID and ViT baselines as one pipeline.

The library knows nothing of params.yaml, DVC or Snakemake: plain functions and classes with typed
arguments. The `stages/` package reads params and calls it.
"""

__version__ = "0.1.0"
