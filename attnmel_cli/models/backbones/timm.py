"""Backbones built with timm (``features_only=True``): three feature maps for the attention layout.

The AttnMel layout (Yan et al. 2019, Fig. 1) needs two intermediate maps that carry attention gates
(VGG's pool-3 and pool-4, stride 8 and 16) and a last map whose global feature guides them (pool-5,
stride 32). :class:`TimmBackbone` returns the three maps of any timm model with ``features_only``
support at the requested strides. timm is imported lazily: importing it takes about a second and
the CLI's start-up time matters.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from attnmel_cli.errors import AttnMelError
from attnmel_cli.models.backbones.specs import DEFAULT_STRIDES, TIMM_ALIASES, TIMM_PREFIX

if TYPE_CHECKING:
    from timm.models._features import FeatureInfo

DATA_CONFIG_KEYS = ("mean", "std", "input_size", "interpolation", "crop_pct")


def resolve_timm_name(backbone: str) -> str:
    """The timm model name of an attnmel backbone name.

    ``efficientnet_liteN`` → ``tf_efficientnet_liteN`` (N = 0, 1, 2; the TF-ported variants with
    'same' padding and BN eps 1e-3, which match Google's checkpoints); ``timm:MODEL`` → ``MODEL``
    (a pretrained tag such as ``resnet18.a1_in1k`` is kept; it selects the data config).
    Anything else, or an unknown timm model, is an :class:`AttnMelError` listing the choices.
    """
    if backbone in TIMM_ALIASES:
        return TIMM_ALIASES[backbone]
    choices = ", ".join([*TIMM_ALIASES, f"{TIMM_PREFIX}MODEL"])
    if not backbone.startswith(TIMM_PREFIX):
        raise AttnMelError(
            f"unknown backbone {backbone!r}: choose one of {choices} "
            "(MODEL: any timm model with features_only support)"
        )
    name = backbone[len(TIMM_PREFIX) :].strip()
    if not name:
        raise AttnMelError(f"backbone {backbone!r} names no timm model: write {TIMM_PREFIX}MODEL")
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise AttnMelError(f"unknown timm model {name!r} in backbone {backbone!r}{hint}")
    return name


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _weightless(model_name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(model_name, pretrained=False, **kwargs)`` built on the 'meta' device
    (no memory, no initialisation); on the CPU when a model cannot be built on 'meta'."""
    import timm

    if not timm.is_model(model_name):
        raise AttnMelError(f"unknown timm model {model_name!r}")
    try:
        with torch.device("meta"):
            return timm.create_model(model_name, pretrained=False, **kwargs)
    except Exception:
        return timm.create_model(model_name, pretrained=False, **kwargs)


def _feature_info(model_name: str) -> FeatureInfo:
    """timm's feature info of ``model_name`` (every stage, whatever the default out_indices)."""
    try:
        probe = _weightless(model_name, features_only=True)
    except AttnMelError:
        raise
    except Exception as e:  # timm raises RuntimeError/AssertionError/… for unsupported models
        raise AttnMelError(
            f"timm model {model_name!r} cannot be used as a backbone: no features_only support "
            f"({_first_line(e)})"
        ) from e
    return probe.feature_info


def stage_indices(model_name: str, strides: tuple[int, ...]) -> tuple[int, int, int]:
    """timm ``out_indices`` giving feature maps at ``strides`` (the deepest stage at each stride).

    An :class:`AttnMelError` names the model and the strides it has when one is missing.
    """
    if len(strides) != 3 or any(s < 1 for s in strides) or list(strides) != sorted(set(strides)):
        raise AttnMelError(f"backbone strides must be three increasing numbers, not {strides}")
    info = _feature_info(model_name)
    reductions = info.reduction(list(range(len(info))))
    missing = [s for s in strides if s not in reductions]
    if missing:
        raise AttnMelError(
            f"timm model {model_name!r} has no stage at stride {missing[0]} (its feature strides: "
            f"{sorted(set(reductions))}); choose strides among these"
        )
    last = {r: i for i, r in enumerate(reductions)}  # the last stage wins for repeated strides
    return (last[strides[0]], last[strides[1]], last[strides[2]])


class TimmBackbone(nn.Module):
    """A timm model with features_only=True returning the stride-8, -16 and -32 feature maps.

    ``strides`` picks the three maps: the first two carry the attention gates, the last one gives
    the global feature that guides them (default (8, 16, 32): VGG's pool-3, pool-4 and pool-5).
    Weights start as timm's random initialisation (``pretrained=False``; nothing is downloaded);
    :func:`attnmel_cli.io.lite_weights.load_into_backbone` loads ImageNet
    weights. The wrapped timm module is ``self.body``, so state-dict keys read ``body.<timm key>``.
    """

    channels: tuple[int, int, int]
    strides: tuple[int, int, int]
    model_name: str

    def __init__(self, model_name: str, *, strides: tuple[int, int, int] = DEFAULT_STRIDES) -> None:
        super().__init__()
        import timm

        wanted = tuple(int(s) for s in strides)
        out_indices = stage_indices(model_name, wanted)  # checks: three increasing strides
        try:
            self.body = timm.create_model(
                model_name, pretrained=False, features_only=True, out_indices=out_indices
            )
        except Exception as e:
            raise AttnMelError(
                f"timm model {model_name!r} cannot be built with features_only and out_indices "
                f"{out_indices} ({_first_line(e)})"
            ) from e
        got = tuple(self.body.feature_info.reduction())
        if got != wanted:  # a timm change would otherwise shift the gates silently
            raise AttnMelError(f"timm model {model_name!r} gave strides {got}, not {wanted}")
        c1, c2, c3 = self.body.feature_info.channels()
        self.channels = (int(c1), int(c2), int(c3))
        self.strides = (wanted[0], wanted[1], wanted[2])
        self.model_name = model_name

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (N, 3, S, S), S divisible by the last stride → [(N, C1, S/s1, S/s1), (N, C2, …), …].

        With the default strides: [(N, C1, S/8, S/8), (N, C2, S/16, S/16), (N, C3, S/32, S/32)].
        """
        return list(self.body(x))

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, strides={self.strides}, channels={self.channels}"


def _plain(value: Any) -> Any:
    """tuples/NumPy scalars → lists/int/float/str, so the config survives JSON unchanged."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def data_config(model_name: str) -> dict[str, Any]:
    """timm's ``resolve_model_data_config`` of the full (non-features) model, as plain types.

    Returns ``{"mean": [r, g, b], "std": [r, g, b], "input_size": [3, H, W],
    "interpolation": str, "crop_pct": float}``; mean/std apply to pixels scaled to [0, 1]
    (for tf_efficientnet_lite*: mean = std = 0.5, i.e. (pixel − 127.5) / 127.5).
    """
    import timm

    try:
        model = _weightless(model_name)  # only its pretrained config is read
    except AttnMelError:
        raise
    except Exception as e:
        raise AttnMelError(f"timm model {model_name!r} cannot be built ({_first_line(e)})") from e
    cfg = timm.data.resolve_model_data_config(model)
    return {k: _plain(cfg[k]) for k in DATA_CONFIG_KEYS}
