"""The study's inputs, checked in the calling process before any notebook kernel starts.

Every notebook loads the data in its setup cell; a bad manifest (unknown key, bad reader
option, missing root, a label ``cat`` in a file list) would otherwise surface ~20 s later as a
failed cell of notebook 00. :func:`check_study_inputs` runs the same loading here, so the
error is one line naming the file, the line and the key, and nothing has started yet. The
loaded bundle is memoised (:func:`urnet_core.study.pipeline.load_bundle`), so the runner reuses it.

The trained models a notebook reads back are inputs too: :func:`bag_branch_from_checkpoint`
(notebook 06) rebuilds the bag attention branch from a training checkpoint.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from urnet_core.config import StudyConfig

logger = logging.getLogger(__name__)


def check_study_inputs(study: StudyConfig):
    """Check the files the config names and load the data once; return the bundle.

    Raises
    ------
    FileNotFoundError
        The manifest, its dataset root, ``data.text_model_path`` or ``data.init_weights`` is missing.
    ValueError
        The manifest or the data it points at is malformed (the message names file, line, key).
    """
    from urnet_core.data.coverage import class_coverage
    from urnet_core.study.pipeline import load_bundle

    for key in ("text_model_path", "init_weights"):
        path = getattr(study.data, key)
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"data.{key}: {path} does not exist")
    data_logger = logging.getLogger("urnet_core.data")
    level = data_logger.level
    if not logger.isEnabledFor(logging.DEBUG):
        data_logger.setLevel(logging.WARNING)  # notebook 00 describes the data; here only problems
    try:
        bundle = load_bundle(study)
    finally:
        data_logger.setLevel(level)
    for message in class_coverage(bundle).messages():
        logger.warning("data %s: %s", bundle.name, message)
    return bundle


def bag_branch_from_checkpoint(path: str | os.PathLike) -> Any:
    """The trained :class:`~urnet_core.models.bag.BagAttentionBranch` stored in a training checkpoint.

    Raises ``ValueError`` when the checkpoint was trained without the bag branch.
    """
    from urnet_core.models.bag import BagAttentionBranch
    from urnet_core.training.checkpoint import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = load_checkpoint(path).get("bag_branch")  # the one loader: checks the format
    if not state:
        raise ValueError(f"{path}: the checkpoint holds no bag branch (trained without bag_branch=True)")
    feature_dim = state["fc2.weight"].shape[1]
    hidden = state["fc2.weight"].shape[0]
    num_classes = state["fc4.weight"].shape[0]
    branch = BagAttentionBranch(feature_dim, num_classes, hidden=hidden)
    branch.load_state_dict(state)
    return branch.eval()
