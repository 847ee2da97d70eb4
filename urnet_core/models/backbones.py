"""Backbone networks: an encoder to penultimate features plus a linear classification head.

Every model returned by :func:`build_model` is a :class:`Backbone` with

- ``encoder``: ``x (B, in_channels, H, W) -> (B, feature_dim)`` penultimate features, the
  features that cluster reweighting (section 4.2), the confidence model (4.3) and the bag
  attention branch (4.4) consume;
- ``head``: ``nn.Linear(feature_dim, num_classes)``;
- ``feature_dim``: int;
- ``forward(x) -> logits (B, num_classes)``.

Names:

- ``"small_cnn"`` (default): four conv blocks with BatchNorm and adaptive average pooling,
  128-d features. Built for 28x28 grey images on a CPU; any input of at least 1x1 works
  (8x8 digits, 16x16, 224x224).
- ``"resnet18"``, ``"resnet50"``, ``"resnext101_32x8d"`` (the paper's network): torchvision
  architectures built with ``weights=None`` and a new head. When ``in_channels != 3`` the first
  convolution is replaced by one taking ``in_channels``.

Pretrained weights are never downloaded: pass ``weights_path``, a local file holding the
``state_dict`` of the torchvision model (for example saved once with
``torch.save(torchvision.models.resnet50(weights=...).state_dict(), path)`` on a machine with
network) or of a :class:`Backbone` built here. The classification head is loaded only when its
shape matches; RGB first-conv weights are averaged over channels for grey inputs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from urnet_core.utils.validation import check_option, check_positive_int

logger = logging.getLogger(__name__)

MODEL_NAMES = ("small_cnn", "resnet18", "resnet50", "resnext101_32x8d")


class Backbone(nn.Module):
    """An encoder to ``feature_dim``-d features followed by a linear head to ``num_classes`` logits."""

    def __init__(self, encoder: nn.Module, feature_dim: int, num_classes: int, *, name: str = "custom") -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.name = name
        self.head = nn.Linear(self.feature_dim, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(features (B, D), logits (B, C))`` from one encoder pass."""
        feats = self.encoder(x)
        return feats, self.head(feats)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _small_cnn(in_channels: int) -> tuple[nn.Module, int]:
    # ceil_mode keeps a 1x1 map from collapsing to 0x0, so 8x8 inputs survive all pools.
    # Narrow early layers keep a 28x28 epoch of 10k images at ~2 s on 2 CPU cores.
    encoder = nn.Sequential(
        _conv_block(in_channels, 16),
        nn.MaxPool2d(2, ceil_mode=True),
        _conv_block(16, 32),
        nn.MaxPool2d(2, ceil_mode=True),
        _conv_block(32, 64),
        nn.MaxPool2d(2, ceil_mode=True),
        _conv_block(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return encoder, 128


def _torchvision(builder_name: str) -> Callable[[int], tuple[nn.Module, int]]:
    def build(in_channels: int) -> tuple[nn.Module, int]:
        import torchvision.models as tvm

        net = getattr(tvm, builder_name)(weights=None)
        if in_channels != 3:
            old = net.conv1
            net.conv1 = nn.Conv2d(
                in_channels,
                old.out_channels,
                kernel_size=old.kernel_size,
                stride=old.stride,
                padding=old.padding,
                bias=False,
            )
        feature_dim = net.fc.in_features
        # The torchvision model minus its fc is the encoder; keeping its module names
        # (conv1, layer1, ...) lets a torchvision state_dict load by key.
        net.fc = nn.Identity()
        return net, feature_dim

    return build


_BUILDERS: dict[str, Callable[[int], tuple[nn.Module, int]]] = {
    "small_cnn": _small_cnn,
    "resnet18": _torchvision("resnet18"),
    "resnet50": _torchvision("resnet50"),
    "resnext101_32x8d": _torchvision("resnext101_32x8d"),
}


def build_model(
    name: str = "small_cnn",
    num_classes: int = 10,
    *,
    in_channels: int = 1,
    weights_path: str | os.PathLike | None = None,
) -> Backbone:
    """Build a :class:`Backbone` by name, optionally initialised from a local weights file.

    Parameters
    ----------
    name : {'small_cnn', 'resnet18', 'resnet50', 'resnext101_32x8d'}, default='small_cnn'
        Architecture. ``resnext101_32x8d`` is the paper's network.
    num_classes : int
        Number of classes C of the new head.
    in_channels : int, default=1
        Image channels (1 for grey, 3 for RGB).
    weights_path : path, optional
        Local ``.pt``/``.pth`` file with a torchvision ``state_dict`` (keys ``conv1.weight``,
        ..., ``fc.weight``), a :class:`Backbone` ``state_dict`` (keys ``encoder.*``, ``head.*``)
        or a training checkpoint holding one under ``"model"``. Head weights are loaded only
        when their shape matches ``num_classes``. Nothing is ever downloaded.

    Returns
    -------
    Backbone
        Randomly initialised from the global torch RNG unless ``weights_path`` is given; seed
        with ``torch.random.fork_rng`` around the call for a reproducible init.

    Raises
    ------
    FileNotFoundError
        When ``weights_path`` does not exist.
    ValueError
        For an unknown ``name`` or a weights file whose tensors do not fit the architecture.
    """
    check_option(name, "name", _BUILDERS)
    check_positive_int(num_classes, "num_classes")
    check_positive_int(in_channels, "in_channels")
    encoder, feature_dim = _BUILDERS[name](in_channels)
    model = Backbone(encoder, feature_dim, num_classes, name=name)
    if weights_path is not None:
        load_weights(model, weights_path)
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (weights are read from local files only)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoint files
        raise ValueError(f"{path}: not a readable torch state_dict ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state_dict), got {type(obj).__name__}")
    return obj


def load_weights(model: Backbone, weights_path: str | os.PathLike) -> Backbone:
    """Load a local state_dict into ``model`` in place (see :func:`build_model`); return ``model``."""
    path = Path(weights_path)
    state = _read_state_dict(path)
    if any(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("encoder.") for k in state):
        enc_state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        head_state = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    else:  # a torchvision model: everything but fc.* is the encoder
        enc_state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        head_state = {k.removeprefix("fc."): v for k, v in state.items() if k.startswith("fc.")}

    own = model.encoder.state_dict()
    conv1 = "conv1.weight"
    if conv1 in enc_state and conv1 in own and enc_state[conv1].shape != own[conv1].shape:
        w = enc_state[conv1]
        if w.ndim == 4 and w.shape[1] == 3 and own[conv1].shape[1] != 3:
            # RGB filters on grey input: the channel mean keeps the response to a grey image.
            enc_state[conv1] = w.mean(dim=1, keepdim=True).repeat(1, own[conv1].shape[1], 1, 1)
    missing = sorted(set(own) - set(enc_state))
    unexpected = sorted(set(enc_state) - set(own))
    mismatched = [k for k in own if k in enc_state and enc_state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if mismatched:
            k = mismatched[0]
            detail.append(
                f"{len(mismatched)} with other shapes (e.g. {k}: {tuple(enc_state[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise ValueError(f"{path}: weights do not fit model {model.name!r}: " + "; ".join(detail))
    model.encoder.load_state_dict(enc_state)
    head_own = model.head.state_dict()
    if set(head_state) == set(head_own) and all(head_state[k].shape == head_own[k].shape for k in head_own):
        model.head.load_state_dict(head_state)
    else:
        logger.info("%s: head not loaded (shape differs from %d classes); using a new head", path, model.num_classes)
    return model
