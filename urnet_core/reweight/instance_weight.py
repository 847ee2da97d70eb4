"""Instance reweighting (paper section 4.3, eq. 8-9).

Notation: ``n`` instances, ``C`` classes, ``d`` feature size, ``T`` text-vector size.

A confidence model (:class:`urnet_core.models.confidence.ConfidenceModel`) maps baseline
features to ``V_I`` and label text vectors to ``V_T``. It is trained on *positives* - the
top-``R`` search-ranked instances of each class, assumed clean - each paired with a random
other label as negative, minimising ``-mean(cos(V_I, V_T) - cos(V_I, V_T~))`` (eq. 8). Every
instance then gets ``wI_i = cos(V_I_i, V_T_{y_i})`` (eq. 9).

Choices the paper leaves open:

- Negative cosines are clipped to 0, so weights lie in ``[0, 1]``: an instance that matches
  its label worse than an unrelated direction is dropped from the loss, never pushed away.
- Features are standardised (mean 0, std 1 per dimension) with statistics fitted on the
  positives, so the FC layers see well-scaled inputs whatever the backbone.
- Out of core: ``features`` may be a float16/float32 memory map. Only the positives
  (``top_r * C`` rows) are loaded for training; the weights of all ``n`` rows are computed in
  chunks of ``chunk_rows`` rows, so memory stays ``O(top_r * C * d + chunk_rows * d + n)``.
- Training runs in float32 with a seeded CPU ``torch.Generator`` for shuffling and
  negatives, and the initial weights drawn under a forked, seeded global RNG (restored
  afterwards), so a seed fixes the result on CPU (the default ``device``). With
  ``device="cuda"`` the same random draws are used; results then agree with CPU up to float
  rounding, not bit for bit.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from urnet_core.utils.validation import as_features, as_labels, check_positive_int
from urnet_core.utils.memory import release_pages

logger = logging.getLogger(__name__)


def select_positives(
    labels: np.ndarray,
    ranks: np.ndarray | None,
    sources: np.ndarray | None,
    *,
    top_r: int = 30,
    clean_source: str | None = "google",
) -> np.ndarray:
    """Rows used as clean positives: the top-``R`` ranked instances of each class.

    Parameters
    ----------
    labels : array of int, shape (n,)
    ranks : array of float, shape (n,), or None
        Search rank within (class, source), 0 = top; NaN = unknown.
    sources : array of str, shape (n,), or None
        Where each instance came from.
    top_r : int, default=30
        Positives per class.
    clean_source : str or None, default='google'
        The cleaner source to draw from. A class with no instance from it (or ``sources`` /
        ``clean_source`` None) draws from all sources.

    Returns
    -------
    indices : ndarray of int64
        Sorted row indices.

    Notes
    -----
    Within a class, rows are ordered by rank; unknown (NaN) ranks come after all known ranks
    and ties keep table order, so a class without any rank contributes its first ``R`` rows.
    """
    labels = as_labels(labels)
    n = labels.shape[0]
    top_r = check_positive_int(top_r, "top_r")
    if ranks is None:
        rank = np.full(n, np.nan)
    else:
        rank = np.asarray(ranks, dtype=np.float64)
        if rank.shape != (n,):
            raise ValueError(f"ranks has shape {rank.shape}, expected ({n},)")
    if sources is not None:
        src = np.asarray(sources, dtype=object)
        if src.shape != (n,):
            raise ValueError(f"sources has shape {src.shape}, expected ({n},)")
        in_clean = src == clean_source if clean_source is not None else np.zeros(n, dtype=bool)
    else:
        in_clean = np.zeros(n, dtype=bool)
    # Sort key: class, NaN-last rank, row (stable).
    key_rank = np.where(np.isnan(rank), np.inf, rank)
    chosen = []
    # Rows of every class at once (stable sort: ascending rows within a class), O(n log n)
    # rather than one O(n) scan per class (O(n C): minutes at 16M x 5000).
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    for rows in np.split(order, starts[1:]) if classes.size else []:
        pool = rows[in_clean[rows]]
        if pool.size == 0:
            pool = rows
        order = np.argsort(key_rank[pool], kind="stable")
        chosen.append(pool[order[:top_r]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def instance_weights(
    features: np.ndarray,
    labels: np.ndarray,
    label_vectors: np.ndarray,
    *,
    ranks: np.ndarray | None = None,
    sources: np.ndarray | None = None,
    top_r: int = 30,
    clean_source: str | None = "google",
    hidden: int = 256,
    out_dim: int = 128,
    epochs: int = 50,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    negatives_per_positive: int = 1,
    return_model: bool = False,
    chunk_rows: int = 8192,
    device: str = "cpu",
) -> np.ndarray | tuple[np.ndarray, Any]:
    """Per-instance confidence weights ``wI`` (eq. 8-9).

    Parameters
    ----------
    features : array, shape (n, d)
        Baseline penultimate features.
    labels : array of int, shape (n,)
        Observed labels.
    label_vectors : array, shape (C, T)
        Text vectors of the class names (:func:`urnet_core.reweight.text.label_vectors`).
    ranks, sources, top_r, clean_source
        Positive selection, see :func:`select_positives`.
    hidden, out_dim : int
        Confidence model sizes.
    epochs, lr, batch_size : training settings (Adam).
    seed : int, default=0
    negatives_per_positive : int, default=1
        Random other labels drawn per positive; their cosines are averaged.
    return_model : bool, default=False
        Also return the trained model and the feature standardisation ``(mean, std)``.
    chunk_rows : int, default=8192
        Rows per chunk when scoring all instances (features may be a memory map).
    device : str, default="cpu"
        Torch device of the confidence model (``"cuda"`` on a GPU machine; ``"auto"`` picks CUDA
        when available). CPU is bit-reproducible for a seed. At the default batch size this
        small model is bound by kernel launches on a GPU: on one H200 it was not faster than 16
        CPU cores (``reports/benchmarks_gpu.md``), so CUDA mainly frees the CPU.

    Returns
    -------
    weights : ndarray of float64, shape (n,)
        ``clip(cos(V_I, V_T_y), 0, 1)``.
    model_info : dict (only with ``return_model``)
        ``{"model", "mean", "std", "positives", "loss_history"}``.
    """
    import torch

    from urnet_core.utils.devices import resolve_device
    from urnet_core.models.confidence import ConfidenceModel

    text = as_features(label_vectors, name="label_vectors").astype(np.float32)
    c = text.shape[0]
    if c < 2:
        raise ValueError("instance weights need at least 2 classes (negatives are other labels)")
    labels = as_labels(labels, num_classes=c)
    if not isinstance(features, np.ndarray):
        features = as_features(features, n_rows=labels.shape[0])
    if features.ndim != 2 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"features has shape {features.shape}, expected ({labels.shape[0]}, d)")
    chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
    negs = check_positive_int(negatives_per_positive, "negatives_per_positive")
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")

    pos = select_positives(labels, ranks, sources, top_r=top_r, clean_source=clean_source)
    # Only the positives are held in memory; NaN/inf anywhere is caught chunk by chunk below.
    feats_pos = as_features(np.asarray(features[pos], dtype=np.float32), name="features")
    mean = feats_pos.mean(0)
    std = feats_pos.std(0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)  # constant dims: leave unscaled
    dev = resolve_device(device)
    x_pos = torch.from_numpy((feats_pos - mean) / std).to(dev)
    t_all = torch.from_numpy(text).to(dev)
    y_all = torch.from_numpy(labels.copy())  # may be a read-only view (e.g. from a table)
    y_all_dev = y_all.to(dev)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConfidenceModel(features.shape[1], text.shape[1], hidden=hidden, out_dim=out_dim)
    model = model.to(dev)
    gen = torch.Generator().manual_seed(int(seed))  # CPU draws whatever the device: same stream
    # fused: one kernel per step on CUDA instead of several per parameter (this model is launch-bound there)
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=dev.type == "cuda")
    pos_t = torch.from_numpy(pos)
    y_pos = y_all[pos_t]
    on_cuda = dev.type == "cuda"
    history = []
    model.train()
    for _ in range(epochs):
        # One epoch's random draws at once (CPU generator: the same stream on every device).
        local_perm = torch.randperm(pos_t.numel(), generator=gen)
        # A random *other* label per positive: shift by 1..C-1 modulo C.
        shift = torch.randint(1, c, (pos_t.numel(), negs), generator=gen)
        y_epoch = y_pos[local_perm]
        pairs_epoch = torch.cat([y_epoch[:, None], (y_epoch[:, None] + shift) % c], 1).to(dev)  # (P, 1 + negs)
        perm_dev = local_perm.to(dev)
        total = torch.zeros((), dtype=torch.float64, device=dev)  # summed on device: no sync per step
        for s in range(0, perm_dev.numel(), batch_size):
            pairs = pairs_epoch[s : s + batch_size]
            v_i_n = torch.nn.functional.normalize(model.embed_image(x_pos[perm_dev[s : s + batch_size]]), dim=1)
            if on_cuda:
                # All C labels in one launch: cheap on a GPU and no host sync (torch.unique syncs).
                v_t_n = torch.nn.functional.normalize(model.embed_text(t_all), dim=1)[pairs]
            else:
                # Embed only the labels this batch uses (its own and its negatives): the text
                # tower has no batch statistics, so this equals embedding all C labels and
                # picking rows, at O(B) instead of O(C) per step (O(C^2) per epoch: the
                # dominant cost at C=5000 on a CPU).
                used, inverse = torch.unique(pairs, return_inverse=True)
                v_t_n = torch.nn.functional.normalize(model.embed_text(t_all[used]), dim=1)[inverse]
            cos = (v_i_n[:, None, :] * v_t_n).sum(2)  # (B, 1 + negs)
            loss = -(cos[:, 0] - cos[:, 1:].mean(1)).mean()  # eq. 8
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach().double() * pairs.shape[0]
        history.append(float(total) / max(pos_t.numel(), 1))
    model.eval()
    with torch.no_grad():
        v_t = torch.nn.functional.normalize(model.embed_text(t_all), dim=1)
        out = np.empty(labels.shape[0], dtype=np.float64)
        for s in range(0, labels.shape[0], chunk_rows):
            block = as_features(np.asarray(features[s : s + chunk_rows], dtype=np.float32), name="features")
            x = torch.from_numpy((block - mean) / std).to(dev)
            v_i = torch.nn.functional.normalize(model.embed_image(x), dim=1)
            cos = (v_i * v_t[y_all_dev[s : s + chunk_rows]]).sum(1)
            out[s : s + chunk_rows] = cos.double().cpu().numpy()
            release_pages(features)
    logger.info("confidence model: %d positives, final loss %.4f", pos.size, history[-1])
    weights = np.clip(out, 0.0, 1.0)  # eq. 9; negative cosine -> 0
    if return_model:
        return weights, {"model": model.cpu(), "mean": mean, "std": std, "positives": pos, "loss_history": history}
    return weights


def combined_instance_weights(text_confidence: np.ndarray, out_of_sample_confidence: np.ndarray) -> np.ndarray:
    """The instance weight of the study's recommended configuration: the paper's image-text
    confidence (eq. 8-9) combined with an out-of-sample confidence of the observed label.

    ``w_i = sqrt(wI_i * q_i)``, the geometric mean of ``wI_i`` (:func:`instance_weights`, the
    cosine between the image's projection and its label's text vector, in [0, 1]) and
    ``q_i = p_oof(y_i | x_i)``, the probability a baseline that never trained on instance ``i``
    gives to its observed label (K-fold cross-fitting,
    :func:`urnet_core.study.pipeline.cross_fit`).

    Why: the text side sees *what* an image shows against its label's words, so it catches
    open-set images, but it cannot tell look-alike classes apart (a shirt labelled T-shirt is
    close to both words); a network that has not fitted instance ``i`` gives low probability
    to a wrong label, look-alike flips included, but is unsure on ambiguous images. The
    geometric mean is low when either signal is low (a product would be dominated by the
    sharper of the two; the square root keeps the result on the [0, 1] scale of its inputs).
    In-sample confidences would not do: a network that has fitted a wrong label is confident
    in it.

    Parameters
    ----------
    text_confidence : array of float, shape (n,)
        ``wI`` of eq. 9, in [0, 1].
    out_of_sample_confidence : array of float, shape (n,)
        Out-of-sample probability of each observed label, in [0, 1].

    Returns
    -------
    ndarray of float64, shape (n,), in [0, 1]
    """
    wi = np.asarray(text_confidence, dtype=np.float64)
    q = np.asarray(out_of_sample_confidence, dtype=np.float64)
    if wi.shape != q.shape or wi.ndim != 1:
        raise ValueError(f"text_confidence {wi.shape} and out_of_sample_confidence {q.shape} must be equal 1-D shapes")
    if not (np.isfinite(wi).all() and np.isfinite(q).all()):
        raise ValueError("instance confidences contain NaN or inf")
    if wi.min() < 0 or wi.max() > 1 or q.min() < 0 or q.max() > 1:
        raise ValueError("instance confidences must lie in [0, 1]")
    return np.sqrt(wi * q)
