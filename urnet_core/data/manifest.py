"""YAML dataset manifests and the one entry point that turns a manifest into data.

A manifest names a reader, its root and options, and optionally a ``benchmark:`` section
that turns the reader's clean in-memory data into a web-noisy training set
(:func:`urnet_core.data.webnoise.make_web_noisy`). Example::

    name: digits_web
    reader: digits                  # one of READERS
    options: {test_fraction: 0.4, seed: 0}
    benchmark:                      # make_web_noisy keyword arguments, plus open_set
      imbalance_ratio: 10
      closed_noise: 0.3
      asym_pairs: [[1, 7], [3, 5], [0, 6]]   # or a named set: fashion_mnist | digits
      open_set: {holdout_classes: [8, 9]}    # or: digits | fashion_mnist
    smoke: {max_per_class: 40, max_test: 200}

Top-level keys (:data:`MANIFEST_KEYS`): ``name`` and ``reader`` are required; ``root``
(relative paths resolve against the manifest's folder; ``~`` and ``$VARS`` expand),
``options`` (reader keyword arguments, checked against the reader's signature), ``class_names``, ``description``,
``image_size`` and ``in_channels`` (for file-based data; defaults 224 and 3),
``splits`` (``{test: test|val}``: which split is the evaluation table), ``benchmark`` and
``smoke`` are optional, as is ``allow_outside_root`` (bool, default false): file-based readers
reject file lists and manifests that name files outside the dataset root (``..``, absolute
paths elsewhere, symlinks resolving outside) unless it is true. Unknown or missing keys raise a ValueError naming the file, the
key and its line.

**Smoke scale** (``load_dataset(..., scale="smoke")``) shrinks a dataset for fast runs:
the benchmark's largest class is capped at ``smoke.max_per_class`` (default 50; the long
tail ratio is kept), file-based train splits keep at most that many rows per class
(seeded choice), and the test/val tables keep at most ``smoke.max_test`` rows (default
300, stratified by class, seeded). Everything else is unchanged.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from urnet_core.utils.validation import check_option
from urnet_core.data import readers as R
from urnet_core.data import table as T
from urnet_core.data import webnoise as W
from urnet_core.data._text import read_utf8
from urnet_core.data.reader_options import check_reader_options

logger = logging.getLogger(__name__)

MANIFEST_KEYS = (
    "name", "reader", "root", "options", "class_names", "description",
    "image_size", "in_channels", "splits", "benchmark", "smoke", "allow_outside_root",
)  # fmt: skip
REQUIRED_KEYS = ("name", "reader")
READERS = ("fashion_mnist", "digits", "webvision", "mini_webvision", "clothing1m", "cifar_n", "csv", "imagefolder")
ARRAY_READERS = ("fashion_mnist", "digits", "cifar_n")
SMOKE_KEYS = ("max_per_class", "max_test")
SPLITS_KEYS = ("test",)
NAMED_LOOKALIKES = {"fashion_mnist": W.FASHION_MNIST_LOOKALIKES, "digits": W.DIGITS_LOOKALIKES}
_BENCH_ARGS = tuple(
    p.name for p in inspect.signature(W.make_web_noisy).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
)
BENCHMARK_KEYS = tuple(k for k in _BENCH_ARGS if k not in ("class_names", "open_images")) + ("open_set",)
DEFAULT_SMOKE = {"max_per_class": 50, "max_test": 300}


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest (see the module docstring for the keys)."""

    name: str
    reader: str
    root: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    description: str = ""
    image_size: int | None = None
    in_channels: int | None = None
    splits: dict[str, Any] = field(default_factory=dict)
    benchmark: dict[str, Any] | None = None
    smoke: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    allow_outside_root: bool = False


