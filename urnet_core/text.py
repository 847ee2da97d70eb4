"""Label text vectors for the confidence model of instance reweighting (paper section 4.3).

The paper embeds the words of each label with 300-d fastText vectors. With a real fastText
``.bin`` model (e.g. ``cc.en.300.bin``) pass ``model_path``. Without one (no downloads here)
word vectors are built from the corpus shipped in
``urnet_core/resources/class_descriptions.txt`` (plain descriptions of the Fashion-MNIST
classes, the ten digits and some generic objects), optionally plus extra text, and cached
under ``cache_dir`` keyed by the hash of the corpus and the parameters.

Why the fallback is not fastText skipgram training: on this ~10 KB corpus the pip wheel of
fasttext 0.9.3 (``train_unsupervised``, ``thread=1``) was measured to give different vectors
for identical calls in different processes, to stop with "Encountered NaN" in about one run
in five at learning rates 0.0025-0.05, and to collapse every class name onto one direction
(pairwise cosine ~1.0). The fallback is therefore the deterministic count-based equivalent of
skipgram with negative sampling: the truncated SVD of the positive PMI word co-occurrence
matrix (Levy & Goldberg, NeurIPS 2014), plus fastText-style character n-gram (3-6) vectors
so unseen words still get a vector.

Class names are reduced to words: a WebVision synset string ``"n01440764 tench, Tinca tinca"``
drops its wnid; everything is lower-cased and non-alphanumerics become spaces
(``"T-shirt/top"`` -> ``"t shirt top"``). The corpus is tokenised the same way. A name's
vector is the mean of its unit word vectors (as fastText's ``get_sentence_vector``), then
L2-normalised.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from urnet_core._validation import check_positive_int
from urnet_core.io import atomic_path, stable_hash

logger = logging.getLogger(__name__)

_WNID = re.compile(r"^\s*n\d{8}\s+")
_NON_WORD = re.compile(r"[^0-9a-z]+")
DEFAULT_CACHE = Path("~/.cache/urnet/text")


def class_name_words(name: str) -> str:
    """Words of a class name: wnid dropped, lower case, punctuation to spaces."""
    if not isinstance(name, str):
        raise TypeError(f"class names must be str, got {type(name).__name__}")
    words = _NON_WORD.sub(" ", _WNID.sub("", name).lower()).split()
    if not words:
        raise ValueError(f"class name {name!r} has no words to embed")
    return " ".join(words)


def normalize_text(text: str) -> str:
    """Tokenise ``text`` like class names, one output line per non-empty input line."""
    lines = (" ".join(_NON_WORD.sub(" ", line.lower()).split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line) + "\n"


def default_corpus() -> str:
    """The class-description corpus shipped with the package."""
    return resources.files("urnet_core").joinpath("resources/class_descriptions.txt").read_text(encoding="utf-8")


def _char_ngrams(word: str, minn: int = 3, maxn: int = 6) -> list[str]:
    """fastText-style character n-grams of ``<word>``."""
    w = f"<{word}>"
    return [w[i : i + n] for n in range(minn, maxn + 1) for i in range(len(w) - n + 1)]


@dataclass(frozen=True)
class WordVectors:
    """A small word-vector model: vocabulary vectors plus character n-gram vectors for unseen words."""

    words: tuple[str, ...]
    vectors: np.ndarray  # (V, dim) float32
    ngrams: tuple[str, ...]
    ngram_vectors: np.ndarray  # (G, dim) float32

    def word_vector(self, word: str) -> np.ndarray:
        index = {w: i for i, w in enumerate(self.words)}
        if word in index:
            return self.vectors[index[word]]
        gindex = {g: i for i, g in enumerate(self.ngrams)}
        rows = [gindex[g] for g in _char_ngrams(word) if g in gindex]
        if not rows:
            return np.zeros(self.vectors.shape[1], dtype=np.float32)
        return self.ngram_vectors[rows].mean(0)

    def sentence_vector(self, text: str) -> np.ndarray:
        """Mean of the unit word vectors, as fastText's ``get_sentence_vector``."""
        vecs = [self.word_vector(w) for w in text.split()]
        vecs = [v / np.linalg.norm(v) for v in vecs if np.linalg.norm(v) > 0]
        return np.mean(vecs, axis=0) if vecs else np.zeros(self.vectors.shape[1], dtype=np.float32)


