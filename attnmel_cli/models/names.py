"""The names a checkpoint's metadata may hold for its model: the variants (``arch``) and the
classes, importable without torch (checkpoint metadata is read by ONNX scoring too)."""

ARCHS = ("attnmel", "mel-cnn", "vgg16-gap", "vgg16")
CLASSES = ("other", "melanoma")  # index 1 is the melanoma probability
# The maps each variant returns beside its logits (``forward``'s second output).
MAPS: dict[str, tuple[str, ...]] = {"attnmel": ("pool3", "pool4"), "vgg16-gap": ("cam",)}
