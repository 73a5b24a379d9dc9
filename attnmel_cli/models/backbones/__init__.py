"""Backbones the AttnMel heads sit on: VGG-16 / VGG-16-BN (the paper) and timm models."""
