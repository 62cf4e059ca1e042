"""Torch image encoders and pixel augmentation (stand-alone: torch, torchvision, einops).

Public API: `ImageStateEncoder`, `ConvTrunk`, `random_shift`, `RandomShift`.
The ResNet-18 trunk lives in `encoders.resnet` (imports torchvision on first use).
"""
from encoders.augment import RandomShift, random_shift
from encoders.conv import PTR_CHANNELS, ConvTrunk
from encoders.image_state import KINDS, ImageStateEncoder

__all__ = ["KINDS", "PTR_CHANNELS", "ConvTrunk", "ImageStateEncoder", "RandomShift", "random_shift"]
