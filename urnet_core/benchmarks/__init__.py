"""``urnet bench``: the scale benchmark (``urnet weights`` end to end, k-means backends,
training-step overhead, data loading)."""