def _svd_ppmi(text: str, *, dim: int, window: int = 5, smoothing: float = 0.75) -> WordVectors:
    """Word vectors from the SVD of the positive PMI co-occurrence matrix (Levy & Goldberg 2014).

    Deterministic (no sampling): counts within ``window`` words, weighted 1/distance,
    context-distribution smoothing 0.75, vectors ``U * sqrt(S)`` with a fixed sign convention.
    Zero-padded when ``dim`` exceeds the vocabulary size.
    """
    lines = [line.split() for line in text.splitlines() if line.strip()]
    words = sorted({w for line in lines for w in line})
    index = {w: i for i, w in enumerate(words)}
    v = len(words)
    counts = np.zeros((v, v), dtype=np.float64)
    for line in lines:
        ids = [index[w] for w in line]
        for pos, wid in enumerate(ids):
            for off in range(1, window + 1):
                if pos + off >= len(ids):
                    break
                counts[wid, ids[pos + off]] += 1.0 / off
                counts[ids[pos + off], wid] += 1.0 / off
    total = counts.sum()
    ctx = counts.sum(0) ** smoothing
    ctx /= ctx.sum()
    row = counts.sum(1) / total
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log((counts / total) / (row[:, None] * ctx[None, :]))
    ppmi = np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)
    u, sv, _ = np.linalg.svd(ppmi, full_matrices=False)
    k = min(dim, v)
    u = u[:, :k] * np.sqrt(sv[:k])
    # SVD signs are arbitrary: make each column's largest-magnitude entry positive.
    u *= np.sign(u[np.abs(u).argmax(0), np.arange(k)])
    vectors = np.zeros((v, dim), dtype=np.float32)
    vectors[:, :k] = u
    # Character n-gram vectors: mean of the unit vectors of the vocabulary words holding them.
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    members: dict[str, list[int]] = {}
    for i, w in enumerate(words):
        for g in set(_char_ngrams(w)):
            members.setdefault(g, []).append(i)
    ngrams = tuple(sorted(members))
    ngram_vectors = np.stack([unit[members[g]].mean(0) for g in ngrams]).astype(np.float32)
    return WordVectors(tuple(words), vectors, ngrams, ngram_vectors)


def train_text_model(
    corpus: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    dim: int = 300,
    window: int = 5,
) -> WordVectors:
    """Word vectors of ``corpus`` (SVD of PPMI), cached under ``cache_dir`` by content hash."""
    dim = check_positive_int(dim, "dim")
    window = check_positive_int(window, "window")
    text = normalize_text(corpus)
    params = {"method": "svd_ppmi", "dim": dim, "window": window, "smoothing": 0.75, "minn": 3, "maxn": 6}
    key = stable_hash(text, params)
    folder = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE).expanduser()
    path = folder / f"svd-ppmi-{key}.npz"
    if path.exists():
        logger.debug("reusing cached text model %s", path)
        with np.load(path, allow_pickle=False) as z:
            return WordVectors(tuple(z["words"].tolist()), z["vectors"], tuple(z["ngrams"].tolist()), z["ngram_vectors"])
    logger.info("building text vectors (dim=%d) from %d bytes of text", dim, len(text))
    model = _svd_ppmi(text, dim=dim, window=window)
    with atomic_path(path) as tmp:
        np.savez(tmp, words=np.array(model.words), vectors=model.vectors,
                 ngrams=np.array(model.ngrams), ngram_vectors=model.ngram_vectors)
    return model


def label_vectors(
    class_names: Sequence[str],
    *,
    model_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    dim: int = 300,
    seed: int = 0,
    extra_text: str | None = None,
) -> np.ndarray:
    """L2-normalised text vectors of the class names.

    Parameters
    ----------
    class_names : sequence of str, length C
        Names in label order (WebVision synset strings allowed).
    model_path : path, optional
        A fastText ``.bin`` model (e.g. ``cc.en.300.bin``); the vector is its
        ``get_sentence_vector`` of the name's words, with the model's dimension (``dim`` is
        then ignored).
    cache_dir : path, optional
        Where the fallback vectors are cached; default ``~/.cache/urnet/text``.
    dim : int, default=300
        Fallback vector size.
    seed : int, default=0
        Accepted for API stability; the fallback is deterministic and does not use it.
    extra_text : str, optional
        Text appended to the shipped corpus (e.g. descriptions of your own classes).

    Returns
    -------
    vectors : ndarray of float32, shape (C, dim)
        Unit rows.
    """
    names = list(class_names)
    if not names:
        raise ValueError("class_names is empty")
    words = [class_name_words(n) for n in names]
    if model_path is not None:
        import fasttext

        model_path = Path(model_path)
        if not model_path.exists():
            raise FileNotFoundError(f"fastText model not found: {model_path}")
        ft = fasttext.load_model(str(model_path))
        vecs = np.stack([ft.get_sentence_vector(w) for w in words])
    else:
        corpus = default_corpus() + ("\n" + extra_text if extra_text else "")
        model = train_text_model(corpus, cache_dir=cache_dir, dim=dim)
        vecs = np.stack([model.sentence_vector(w) for w in words])
    vecs = vecs.astype(np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    if np.any(norms == 0):
        bad = [names[i] for i in np.flatnonzero(norms[:, 0] == 0)]
        raise ValueError(
            f"zero text vector for class name(s) {bad}: no word or character n-gram of them is known; "
            "describe them in extra_text"
        )
    return vecs / norms
