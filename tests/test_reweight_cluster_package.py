"""The cluster package against the weights of the implementation it replaced.

``tests/data/cluster_weights_main.npz`` holds the weights the single-module implementation
(before :mod:`urnet_core.reweight.cluster`) computed on a small problem set with big problems
(> 256 k rows), a 3-row class and an empty class, for every backend, count, normalisation and
input dtype (seed 3).
"""

from pathlib import Path

import numpy as np
import pytest

from urnet_core.reweight.cluster import cluster_weights, cluster_weights_by_count

REF = Path(__file__).parent / "data" / "cluster_weights_main.npz"


def _cases():
    ref = np.load(REF)
    for key in ref.files:
        if key.count("-") == 6:
            backend, one_pass, count, norm, top_k, k, dt = key.split("-")
            yield key, backend, None if one_pass == "None" else one_pass == "True", count, norm, int(top_k), int(k), dt


def _run(ref, backend, one_pass, count, norm, top_k, k, dt):
    return cluster_weights(ref["x"].astype(dt), ref["labels"], ref["conf"], top_k=top_k, n_clusters=k, count=count,
                           normalize=norm, backend=backend, one_pass=one_pass, seed=3)


@pytest.mark.parametrize("case", [c for c in _cases() if c[1] == "faiss" and c[2]], ids=lambda c: c[0])
def test_one_pass_is_bit_identical_to_the_old_implementation(case):
    ref = np.load(REF)
    np.testing.assert_array_equal(_run(ref, *case[1:]), ref[case[0]])


@pytest.mark.parametrize("backend", ["faiss", "sklearn", "torch"])
def test_block_mode_equals_the_old_implementation_up_to_rescaling_rounding(backend):
    # Block mode rescaled each class by 1 / mean(w); eq. 7 now uses rows / sum(w) in every mode.
    ref = np.load(REF)
    for case in _cases():
        if case[1] != backend or case[2] is True:
            continue
        got, want = _run(ref, *case[1:]), ref[case[0]]
        if case[4] == "class_mean":
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
        else:
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend,one_pass", [("faiss", True), ("faiss", False), ("torch", None)])
def test_both_counts_from_one_clustering_equal_two_clusterings(backend, one_pass):
    ref = np.load(REF)
    x, labels, conf = ref["x"], ref["labels"], ref["conf"]
    both, details = cluster_weights_by_count(x, labels, conf, top_k=2, n_clusters=4, counts=("all", "class"),
                                             backend=backend, one_pass=one_pass, seed=3, return_details=True)
    for count in ("all", "class"):
        alone, det = cluster_weights(x, labels, conf, top_k=2, n_clusters=4, count=count, backend=backend,
                                     one_pass=one_pass, seed=3, return_details=True)
        np.testing.assert_array_equal(both[count], alone)
        for a, b in zip(details[count], det):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a.groups, b.groups)
                np.testing.assert_array_equal(a.group_weights, b.group_weights)
    if one_pass:
        for count in ("all", "class"):
            np.testing.assert_array_equal(both[count], ref[f"faiss-True-{count}-class_mean-2-4-float32"])
