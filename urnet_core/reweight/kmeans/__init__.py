"""k-means with interchangeable backends: cuML (GPU), faiss, PyTorch and scikit-learn.

Cluster reweighting (paper 4.2) runs one small k-means per class, so at WebVision scale
k-means is the heavy step (at 16M x 5000: 5000 problems, ~16k rows on average). :func:`kmeans` solves one problem;
:func:`batched_kmeans` solves many small ones together.

Backends
--------
- ``"cuml"``: RAPIDS cuML on a CUDA GPU (import guarded). Seeded runs are not bit-reproducible.
- ``"faiss"``: ``faiss.Kmeans`` on CPU, trained on at most 256 points per centroid, then every
  row is assigned with an exact search. float32.
- ``"torch"``: plain Lloyd iterations with greedy k-means++ initialisation, on CPU or CUDA. The
  batched form advances all problems together (similar-size problems padded into one tensor,
  distances and centroid sums by ``bmm``).
- ``"sklearn"``: ``sklearn.cluster.KMeans`` with one k-means++ initialisation.
- ``"cuml_dask"``: ``cuml.dask.cluster.KMeans`` across every GPU of a Dask cluster (one
  worker per GPU, dask_cuda ``LocalCUDACluster``) for one problem too large for one GPU. Pass
  ``client=`` (a ``dask.distributed.Client``) or have one active; without either a
  ``LocalCUDACluster`` is started for the call and closed after. Never chosen by ``"auto"``.
- ``"auto"``: cuML when CUDA and cuML are available, else faiss, else scikit-learn. For
  :func:`batched_kmeans`, ``"auto"`` prefers the segmented torch Lloyd on CUDA (cuML has no
  batched multi-problem k-means), else faiss, else scikit-learn. The choice is logged once.

Inputs may be numpy arrays (float16 accepted; computed in float32), ``np.memmap`` views, or
CuPy arrays on a CUDA device: those go to cuML / torch on the GPU without a host copy (the
CPU backends copy them to the host).

Conventions shared by all backends: ``inertia`` is the sum of *squared* Euclidean distances of
every row to its assigned centre; labels are int64 in ``[0, n_clusters)``. When a problem has
``n <= n_clusters`` rows, every row is its own cluster (``centers`` has ``n`` rows, inertia 0)
and no backend is called. Duplicated rows are allowed (clusters may then be empty or coincide).
NaN/inf rows raise ``ValueError``. On CPU a given seed reproduces the result bit for bit.
"""


from urnet_core.reweight.kmeans.backends import (
    BACKENDS,
    HAS_CUML,
    HAS_FAISS,
    SMALL_PROBLEM_WORK,
    TRAIN_POINTS_PER_CENTROID,
    faiss,
    faiss_threads,
    faiss_train,
    kmeans,
    nearest_centroid,
    resolve_backend,
    training_subsample,
)
from urnet_core.reweight.kmeans.batched import batched_kmeans
from urnet_core.reweight.kmeans.result import KMeansResult, is_cupy_array

__all__ = [
    "BACKENDS",
    "HAS_CUML",
    "HAS_FAISS",
    "SMALL_PROBLEM_WORK",
    "TRAIN_POINTS_PER_CENTROID",
    "KMeansResult",
    "batched_kmeans",
    "faiss",
    "faiss_threads",
    "faiss_train",
    "is_cupy_array",
    "kmeans",
    "nearest_centroid",
    "resolve_backend",
    "training_subsample",
]
