"""What every study notebook does first: read its parameters into the one config, load the data.

A notebook's ``parameters`` cell holds one variable per config section (``config``, ``data``,
``training``, ``urnet``, ``run``); :func:`setup` turns ``globals()`` into a
:class:`~urnet_core.config.StudyConfig` (relative paths resolve against the repository, so the
notebook runs the same from JupyterLab started in ``notebooks/``, from papermill and from
``urnet study``), quiets the logs and progress bars that would otherwise spill into the
rendered report, and loads the dataset once per kernel.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Mapping

from urnet_core.config import StudyConfig

# Before tqdm.auto is imported by the study modules: text bars are disabled anyway.
warnings.filterwarnings("ignore", message="IProgress not found")
os.environ["TQDM_DISABLE"] = "1"


def setup(namespace: Mapping[str, Any]):
    """``(study, bundle)`` for a notebook whose ``globals()`` is ``namespace``."""
    import pandas as pd

    from urnet_core.study.pipeline import load_bundle

    # Rendered reports keep stderr: library INFO logs would fill them.
    logging.basicConfig(level=logging.WARNING, force=True)
    pd.set_option("display.precision", 3)
    pd.set_option("display.max_columns", 30)
    study = StudyConfig.from_notebook(namespace)
    return study, load_bundle(study)
