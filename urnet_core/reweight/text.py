"""Label text vectors for the confidence model of instance reweighting (paper section 4.3).

The paper embeds the words of each label with 300-d fastText vectors. With a real fastText
``.bin`` model (e.g. ``cc.en.300.bin``) pass ``model_path``. Without one (no downloads here)
a small fastText skipgram model is trained on the corpus shipped in
``urnet_core/resources/class_descriptions.txt`` (plain descriptions of the Fashion-MNIST
classes, the ten digits and some generic objects), optionally plus extra text, and cached
under ``cache_dir`` keyed by the hash of the corpus and the parameters.

Determinism: fastText trains with one thread (``thread=1``), which makes its SGD order, and so
the model, identical across runs and processes; multi-threaded training is not reproducible.
On a corpus this small skipgram sometimes diverges ("Encountered NaN"): training then retries
with half the learning rate, a deterministic sequence.

A small corpus leaves one direction shared by every word vector (class-name cosines near 1),
so the fallback's class vectors are centred (the mean class vector removed, when there are at
least three classes) before L2 normalisation; after that, related names are close (T-shirt and
shirt; sandal, sneaker and ankle boot) and unrelated ones are not. Vectors of a real ``.bin``
are only normalised.

Class names are reduced to words: a WebVision synset string ``"n01440764 tench, Tinca tinca"``
drops its wnid; everything is lower-cased and non-alphanumerics become spaces
(``"T-shirt/top"`` -> ``"t shirt top"``). The corpus is tokenised the same way. A name's
vector is fastText's ``get_sentence_vector`` of its words (unseen words get vectors from their
character n-grams).
"""

from __future__ import annotations

import logging
import os
import re
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from urnet_core.utils.validation import check_positive_int
from urnet_core.utils.io import atomic_path, stable_hash

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


def train_text_model(
    corpus: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    dim: int = 300,
    epoch: int = 50,
    lr: float = 0.05,
    retries: int = 4,
):
    """Train (or load from the cache) a fastText skipgram model of ``corpus``.

    The ``.bin`` is cached under ``cache_dir`` as ``skipgram-<hash>.bin``, keyed by the
    tokenised corpus and every training parameter, and written atomically.
    """
    import fasttext

    dim = check_positive_int(dim, "dim")
    epoch = check_positive_int(epoch, "epoch")
    text = normalize_text(corpus)
    params = {"model": "skipgram", "dim": dim, "epoch": epoch, "lr": lr, "minCount": 1, "minn": 3, "maxn": 6,
              "ws": 5, "thread": 1, "fasttext": getattr(fasttext, "__version__", "0.9")}
    key = stable_hash(text, params)
    folder = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE).expanduser()
    path = folder / f"skipgram-{key}.bin"
    if path.exists():
        logger.debug("reusing cached text model %s", path)
        return fasttext.load_model(str(path))
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / f"corpus-{key}.txt") as corpus_file, atomic_path(path) as tmp:
        corpus_file.write_text(text, encoding="utf-8")
        rate = lr
        for attempt in range(retries + 1):
            logger.info("training fastText skipgram (dim=%d, lr=%g) on %d bytes of text", dim, rate, len(text))
            problem = _train_in_subprocess(corpus_file, tmp, dim=dim, epoch=epoch, lr=rate)
            if problem is None:
                break
            logger.warning("fastText training attempt %d failed (%s); retrying with lr %g", attempt + 1, problem,
                           rate / 2)
            if attempt == retries:
                raise RuntimeError(f"fastText training failed {retries + 1} times (last lr {rate}): {problem}")
            rate /= 2
    return fasttext.load_model(str(path))


#: Trains one model in a fresh interpreter, checks its vectors and saves it; prints the problem if any.
_TRAIN_SCRIPT = """
import sys, numpy as np, fasttext
corpus, out, dim, epoch, lr = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
try:
    m = fasttext.train_unsupervised(corpus, model="skipgram", dim=dim, epoch=epoch, lr=lr, minCount=1,
                                    minn=3, maxn=6, ws=5, thread=1, verbose=0)
except RuntimeError as exc:
    print(f"diverged: {exc}"); sys.exit(3)
v = np.stack([m.get_word_vector(w) for w in m.words])
if not np.isfinite(v).all() or np.abs(v).max() > 1e3 or (np.linalg.norm(v, axis=1) == 0).any():
    print(f"degenerate word vectors (max |v| {np.abs(v).max():.3g})"); sys.exit(3)
m.save_model(out)
"""


def _train_in_subprocess(corpus_file: Path, out: Path, *, dim: int, epoch: int, lr: float) -> str | None:
    """Train and save one fastText model in a fresh process; return None, or what went wrong.

    fastText 0.9.3 built from source sometimes diverges ("Encountered NaN") or returns
    vectors of garbage magnitude (~1e27) on a small corpus, and after a failure later runs in
    the same process fail more often: a fresh interpreter per attempt, with the word vectors
    checked before the model is accepted, keeps a bad model out of the cache.
    """
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _TRAIN_SCRIPT, str(corpus_file), str(out), str(dim), str(epoch), str(lr)],
        capture_output=True, text=True,
    )
    if proc.returncode == 0 and out.exists():
        return None
    return (proc.stdout.strip() or proc.stderr.strip()[-500:] or f"exit {proc.returncode}").splitlines()[-1]


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
        Accepted for API stability; single-threaded fastText training is deterministic.
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
        vecs = np.stack([model.get_sentence_vector(w) for w in words]).astype(np.float64)
        if len(words) >= 3:
            vecs -= vecs.mean(axis=0)  # remove the direction every word of a small corpus shares
    vecs = vecs.astype(np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    if np.any(norms == 0):
        bad = [names[i] for i in np.flatnonzero(norms[:, 0] == 0)]
        raise ValueError(
            f"zero text vector for class name(s) {bad}: no word or character n-gram of them is known; "
            "describe them in extra_text"
        )
    return vecs / norms