@dataclass
class DatasetBundle:
    """Everything a study needs from a dataset.

    Attributes
    ----------
    name : str
    train, test : pandas.DataFrame
        Instances tables; ``test`` is the evaluation split (untouched by the benchmark).
    val : pandas.DataFrame or None
        The val split when the data also has a test split that ``test`` holds.
    extra_test : pandas.DataFrame or None
        The test split when ``splits: {test: val}`` made val the evaluation table (e.g.
        ImageNet val for mini-WebVision).
    images : uint8 array (n, H, W[, 3]) or None
        In-memory images; ``image_index`` of ``train``, ``test`` and ``val`` point into it.
    root : Path or None
        Dataset root for file-based data (``path`` is relative to it).
    class_names : list of str
    num_classes, in_channels, image_size : int
    params : dict
        Benchmark parameters actually used (empty without a benchmark).
    manifest : Manifest or None
    """

    name: str
    train: pd.DataFrame
    test: pd.DataFrame
    images: np.ndarray | None
    root: Path | None
    class_names: list[str]
    num_classes: int
    in_channels: int
    image_size: int
    val: pd.DataFrame | None = None
    extra_test: pd.DataFrame | None = None
    params: dict[str, Any] = field(default_factory=dict)
    manifest: Manifest | None = None

    def dataset(self, table: pd.DataFrame, transform: Callable | None = None, **kwargs: Any):
        """An :class:`ArrayImageDataset` or :class:`ImageFileDataset` over ``table``."""
        from urnet_core.data.datasets import ArrayImageDataset, ImageFileDataset

        if self.images is not None:
            return ArrayImageDataset(table, self.images, transform)
        mode = "L" if self.in_channels == 1 else "RGB"
        return ImageFileDataset(table, self.root, transform, mode=kwargs.pop("mode", mode), **kwargs)


# --------------------------------------------------------------------------- parsing


def _key_lines(node: yaml.Node | None) -> dict[str, int]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


def _sub_lines(node: yaml.Node | None, key: str) -> dict[str, int]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    for k, v in node.value:
        if k.value == key:
            return _key_lines(v)
    return {}


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Parse and check a YAML manifest.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Malformed YAML, not a mapping, unknown or missing keys, wrong value types, an
        unknown reader; messages name the file, the key and (when known) its line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    text = read_utf8(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}{where}: malformed YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        raise ValueError(f"{path}: empty manifest; required keys: {list(REQUIRED_KEYS)}")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a manifest must be a YAML mapping, got {type(data).__name__}")
    lines = _key_lines(node)

    def where(key: str, sub: dict[str, int] | None = None) -> str:
        line = (sub or lines).get(key)
        return f"{path}, line {line}" if line else str(path)

    for key in data:
        if key not in MANIFEST_KEYS:
            raise ValueError(f"{where(str(key))}: unknown key {key!r}; allowed keys: {list(MANIFEST_KEYS)}")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise ValueError(f"{path}: missing required key {key!r}")
    for key, kind in (("name", str), ("reader", str), ("description", str), ("root", str), ("image_size", int),
                      ("in_channels", int), ("allow_outside_root", bool)):
        value = data.get(key)
        if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
            raise ValueError(f"{where(key)}: {key!r} must be a {kind.__name__}, got {value!r}")
    if data["reader"] not in READERS:
        raise ValueError(f"{where('reader')}: reader {data['reader']!r} is not valid; choose one of {list(READERS)}")
    sections = {}
    for key, allowed in (("options", None), ("splits", SPLITS_KEYS), ("benchmark", BENCHMARK_KEYS), ("smoke", SMOKE_KEYS)):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ValueError(f"{where(key)}: {key!r} must be a mapping, got {type(value).__name__}")
        sub = _sub_lines(node, key)
        for sub_key in value:
            if allowed is not None and sub_key not in allowed:
                raise ValueError(
                    f"{where(str(sub_key), sub)}: unknown key {key}.{sub_key}; allowed: {list(allowed)}"
                )
        sections[key] = dict(value)
    if "options" in sections:  # against the reader's signature, so a typo names its line
        option_lines = _sub_lines(node, "options")
        check_reader_options(data["reader"], sections["options"], lambda k: where(k, option_lines))
    if "benchmark" in sections and data["reader"] not in ARRAY_READERS:
        raise ValueError(f"{where('benchmark')}: a benchmark needs an in-memory reader {list(ARRAY_READERS)}")
    if data.get("splits", {}) and data["splits"].get("test", "test") not in ("test", "val"):
        raise ValueError(f"{where('splits')}: splits.test must be 'test' or 'val'")
    names = data.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise ValueError(f"{where('class_names')}: class_names must be a list of strings")
    root = data.get("root")
    root_path = None
    if root:
        root_path = Path(os.path.expandvars(os.path.expanduser(root)))
        if not root_path.is_absolute():
            root_path = (path.parent / root_path).resolve()
    return Manifest(
        name=data["name"], reader=data["reader"], root=root_path, options=sections.get("options", {}),
        class_names=names, description=data.get("description") or "", image_size=data.get("image_size"),
        in_channels=data.get("in_channels"), splits=sections.get("splits", {}), benchmark=sections.get("benchmark"),
        smoke={**DEFAULT_SMOKE, **sections.get("smoke", {})}, path=path,
        allow_outside_root=bool(data.get("allow_outside_root") or False),
    )  # fmt: skip


