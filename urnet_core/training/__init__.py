"""Training: the loop (``train``, ``train_one_epoch``, ``evaluate``), checkpoints, losses,
training targets (``LabelPairs``), metrics, feature extraction and DistributedDataParallel."""
