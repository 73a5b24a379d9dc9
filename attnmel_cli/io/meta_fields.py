"""The fields of a checkpoint's header metadata (an attnmel ``.safetensors`` file or the
metadata properties of an exported ``.onnx`` model), parsed one by one and bounded: a file is
untrusted, so every field is checked for its type and range and a refusal names the field.

Sizes are whole numbers in (0, :data:`MAX_SIZE`]; mean and std finite, std positive; classes a
list of distinct printable names (:func:`attnmel_cli.io.safe_text.name_problem`).
"""

from __future__ import annotations

import json
import math
from typing import Any

from attnmel_cli.config import CROP_FRACTION, INTERPOLATION, PREPARED_SIZE
from attnmel_cli.data.id_set import decode_ids
from attnmel_cli.io.safe_text import printable
from attnmel_cli.models.names import name_problem

MAX_SIZE = 2048  # pixels: image_size, resize, prepared_size
MAX_CLASSES = 1000
MAX_STRIDE = 1024
MAX_ID_SET_CHARS = 60_000_000  # train_image_ids: 10⁷ ids at 5.4 characters each, with room


class FieldError(ValueError):
    """One metadata field is missing or wrong; the message starts with the field's name."""


def _shown(value: object) -> str:
    text = printable(repr(value))
    return text if len(text) <= 60 else text[:57] + "…"


def _json(header: dict[str, str], key: str, default: str | None = None) -> Any:
    if key not in header and default is None:
        raise FieldError(f"{key}: missing")
    text = header.get(key, default)
    try:
        return json.loads(text) if isinstance(text, str) else text
    except ValueError:
        raise FieldError(f"{key}: {_shown(text)} is not valid JSON") from None


def integer(field: str, value: object, *, low: int = 1, high: int = MAX_SIZE) -> int:
    """A whole number in [low, high] (a JSON number or its text), else a FieldError."""
    number: object = value
    if isinstance(value, str):
        try:
            number = json.loads(value)
        except ValueError:
            number = None
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int):
        raise FieldError(f"{field}: {_shown(value)} is not a whole number")
    if not low <= number <= high:
        raise FieldError(f"{field}: {number} outside [{low}, {high}]")
    return number


def real(field: str, value: object) -> float:
    """A finite number (a JSON number or its text), else a FieldError."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise FieldError(f"{field}: {_shown(value)} is not a finite number")
    return number


def _triple(header: dict[str, str], key: str, *, positive: bool) -> tuple[float, ...]:
    values = _json(header, key)
    if not isinstance(values, list) or len(values) != 3:
        raise FieldError(f"{key}: {_shown(values)}: not a list of 3 numbers (wrong length)")
    numbers = tuple(real(key, v) for v in values)
    if positive and min(numbers) <= 0:
        raise FieldError(f"{key}: {list(numbers)} has a value ≤ 0 (inputs are divided by it)")
    return numbers


def classes(value: object) -> tuple[str, ...]:
    """The ``classes`` field: a list of distinct, printable, bounded names."""
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_CLASSES:
        raise FieldError(f"classes: {_shown(value)} is not a list of 2–{MAX_CLASSES} names")
    for name in value:
        problem = name_problem(name)
        if problem:
            raise FieldError(f"classes: {problem}")
    return tuple(value)


def _mapping(header: dict[str, str], key: str) -> dict[str, Any]:
    value = _json(header, key, "{}")
    if not isinstance(value, dict):
        raise FieldError(f"{key}: {_shown(value)} is not a JSON object")
    return value


def _sources(header: dict[str, str]) -> list[dict[str, Any]]:
    """The ``sources`` of a run on several prepared dirs: a list of objects (absent: [])."""
    value = _json(header, "sources", "[]")
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise FieldError(f"sources: {_shown(value)} is not a list of JSON objects")
    return value


def _id_set(header: dict[str, str]) -> str:
    """``train_image_ids`` (:mod:`attnmel_cli.data.id_set`; absent: ""), at most 10⁷ ids."""
    value = header.get("train_image_ids", "")
    if not value:
        return ""
    if not isinstance(value, str) or len(value) > MAX_ID_SET_CHARS:
        raise FieldError(f"train_image_ids: not a text of at most {MAX_ID_SET_CHARS} characters")
    try:
        decode_ids(value)
    except ValueError as exc:
        raise FieldError(f"train_image_ids: {exc}") from None
    return value


def _get(header: dict[str, str], key: str) -> str:
    if key not in header:
        raise FieldError(f"{key}: missing")
    return header[key]


def _text(header: dict[str, str], key: str, default: str | None = None) -> str:
    if key not in header and default is None:
        raise FieldError(f"{key}: missing")
    value = header.get(key, default)
    if not isinstance(value, str) or len(value) > 200 or not value.isprintable():
        raise FieldError(f"{key}: {_shown(value)} is not a short printable text")
    return value


def preprocessing(header: dict[str, str]) -> dict[str, Any]:
    """The ``preprocessing`` header as CheckpointMeta fields (absent: the paper's defaults), with
    its own ``image_size`` under that key (None where it has none)."""
    if "preprocessing" not in header:
        return {"image_size": None}
    pre = _mapping(header, "preprocessing")
    crop = real("preprocessing crop_fraction", pre.get("crop_fraction", CROP_FRACTION))
    if not 0 < crop <= 1:
        raise FieldError(f"preprocessing crop_fraction: {crop} outside (0, 1]")
    size = pre.get("image_size")
    return {
        "resize": integer("preprocessing resize", pre.get("resize", 0), low=0),
        "crop_fraction": crop,
        "prepared_size": integer("preprocessing prepared_size",
                                 pre.get("prepared_size", PREPARED_SIZE)),
        "interpolation": str(pre.get("interpolation", INTERPOLATION))[:40],
        "image_size": None if size is None else integer("preprocessing image_size", size),
    }


def parse_header(header: dict[str, str]) -> dict[str, Any]:
    """CheckpointMeta's fields from header metadata, each checked; raises :class:`FieldError`
    naming the first wrong field (the ``preprocessing`` image_size is returned under
    ``"preprocessing_image_size"``)."""
    strides = _json(header, "strides", "[8, 16, 32]")
    if not isinstance(strides, list):
        raise FieldError(f"strides: {_shown(strides)} is not a list")
    pre = preprocessing(header)
    return {
        "arch": _text(header, "arch"),
        "backbone": _text(header, "backbone"),
        "width": real("width", _get(header, "width")),
        "image_size": integer("image_size", _get(header, "image_size")),
        "classes": classes(_json(header, "classes")),
        "mean": _triple(header, "mean", positive=False),
        "std": _triple(header, "std", positive=True),
        "train_config": _mapping(header, "train_config"),
        "metrics": _mapping(header, "metrics"),
        "data_fingerprint": _text(header, "data_fingerprint", ""),
        "attnmel_version": _text(header, "attnmel_version", "unknown"),
        "strides": tuple(integer("strides", s, high=MAX_STRIDE) for s in strides),
        "sources": _sources(header),
        "train_image_ids": _id_set(header),
        "preprocessing_image_size": pre.pop("image_size"),
        **pre,
    }
