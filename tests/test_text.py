import numpy as np
import pytest

from urnet_core.reweight import text
from urnet_core.reweight.text import class_name_words, label_vectors

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def test_class_name_words():
    assert class_name_words("n01440764 tench, Tinca tinca") == "tench tinca tinca"
    assert class_name_words("T-shirt/top") == "t shirt top"
    assert class_name_words("7") == "7"
    with pytest.raises(ValueError):
        class_name_words(" - / ")


def test_shipped_corpus_is_substantial():
    corpus = text.default_corpus()
    assert len(corpus.encode()) > 5000
    words = set(text.normalize_text(corpus).split())
    for name in FASHION + [str(d) for d in range(10)]:
        assert set(class_name_words(name).split()) <= words, name


def test_vectors_shape_norm_distinct_and_deterministic(tmp_path):
    v = label_vectors(FASHION, cache_dir=tmp_path / "a", dim=32)
    assert v.shape == (10, 32) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    sims = v @ v.T
    off = sims[~np.eye(10, dtype=bool)]
    assert off.max() < 0.99  # every class distinguishable
    # related names are closer than unrelated ones
    i = {n: k for k, n in enumerate(FASHION)}
    assert sims[i["T-shirt/top"], i["Shirt"]] > sims[i["T-shirt/top"], i["Sandal"]]
    assert sims[i["Sneaker"], i["Sandal"]] > sims[i["Sneaker"], i["Bag"]]
    v2 = label_vectors(FASHION, cache_dir=tmp_path / "b", dim=32)  # fresh build
    np.testing.assert_array_equal(v, v2)


def test_cache_reuse(tmp_path, monkeypatch):
    v = label_vectors(FASHION[:3], cache_dir=tmp_path, dim=16)
    cached = list(tmp_path.glob("skipgram-*.bin"))
    assert len(cached) == 1

    def boom(*args, **kwargs):
        raise AssertionError("rebuilt despite the cache")

    monkeypatch.setattr(text, "_train_in_subprocess", boom)  # every training attempt goes through it
    np.testing.assert_array_equal(label_vectors(FASHION[:3], cache_dir=tmp_path, dim=16), v)
    with pytest.raises(AssertionError, match="rebuilt"):
        label_vectors(FASHION[:3], cache_dir=tmp_path, dim=16, extra_text="A new text changes the key.")


def test_unseen_words_and_extra_text(tmp_path):
    v = label_vectors(["sneakers", "n01440764 tench, Tinca tinca", "0"], cache_dir=tmp_path, dim=24)
    assert np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    w = label_vectors(["qqqq", "zebra", "Sandal"], cache_dir=tmp_path, dim=24,
                      extra_text="A qqqq is a striped animal of the plains.")
    assert np.isfinite(w).all()


def test_fallback_is_deterministic_across_processes(tmp_path):
    import subprocess
    import sys

    code = ("import sys, numpy as np; from urnet_core.reweight.text import label_vectors; "
            "v = label_vectors(['Coat', 'Bag', 'Sneaker'], cache_dir=sys.argv[1], dim=16); "
            "sys.stdout.write(v.tobytes().hex())")
    outs = [subprocess.run([sys.executable, "-c", code, str(tmp_path / d)], capture_output=True, text=True,
                           check=True).stdout for d in ("p1", "p2")]
    assert outs[0] == outs[1] and len(outs[0]) == 3 * 16 * 4 * 2


def test_fasttext_model_path(tmp_path):
    pytest.importorskip("fasttext")
    # The project's own trainer: a fresh process per attempt, vectors checked before the model
    # is kept (fastText 0.9.3 sometimes returns garbage vectors on a tiny corpus).
    text.train_text_model(text.default_corpus(), cache_dir=tmp_path, dim=16, epoch=5)
    (path,) = tmp_path.glob("skipgram-*.bin")
    v = label_vectors(["n02085620 Chihuahua", "Ankle boot"], model_path=path)
    assert v.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(FileNotFoundError):
        label_vectors(["a"], model_path=tmp_path / "missing.bin")


def test_failed_training_attempts_are_retried(tmp_path, monkeypatch, caplog):
    pytest.importorskip("fasttext")
    real = text._train_in_subprocess
    calls = []

    def flaky(corpus_file, out, **kwargs):
        calls.append(kwargs["lr"])
        if len(calls) == 1:
            return "degenerate word vectors (max |v| 4.3e+27)"
        return real(corpus_file, out, **kwargs)

    monkeypatch.setattr(text, "_train_in_subprocess", flaky)
    with caplog.at_level("WARNING", logger="urnet_core.reweight.text"):
        text.train_text_model(text.default_corpus(), cache_dir=tmp_path / "a", dim=8, epoch=5, lr=0.05)
    assert calls == [0.05, 0.025]
    assert "degenerate" in caplog.text
    assert len(list((tmp_path / "a").glob("skipgram-*.bin"))) == 1
    monkeypatch.setattr(text, "_train_in_subprocess", lambda *a, **k: "diverged: Encountered NaN.")
    with pytest.raises(RuntimeError, match="failed 2 times"):
        text.train_text_model(text.default_corpus(), cache_dir=tmp_path / "b", dim=8, epoch=5, retries=1)
    assert not list((tmp_path / "b").glob("skipgram-*.bin"))  # nothing half-made is cached
