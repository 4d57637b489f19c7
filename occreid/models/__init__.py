"""Backbones (timm ViT, open_clip CLIP ViT) with overlapping patch stride, camera embedding and block taps."""
