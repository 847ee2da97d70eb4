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
  afterwards), so a seed fixes the result on CPU (the default ``device``), also on several
  threads: a label's gradient, summed over the batch rows that use it, is added in batch order
  (with indexing's atomic adds it changed from run to run); on 1 and 2 threads the result is
  the same (tested). With
  ``device="cuda"`` the same random draws are used; results then agree with CPU up to float
  rounding, not bit for bit.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np

from urnet_core.utils.memory import as_float32, release_pages, take_rows
from urnet_core.utils.validation import as_features, as_labels, check_positive_int, nonfinite_rows

logger = logging.getLogger(__name__)

#: Rows scored per chunk (d=256: 8 MB of float32 features per chunk). Small enough that the
#: image tower's intermediates (rows x 256 float32) come from the allocator's reused heap: at
#: 65536 rows each was a fresh 32-64 MB mapping whose first-touch page faults made the pass
#: ~1.7x slower (measured on 2 cores, d=256: 14-20 s against 7.6-8.4 s for 4M rows; 4096 to
#: 16384 rows per chunk were within noise of each other).
DEFAULT_SCORE_ROWS = 1 << 13


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
    chunk_rows: int = DEFAULT_SCORE_ROWS,
    device: str = "cpu",
    timings: dict[str, float] | None = None,
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
        Rows per chunk when scoring all instances (features may be a memory map;
        :func:`score_rows`). A row's weight does not depend on it.
    device : str, default="cpu"
        Torch device of the confidence model (``"cuda"`` on a GPU machine; ``"auto"`` picks CUDA
        when available). CPU is bit-reproducible for a seed. At the default batch size this
        small model is bound by kernel launches on a GPU: on one H200 it was not faster than 16
        CPU cores (``reports/benchmarks_gpu.md``), so CUDA mainly frees the CPU.

    timings : dict, optional
        Filled with ``instance.train_s`` (training the confidence model), ``instance.train_steps``
        (its optimiser steps), ``instance.fastest_epoch_s`` and ``instance.epoch_steps`` (the
        fastest epoch's wall seconds and the steps of an epoch; on CUDA, without a device sync, so
        approximate) and ``instance.score_s`` (scoring every row).

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
    feats_pos = as_features(as_float32(take_rows(features, pos)), name="features")
    release_pages(features)  # the positives' pages of a memory map (one page per row at D=2048 float16)
    mean = feats_pos.mean(0)
    std = feats_pos.std(0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)  # constant dims: leave unscaled
    dev = resolve_device(device)
    # In place (feats_pos is take_rows' own copy, never the caller's array): the same float32
    # operations as (x - mean) / std without a second (R C, d) copy (1.2 GB at 5000 x 30 x 2048).
    feats_pos -= mean
    feats_pos /= std
    x_pos = torch.from_numpy(feats_pos).to(dev)
    t_all = torch.from_numpy(text).to(dev)
    y_all = torch.from_numpy(labels.copy())  # may be a read-only view (e.g. from a table)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConfidenceModel(features.shape[1], text.shape[1], hidden=hidden, out_dim=out_dim)
    model = model.to(dev)
    gen = torch.Generator().manual_seed(int(seed))  # CPU draws whatever the device: same stream
    # fused: one kernel per step on CUDA instead of several per parameter (this model is launch-bound there)
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=dev.type == "cuda")
    pos_t = torch.from_numpy(pos)
    t0 = time.perf_counter()
    history, steps, epoch_s = _train(model, opt, x_pos, y_all[pos_t], t_all, c, epochs=epochs,
                                     batch_size=batch_size, negs=negs, gen=gen, dev=dev)
    t1 = time.perf_counter()
    out = score_rows(model, features, labels, t_all, mean, std, chunk_rows=chunk_rows, dev=dev)
    t2 = time.perf_counter()
    if timings is not None:
        timings["instance.train_s"] = t1 - t0
        timings["instance.train_steps"] = steps
        timings["instance.fastest_epoch_s"] = min(epoch_s)
        timings["instance.epoch_steps"] = -(-pos.size // batch_size)
        timings["instance.score_s"] = t2 - t1
    logger.info("confidence model: %d positives, final loss %.4f", pos.size, history[-1])
    weights = np.clip(out, 0.0, 1.0)  # eq. 9; negative cosine -> 0
    if return_model:
        return weights, {"model": model.cpu(), "mean": mean, "std": std, "positives": pos, "loss_history": history}
    return weights


def _train(model, opt, x_pos, y_pos, t_all, c: int, *, epochs: int, batch_size: int, negs: int, gen, dev):
    """Adam on eq. 8 over shuffled positives; returns (mean loss per epoch, optimiser steps, wall seconds per epoch).

    Each epoch draws its permutation and negatives at once from the CPU generator ``gen`` (the
    same stream on every device); losses are summed on the device (no host sync per step).
    """
    import torch
    from torch.nn import functional as F

    on_cuda = dev.type == "cuda"
    n_pos = y_pos.numel()
    history, steps, epoch_s = [], 0, []
    model.train()
    for _ in range(epochs):
        t_epoch = time.perf_counter()
        local_perm = torch.randperm(n_pos, generator=gen)
        # A random *other* label per positive: shift by 1..C-1 modulo C.
        shift = torch.randint(1, c, (n_pos, negs), generator=gen)
        y_epoch = y_pos[local_perm]
        pairs_epoch = torch.cat([y_epoch[:, None], (y_epoch[:, None] + shift) % c], 1).to(dev)  # (P, 1 + negs)
        perm_dev = local_perm.to(dev)
        total = torch.zeros((), dtype=torch.float64, device=dev)
        for s in range(0, n_pos, batch_size):
            pairs = pairs_epoch[s : s + batch_size]
            v_i_n = F.normalize(model.embed_image(x_pos[perm_dev[s : s + batch_size]]), dim=1)
            # Rows of the label embeddings are picked with F.embedding, not indexing: indexing's
            # backward accumulates repeated labels with atomic adds spread over the OpenMP
            # threads, so on 2+ threads the sum order (and the trained model) changed from run to
            # run; embedding's backward adds each label's rows in batch order on one thread,
            # the result of the serial accumulation (equal for any thread count).
            if on_cuda:
                # All C labels in one launch: cheap on a GPU and no host sync (torch.unique syncs).
                v_t_n = F.embedding(pairs, F.normalize(model.embed_text(t_all), dim=1))
            else:
                # Embed only the labels this batch uses (its own and its negatives): the text
                # tower has no batch statistics, so this equals embedding all C labels and
                # picking rows, at O(B) instead of O(C) per step (O(C^2) per epoch: the
                # dominant cost at C=5000 on a CPU).
                used, inverse = torch.unique(pairs, return_inverse=True)
                v_t_n = F.embedding(inverse, F.normalize(model.embed_text(t_all[used]), dim=1))
            cos = (v_i_n[:, None, :] * v_t_n).sum(2)  # (B, 1 + negs)
            loss = -(cos[:, 0] - cos[:, 1:].mean(1)).mean()  # eq. 8
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            total += loss.detach().double() * pairs.shape[0]
        history.append(float(total) / max(n_pos, 1))  # float(): the host waits for the epoch's steps
        epoch_s.append(time.perf_counter() - t_epoch)
    model.eval()
    return history, steps, epoch_s


def score_rows(model, features: np.ndarray, labels: np.ndarray, text: Any, mean: np.ndarray, std: np.ndarray, *,
               chunk_rows: int = DEFAULT_SCORE_ROWS, dev: Any = "cpu", workers: int | None = None) -> np.ndarray:
    """``cos(V_I_i, V_T_{y_i})`` of every row (eq. 9 before clipping), float64 (n,).

    ``features`` (n, d) may be a float16/float32 memory map: it is read in chunks of
    ``chunk_rows`` rows under ``torch.inference_mode``; each chunk is checked for NaN/inf on
    its stored values, converted to float32 once (straight into a reused buffer, standardised
    there as ``(x - mean) / std``), scored in one pass of the image tower, and its pages are
    released. Per-element float32 arithmetic, so the result equals standardising in numpy.

    On a CPU the chunks are scored by ``workers`` threads (default: one per core), each with one
    torch thread (:func:`~urnet_core.utils.threads.single_threaded_pool`, as the cluster step's
    assignment pass): two OpenMP threads sharing a chunk's small products wait on each other (2M x
    256 float16 on 2 cores, in cache: 3.2-3.4 s against 3.4-4.3 s), and a thread reading its chunk
    from disk leaves the core to the other. A row's score does not depend on the chunking or the threads
    (tests check it).
    """
    import threading

    import torch
    from torch.nn import functional as F

    from urnet_core.utils.threads import single_threaded_pool

    n, d = features.shape
    chunk_rows = max(1, min(int(chunk_rows), n))
    out = np.empty(n, dtype=np.float64)
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    dev = torch.device(dev)
    with torch.inference_mode():
        text_t = text if isinstance(text, torch.Tensor) else torch.from_numpy(np.asarray(text, dtype=np.float32))
        v_t = F.normalize(model.embed_text(text_t.to(dev)), dim=1)
        mean_t = torch.from_numpy(np.asarray(mean, dtype=np.float32)).to(dev)
        std_t = torch.from_numpy(np.asarray(std, dtype=np.float32)).to(dev)
    local = threading.local()  # one reused float32 buffer per thread

    def score(s: int) -> tuple[int, np.ndarray | None]:
        raw = np.asarray(features[s : s + chunk_rows])
        bad = nonfinite_rows(raw)
        if bad.size:
            return s, bad
        m = raw.shape[0]
        if getattr(local, "buf", None) is None:
            local.buf = torch.empty((chunk_rows, d), dtype=torch.float32)
        x = local.buf[:m]
        with warnings.catch_warnings():  # read-only memory maps: torch warns, nothing writes to them
            warnings.simplefilter("ignore", UserWarning)
            src = torch.from_numpy(np.ascontiguousarray(raw))
        with torch.inference_mode():
            x.copy_(src)  # the one conversion (a plain copy for float32)
            release_pages(features, s, s + m)
            x.sub_(mean_t).div_(std_t)
            v_i = F.normalize(model.embed_image(x.to(dev)), dim=1)
            cos = (v_i * v_t[y[s : s + m].to(dev)]).sum(1)
            out[s : s + m] = cos.double().cpu().numpy()
        return s, None

    def check(s: int, bad: np.ndarray | None) -> None:
        if bad is not None:
            raise ValueError(
                f"features contain NaN or inf in {bad.size} row(s), first at row {s + int(bad[0])}; "
                "check the feature extraction (e.g. a diverged model) before reweighting"
            )

    starts = range(0, n, chunk_rows)
    if dev.type != "cpu" or len(starts) == 1 or workers == 1:
        for s in starts:
            check(*score(s))
        return out
    with single_threaded_pool(workers, tasks=len(starts)) as pool:
        for s, bad in pool.map(score, starts):  # in row order: the first bad chunk is named
            check(s, bad)
    return out


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