# --------------------------------------------------------------------------- loading


def _need_root(manifest: Manifest) -> Path:
    if manifest.root is None:
        raise ValueError(f"{manifest.path or manifest.name}: reader {manifest.reader!r} needs a 'root'")
    if not manifest.root.exists():
        raise FileNotFoundError(
            f"{manifest.path or manifest.name}: dataset root {manifest.root} does not exist; "
            "edit 'root' in the manifest to point at your copy of the data"
        )
    return manifest.root


def _call(fn: Callable, manifest: Manifest, *args: Any, **extra: Any) -> Any:
    try:
        return fn(*args, **manifest.options, **extra)
    except TypeError as exc:
        if "unexpected keyword" in str(exc) or "got multiple values" in str(exc):
            raise ValueError(f"{manifest.path or manifest.name}: bad reader option for {manifest.reader!r}: {exc}") from None
        raise


def _read_arrays(manifest: Manifest) -> R.ArraySplits:
    if manifest.reader == "fashion_mnist":
        return _call(R.read_fashion_mnist, manifest, manifest.root)
    if manifest.reader == "digits":
        return _call(R.read_digits, manifest)
    # cifar_n: label file + image arrays, all relative to root
    root = _need_root(manifest)
    opts = dict(manifest.options)
    if "cifar_dir" in opts:  # the official python-pickle folder (cifar-10-batches-py / cifar-100-python)
        cifar = R.read_cifar_python(root / opts.pop("cifar_dir"))
        label_file = opts.pop("label_file", None)
        if label_file is None:
            raise ValueError(f"{manifest.path}: reader cifar_n needs option 'label_file'")
        opts.setdefault("class_names", cifar.class_names)
        table, names = R.read_cifar_n(root / label_file, cifar.train_labels, **opts)
        if len(cifar.train_images) != len(table):
            raise ValueError(f"{root / label_file}: {len(table)} labels but {len(cifar.train_images)} CIFAR train images")
        return _noisy_splits(table, cifar.train_images, cifar.test_images, cifar.test_labels, names)
    try:
        label_file, train_npy = opts.pop("label_file"), opts.pop("train_images")
        test_npy, test_labels_npy = opts.pop("test_images"), opts.pop("test_labels")
    except KeyError as exc:
        raise ValueError(f"{manifest.path}: reader cifar_n needs option {exc.args[0]!r}") from None
    table, names = R.read_cifar_n(root / label_file, **opts)
    train_images = np.load(root / train_npy, allow_pickle=False)
    test_images = np.load(root / test_npy, allow_pickle=False)
    test_labels = np.load(root / test_labels_npy, allow_pickle=False).astype(np.int64)
    if len(train_images) != len(table):
        raise ValueError(f"{root / train_npy}: {len(train_images)} images but {len(table)} labels in {label_file}")
    return _noisy_splits(table, train_images, test_images, test_labels, names)


