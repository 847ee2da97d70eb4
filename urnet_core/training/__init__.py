"""Training: ``train`` (one harness, ``method_loop``, for every ``Method``: eq. 10's weighted cross
entropy in ``weighted_ce``, the peers of :mod:`urnet_core.peers`), ``evaluate``/``predict`` (``inference``),
checkpoints, losses, metrics, feature extraction and
DistributedDataParallel."""
