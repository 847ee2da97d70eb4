"""urnet_core: the reference open implementation of URNet (Ubiquitous Reweighting Network).

The package follows the pipeline of the paper::

    manifest -> instances table -> baseline model -> features + predictions + confusion
             -> class / cluster / instance / label weights -> URNet training (+ bag branch)
             -> metrics -> ablation tables and figures -> HTML report

Folders follow that pipeline: ``config`` (the one study configuration), ``utils``, ``data``
(manifests, readers, the web-noise benchmark, datasets), ``models`` (backbones, confidence
model, bag branch), ``reweight`` (one module per strategy, k-means, text vectors),
``training`` (loop, checkpoints, losses, targets, features, DDP), ``peers`` (the methods URNet
is compared with), ``study`` (cached stages, ablation, analysis, plots, reports, the notebook
runner), ``cli`` (the ``urnet`` command) and ``benchmarks``. See ``docs/DESIGN.md``.
"""

__version__ = "0.1.0"
