"""urnet_core: the reference open implementation of URNet (Ubiquitous Reweighting Network).

The package follows the pipeline of the paper::

    manifest -> instances table -> baseline model -> features + predictions + confusion
             -> class / cluster / instance / label weights -> URNet training (+ bag branch)
             -> metrics -> ablation tables and figures -> HTML report

Sub-packages: ``data`` (manifests, readers, web-noise benchmark, datasets), ``models``
(backbones, confidence model, bag branch), ``reweight`` (one module per strategy),
plus ``kmeans``, ``text``, ``train``, ``metrics``, ``ablation``, ``report`` and ``cli``.
"""

__version__ = "0.1.0"
