"""Data layer: instances tables, dataset readers, the web-noise benchmark, datasets, manifests.

- :mod:`~urnet_core.data.table`: the instances-table schema and :func:`validate_table`.
- :mod:`~urnet_core.data.readers`: WebVision, mini-WebVision, Clothing1M, CIFAR-N, CSV,
  ImageFolder, IDX/Fashion-MNIST and scikit-learn digits readers.
- :mod:`~urnet_core.data.webnoise`: :func:`make_web_noisy`, the five-challenge benchmark.
- :mod:`~urnet_core.data.datasets`: PyTorch datasets yielding ``(image, label, index)``
  (imports torch; not re-exported here to keep this package light).
- :mod:`~urnet_core.data.manifest`: YAML manifests and :func:`load_dataset`.
- :mod:`~urnet_core.data.targets`: training targets, eq. 10's compact :class:`LabelPairs` and its
  file format (what label reweighting writes and the trainer reads).
"""

from urnet_core.data.manifest import DatasetBundle, Manifest, load_bundle, load_dataset, load_manifest, save_bundle
from urnet_core.data.table import NOISE_TYPES, OPTIONAL_COLUMNS, REQUIRED_COLUMNS, make_table, validate_table
from urnet_core.data.webnoise import (
    FASHION_MNIST_LOOKALIKES,
    WebNoisyData,
    make_test_table,
    make_web_noisy,
    noise_rate_by_rank,
    realised_noise_rates,
)

__all__ = [
    "DatasetBundle", "Manifest", "load_bundle", "load_dataset", "load_manifest", "save_bundle",
    "NOISE_TYPES", "OPTIONAL_COLUMNS", "REQUIRED_COLUMNS", "make_table", "validate_table",
    "FASHION_MNIST_LOOKALIKES", "WebNoisyData", "make_test_table", "make_web_noisy",
    "noise_rate_by_rank", "realised_noise_rates",
]  # fmt: skip
