"""Classes the training split cannot teach: none or too few training images.

A class with no training image but test images scores 0 by construction and lowers every
mean over classes (balanced accuracy, macro F1); a class with one or two training images is
learnt from noise, and its per-class noise estimate (class reweighting) is meaningless. The
study would run without a word, so :func:`class_coverage` finds them and
:meth:`ClassCoverage.messages` says them; ``urnet data describe``, ``urnet study``, notebook
00 and the report's data section all read these same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

#: Fewer training images than this is "too few" (cleanlab keeps at least 5 per class for the same reason).
MIN_TRAIN_IMAGES = 5


@dataclass(frozen=True)
class ClassCoverage:
    """Per-class training and test counts and the classes they flag.

    Attributes
    ----------
    class_names : list of str
    train_counts, test_counts : list of int
        Images per class in the training and the evaluation split.
    min_train_images : int
        A class with fewer (but some) training images is flagged as ``few_train``.
    """

    class_names: list[str]
    train_counts: list[int]
    test_counts: list[int]
    min_train_images: int = MIN_TRAIN_IMAGES

    @property
    def no_train(self) -> list[int]:
        """Classes without a training image."""
        return [c for c, n in enumerate(self.train_counts) if n == 0]

    @property
    def test_only(self) -> list[int]:
        """Classes in the test split but absent from training (score 0 by construction)."""
        return [c for c in self.no_train if self.test_counts[c] > 0]

    @property
    def few_train(self) -> list[int]:
        """Classes with some, but fewer than ``min_train_images``, training images."""
        return [c for c, n in enumerate(self.train_counts) if 0 < n < self.min_train_images]

    @property
    def n_flagged(self) -> int:
        """Classes with no or too few training images."""
        return len(self.no_train) + len(self.few_train)

    def messages(self) -> list[str]:
        """One sentence per problem (empty when every class has enough training images)."""
        out = []
        if self.no_train:
            text = f"{_classes(len(self.no_train))} no training image ({self._names(self.no_train)})"
            if self.test_only:
                n = len(self.test_only)
                text += (f"; {n} of them {'is' if n == 1 else 'are'} in the test split "
                         f"({self._names(self.test_only, self.test_counts, 'test images')}) and score 0 by construction, "
                         "lowering every mean over classes")
            out.append(text + ".")
        if self.few_train:
            out.append(f"{_classes(len(self.few_train))} fewer than {self.min_train_images} training images "
                       f"({self._names(self.few_train, self.train_counts, 'images')}): too few to learn the class or to "
                       "estimate its noise.")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The flagged classes by name, JSON-able (the report's data section reads it back)."""
        return {"min_train_images": self.min_train_images, "n_flagged": self.n_flagged,
                "no_train": [self.class_names[c] for c in self.no_train],
                "test_only": [self.class_names[c] for c in self.test_only],
                "few_train": {self.class_names[c]: int(self.train_counts[c]) for c in self.few_train},
                "messages": self.messages()}

    def _names(self, classes: list[int], counts: Sequence[int] | None = None, what: str = "") -> str:
        shown = [self.class_names[c] + (f": {counts[c]}{' ' + what if what else ''}" if counts is not None else "")
                 for c in classes[:10]]
        return ", ".join(shown) + (f" and {len(classes) - 10} more" if len(classes) > 10 else "")


def _classes(n: int) -> str:
    return "1 class has" if n == 1 else f"{n} classes have"


def coverage_from_labels(train_labels: Any, test_labels: Any, class_names: Sequence[str], *,
                         min_train_images: int = MIN_TRAIN_IMAGES) -> ClassCoverage:
    """:class:`ClassCoverage` of observed training labels and test labels (ints in ``[0, C)``)."""
    C = len(class_names)
    arrays = [np.asarray(labels, dtype=np.int64) for labels in (train_labels, test_labels)]
    counts = [np.bincount(a[a >= 0], minlength=C)[:C].tolist() for a in arrays]  # -1: no label
    return ClassCoverage(list(class_names), counts[0], counts[1], min_train_images)


def class_coverage(bundle, *, min_train_images: int = MIN_TRAIN_IMAGES) -> ClassCoverage:
    """:class:`ClassCoverage` of a :class:`~urnet_core.data.manifest.DatasetBundle` (its train
    split against its evaluation split)."""
    return coverage_from_labels(bundle.train["label"].to_numpy(), bundle.test["label"].to_numpy(),
                                bundle.class_names, min_train_images=min_train_images)


def coverage_messages(data: Mapping[str, Any]) -> list[str]:
    """The messages stored by :meth:`ClassCoverage.to_dict` under ``data['class_coverage']``."""
    return list((data.get("class_coverage") or {}).get("messages") or [])
