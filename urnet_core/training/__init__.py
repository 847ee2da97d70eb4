"""Training: the loop (``train``, ``train_one_epoch``, ``evaluate``), the ``Method`` protocol of the
peers and its harness (``methods``, ``method_loop``), checkpoints, losses, training targets
(``LabelPairs``), metrics, feature extraction and DistributedDataParallel."""