def _noisy_splits(table: pd.DataFrame, train_images: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
                  names: list[str]) -> R.ArraySplits:
    """ArraySplits of human-labelled (CIFAR-N) train images, keeping the ground truth when known."""
    true = table[T.TRUE_LABEL].to_numpy() if T.TRUE_LABEL in table else None
    return R.ArraySplits(train_images, table[T.LABEL].to_numpy(), test_images, test_labels, names,
                         train_true_labels=true, train_source="human")


def _stratified_cap(table: pd.DataFrame, cap: int, seed: int, *, per_class: bool) -> pd.DataFrame:
    """Keep at most ``cap`` rows per class (per_class) or in all (class-stratified); keep order."""
    if per_class:
        keep = table.groupby(T.LABEL, group_keys=False).apply(lambda g: g.sample(n=min(cap, len(g)), random_state=seed))
    else:
        if len(table) <= cap:
            return table
        frac = cap / len(table)
        keep = table.groupby(T.LABEL, group_keys=False).apply(
            lambda g: g.sample(n=max(1, int(round(len(g) * frac))), random_state=seed)
        )
    return table.loc[np.sort(keep.index.to_numpy())].reset_index(drop=True)


def _resolve_benchmark(bench: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    params = dict(bench)
    open_set = params.pop("open_set", None)
    pairs = params.get("asym_pairs")
    if isinstance(pairs, str):
        check_option(pairs, "benchmark.asym_pairs", NAMED_LOOKALIKES)
        params["asym_pairs"] = NAMED_LOOKALIKES[pairs]
    if isinstance(params.get("sources"), dict):
        params["sources"] = {k: dict(v) if isinstance(v, dict) else v for k, v in params["sources"].items()}
    return params, open_set


def _open_images(open_set: Any) -> np.ndarray | None:
    if open_set is None or isinstance(open_set, dict):
        return None
    check_option(open_set, "benchmark.open_set", ("digits", "fashion_mnist"))
    if open_set == "digits":
        d = R.read_digits(size=28)
        return np.concatenate([d.train_images, d.test_images])
    return R.read_fashion_mnist(None).test_images


def load_dataset(manifest: Manifest | str | os.PathLike, *, scale: str | None = None,
                 benchmark_seed: int | None = None) -> DatasetBundle:
    """Run a manifest's reader (and benchmark) and return a :class:`DatasetBundle`.

    Parameters
    ----------
    manifest : Manifest or path
    scale : {None, "smoke"}
        ``"smoke"`` shrinks the data (module docstring).
    benchmark_seed : int, optional
        Draw the benchmark (``benchmark:`` section) with this seed instead of the manifest's
        ``seed``: another instance of the same noisy training set (the test split is unchanged).
        Ignored for manifests without a benchmark.
    """
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    check_option(scale, "scale", (None, "smoke"))
    smoke = scale == "smoke"
    if manifest.reader in ARRAY_READERS:
        bundle = _load_arrays(manifest, smoke, benchmark_seed)
    else:
        bundle = _load_files(manifest, smoke)
    bundle.manifest = manifest
    return bundle


def _load_arrays(manifest: Manifest, smoke: bool, benchmark_seed: int | None = None) -> DatasetBundle:
    data = _read_arrays(manifest)
    names = list(manifest.class_names or data.class_names)
    train_x, train_y, test_x, test_y = data.train_images, data.train_labels, data.test_images, data.test_labels
    params: dict[str, Any] = {}
    bench = manifest.benchmark
    open_images = None
    if bench is not None:
        bench_params, open_set = _resolve_benchmark(bench)
        if benchmark_seed is not None:
            bench_params["seed"] = int(benchmark_seed)
        if isinstance(open_set, dict):
            holdout = open_set.get("holdout_classes")
            if set(open_set) != {"holdout_classes"} or not isinstance(holdout, list) or not holdout:
                raise ValueError(f"{manifest.path}: benchmark.open_set must be 'digits', 'fashion_mnist' or {{holdout_classes: [ids]}}")
            holdout = sorted(int(c) for c in holdout)
            keep = [c for c in range(len(names)) if c not in holdout]
            remap = np.full(len(names), -1)
            remap[keep] = np.arange(len(keep))
            open_images = train_x[np.isin(train_y, holdout)]
            train_x, train_y = train_x[~np.isin(train_y, holdout)], remap[train_y[~np.isin(train_y, holdout)]]
            test_x, test_y = test_x[~np.isin(test_y, holdout)], remap[test_y[~np.isin(test_y, holdout)]]
            names = [names[c] for c in keep]
        else:
            open_images = _open_images(open_set)
        if smoke:
            cap = int(manifest.smoke["max_per_class"])
            bench_params["max_per_class"] = min(cap, bench_params.get("max_per_class") or cap)
        web = W.make_web_noisy(train_x, train_y, class_names=names, open_images=open_images, **bench_params)
        train, train_x, params = web.table, web.images, web.params
    else:
        if data.train_true_labels is None:  # the labels are the truth
            true_y, noise = train_y, "clean"
        else:  # human label noise (CIFAR-N) is closed-set: a "flip", as derived from any true_label
            true_y = data.train_true_labels
            noise = T.derive_noise_type(train_y, true_y)
        train = T.make_table(
            labels=train_y, class_names=names, source=data.train_source, true_label=true_y, noise_type=noise,
            second_label=np.full(len(train_y), -1),
        )  # fmt: skip
        train = T.validate_table(train, num_classes=len(names), source_name=str(manifest.path))
        if smoke:
            train = _stratified_cap(train, int(manifest.smoke["max_per_class"]), 0, per_class=True)
    test = W.make_test_table(test_x, test_y, names, image_offset=len(train_x))
    if smoke:  # keep only the sampled test images so the array shrinks too
        test = _stratified_cap(test, int(manifest.smoke["max_test"]), 0, per_class=False)
        test_x = test_x[test[T.IMAGE_INDEX].to_numpy() - len(train_x)]
        test[T.IMAGE_INDEX] = len(train_x) + np.arange(len(test), dtype=np.int64)
    images = np.concatenate([train_x, test_x])
    return DatasetBundle(
        name=manifest.name, train=train, test=test, images=images, root=None, class_names=names,
        num_classes=len(names), in_channels=1 if images.ndim == 3 else images.shape[3],
        image_size=int(images.shape[1]), params=params,
    )  # fmt: skip


def _load_files(manifest: Manifest, smoke: bool) -> DatasetBundle:
    root = _need_root(manifest)
    reader = manifest.reader
    outside = {"allow_outside_root": manifest.allow_outside_root}  # files outside root: explicit opt-in
    if reader == "webvision":
        table, names = _call(R.read_webvision, manifest, root, **outside)
    elif reader == "mini_webvision":
        table, names = _call(R.read_mini_webvision, manifest, root, **outside)
    elif reader == "clothing1m":
        table, names = _call(R.read_clothing1m, manifest, root, **outside)
    elif reader == "imagefolder":
        table, names = _call(R.read_imagefolder, manifest, root, **outside)
    else:  # csv
        opts = dict(manifest.options)
        csv_path = Path(opts.pop("path", "manifest.csv"))
        table, names = R.read_csv_manifest(root / csv_path, root=root, class_names=manifest.class_names,
                                           **outside, **opts)
    if manifest.class_names is not None and reader != "csv":
        if len(manifest.class_names) != len(names):
            raise ValueError(f"{manifest.path}: class_names has {len(manifest.class_names)} names, data has {len(names)}")
        names = list(manifest.class_names)
        table[T.CLASS_NAME] = np.asarray(names, dtype=object)[table[T.LABEL].to_numpy()]
    splits = {s: table[table[T.SPLIT] == s].reset_index(drop=True) for s in T.SPLITS}
    test_name = manifest.splits.get("test", "test")
    if test_name == "test" and splits["test"].empty:
        test_name = "val"
    test = splits[test_name]
    val = splits["val"] if test_name == "test" and not splits["val"].empty else None
    extra_test = splits["test"] if test_name == "val" and not splits["test"].empty else None
    train = splits["train"]
    if train.empty:
        raise ValueError(f"{manifest.path}: no training rows in {root}")
    if smoke:
        train = _stratified_cap(train, int(manifest.smoke["max_per_class"]), 0, per_class=True)
        test = _stratified_cap(test, int(manifest.smoke["max_test"]), 0, per_class=False) if not test.empty else test
        if val is not None:
            val = _stratified_cap(val, int(manifest.smoke["max_test"]), 0, per_class=False)
        if extra_test is not None:
            extra_test = _stratified_cap(extra_test, int(manifest.smoke["max_test"]), 0, per_class=False)
    return DatasetBundle(
        name=manifest.name, train=train, test=test, val=val, extra_test=extra_test, images=None, root=root, class_names=names,
        num_classes=len(names), in_channels=manifest.in_channels or 3, image_size=manifest.image_size or 224,
    )  # fmt: skip


# --------------------------------------------------------------------------- saved benchmarks


def save_bundle(bundle: DatasetBundle, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``table.parquet`` (train + test [+ val] rows), ``images.npy`` (in-memory data),
    ``class_names.json`` and ``benchmark.json``, each atomically."""
    from urnet_core.utils import io

    out = Path(out_dir)
    tables = [bundle.train, bundle.test] + [t for t in (bundle.val, bundle.extra_test) if t is not None]
    table = pd.concat(tables, ignore_index=True)
    paths = {"table": out / "table.parquet", "class_names": out / "class_names.json", "benchmark": out / "benchmark.json"}
    with io.atomic_path(paths["table"]) as tmp:
        table.to_parquet(tmp, index=False)
    if bundle.images is not None:
        paths["images"] = io.save_npy(out / "images.npy", bundle.images)
    io.write_json(paths["class_names"], bundle.class_names)
    meta = {
        "name": bundle.name, "params": bundle.params, "num_classes": bundle.num_classes,
        "in_channels": bundle.in_channels, "image_size": bundle.image_size,
        "root": str(bundle.root) if bundle.root else None,
        "manifest": dataclasses.asdict(bundle.manifest) if bundle.manifest else None,
        "table_hash": io.stable_hash(table),
    }  # fmt: skip
    io.write_json(paths["benchmark"], meta)
    return paths


def load_bundle(out_dir: str | os.PathLike) -> DatasetBundle:
    """Read back a folder written by :func:`save_bundle` (images memory-mapped)."""
    from urnet_core.utils import io

    folder = Path(out_dir)
    meta = io.read_json(folder / "benchmark.json")
    names = io.read_json(folder / "class_names.json")
    table = T.validate_table(pd.read_parquet(folder / "table.parquet"), num_classes=len(names), source_name=str(folder))
    images = io.load_npy(folder / "images.npy") if (folder / "images.npy").exists() else None
    parts = {s: table[table[T.SPLIT] == s].reset_index(drop=True) for s in T.SPLITS}
    manifest = meta.get("manifest") or {}
    test_name = (manifest.get("splits") or {}).get("test", "test")
    if test_name == "test" and parts["test"].empty:
        test_name = "val"
    other = parts["val" if test_name == "test" else "test"]
    return DatasetBundle(
        name=meta["name"], train=parts["train"], test=parts[test_name],
        val=other if test_name == "test" and not other.empty else None,
        extra_test=other if test_name == "val" and not other.empty else None, images=images,
        root=Path(meta["root"]) if meta.get("root") else None, class_names=list(names), num_classes=len(names),
        in_channels=int(meta["in_channels"]), image_size=int(meta["image_size"]), params=meta.get("params") or {},
    )  # fmt: skip
