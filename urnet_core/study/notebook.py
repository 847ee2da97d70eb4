"""What every study notebook does first: read its parameters into the one config, load the data.

A notebook's ``parameters`` cell holds one variable per config section (``config``, ``data``,
``training``, ``urnet``, ``run``); :func:`setup` turns ``globals()`` into a
:class:`~urnet_core.config.StudyConfig` (relative paths resolve against the repository, so the
notebook runs the same from JupyterLab started in ``notebooks/``, from papermill and from
``urnet study``), quiets the logs, warnings and progress bars that would otherwise spill into
the rendered report as stderr blocks, gives every matplotlib figure alt text (its title) for the
HTML report, and loads the dataset once per kernel.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Mapping

# Before anything imports tqdm: tqdm reads TQDM_* variables when it is imported (its envwrap
# decorator), and tqdm.auto warns at import that ipywidgets is missing. urnet_core.config
# already imports the training modules, which import tqdm.
warnings.filterwarnings("ignore", message="IProgress not found")
os.environ["TQDM_DISABLE"] = "1"

from urnet_core.config import StudyConfig  # noqa: E402
from urnet_core.study.errors import StudyInputError  # noqa: E402


def setup(namespace: Mapping[str, Any]):
    """``(study, bundle)`` for a notebook whose ``globals()`` is ``namespace``.

    Raises
    ------
    StudyInputError
        A bad parameter or bad data; Jupyter shows its one-line message, not a traceback.
    """
    import pandas as pd

    from urnet_core.study.pipeline import load_bundle

    # Rendered reports keep stderr: library INFO logs and warnings would fill them. Warnings
    # the study knows about are silenced; anything logged at WARNING or above still shows.
    logging.basicConfig(level=logging.WARNING, force=True)
    for name in ("faiss", "faiss.loader", "matplotlib", "PIL", "fasttext"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*(tight_layout|Tight layout).*")
    warnings.filterwarnings("ignore", message=".*[Ll]ow-rank.*|.*[Nn]umber of distinct clusters.*")
    pd.set_option("display.precision", 3)
    pd.set_option("display.max_columns", 30)
    pd.set_option("display.width", 160)
    _register_figure_alt_text()
    try:
        study = StudyConfig.from_notebook(namespace)
        return study, load_bundle(study)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        # Bad parameters or data: the message names the key or the file and line; the frames
        # through config.py and the readers would only bury it (and `from None` drops the chain).
        raise StudyInputError(str(exc)) from None


def figure_alt_text(fig: Any) -> str:
    """A figure's alt text: its suptitle and the titles and axis labels of its plots."""
    parts = []
    suptitle = getattr(fig, "_suptitle", None)
    if suptitle is not None and suptitle.get_text():
        parts.append(suptitle.get_text())
    titles = []
    for ax in fig.axes:
        if ax.images and not ax.get_xlabel():  # image grids: the suptitle says it; skip per-image titles
            continue
        title = ax.get_title()
        desc = title or ""
        if ax.get_xlabel() or ax.get_ylabel():
            desc += f" ({ax.get_ylabel()} against {ax.get_xlabel()})" if ax.get_xlabel() else f" ({ax.get_ylabel()})"
        if desc.strip():
            titles.append(desc.strip())
    parts.extend(dict.fromkeys(titles))
    n_images = sum(len(ax.images) for ax in fig.axes)
    if n_images > 1:
        parts.append(f"{n_images} images")
    return "Figure: " + "; ".join(parts) if parts else "Figure"


def _register_figure_alt_text() -> None:
    """Display matplotlib figures as PNG with their alt text in the output's metadata."""
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import print_figure
        from matplotlib.figure import Figure
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return

    def png_with_alt(fig):
        data = print_figure(fig, "png", bbox_inches="tight", base64=True)
        return data, {"alt": figure_alt_text(fig)}

    ip.display_formatter.formatters["image/png"].for_type(Figure, png_with_alt)


def config_table(study: StudyConfig):
    """The study's configuration, one row per section (``key=value, ...``), with paths relative
    to the repository, for the top of a notebook (a rendered report never shows the machine's
    paths)."""
    import pandas as pd

    from urnet_core.study.report import relative_to_repo

    rows = [(section, ", ".join(f"{k}={v}" for k, v in values.items()))
            for section, values in relative_to_repo(study.to_dict()).items()]
    return (pd.DataFrame(rows, columns=["section", "settings"]).style.hide(axis="index").format(escape="html")
            .set_properties(**{"text-align": "left"})
            .set_table_styles([{"selector": "th", "props": [("text-align", "left")]}]))


class Conclusion:
    """A notebook's conclusion: shown as a paragraph in the report, as plain text elsewhere."""

    def __init__(self, text: str | list[str]) -> None:
        self.paragraphs = [text] if isinstance(text, str) else list(text)

    def __repr__(self) -> str:
        return "\n\n".join(self.paragraphs)

    def _repr_html_(self) -> str:
        import html

        body = "".join(f"<p>{html.escape(p)}</p>" for p in self.paragraphs)
        return (f"<div class='urnet-conclusion' style='border-left:4px solid #4c72b0;background:#f6f8fb;"
                f"padding:.4em 1em;font-size:1.05em;max-width:60em'>{body}</div>")


def conclusion(text: str | list[str]) -> Conclusion:
    """Display ``text`` (a findings string or the verdict's sentences) as the notebook's conclusion."""
    return Conclusion(text)
