"""One configuration for a study: data, training, URNet and run settings, validated once.

A study is described by one frozen :class:`StudyConfig`::

    data:      manifest, scale, text_model_path, init_weights        (DataConfig)
    training:  model, epochs, batch_size, lr, ...                    (TrainConfig)
    urnet:     alpha, class_scheme, n_clusters, top_k, beta, ...     (URNetConfig)
    run:       run_dir, seeds, n_jobs                                (RunConfig)

It loads from YAML or JSON (:func:`load_study_config`), takes dotted overrides
(``urnet.alpha=0.7``, :meth:`StudyConfig.with_overrides`), maps onto the notebooks'
``parameters`` cell (one variable per section, :meth:`StudyConfig.from_notebook`) and onto
``urnet study`` (``--config study.yaml --set urnet.alpha=0.7``). Unknown keys and values of the
wrong type are errors that name the key; a string is never accepted where a bool or a number
is meant. The library reads the sections directly: ``study.urnet`` is the
:class:`~urnet_core.reweight.compose.URNetConfig` that
:func:`~urnet_core.study.pipeline.weight_components` hands to
:func:`~urnet_core.reweight.compose.compose_weights`, ``study.training`` the
:class:`~urnet_core.training.loop.TrainConfig` of every model the study trains (its ``seed``
is replaced by each run's seed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from urnet_core.reweight.compose import URNetConfig
from urnet_core.training.loop import TrainConfig
from urnet_core.utils.typecheck import check_dataclass_types, describe_type, matches_type

logger = logging.getLogger(__name__)

#: The repository holding the notebooks, manifests and reports (relative paths in a notebook
#: resolve against it, whatever folder JupyterLab started the kernel in).
REPO_ROOT = Path(__file__).resolve().parents[1]
SCALES = (None, "smoke")
PROTOCOLS = ("finetune", "scratch")
PROFILES = ("default", "quick", "full", "peers")
#: Seeds of the default study: 8 give a paired 95% interval of about +-0.9 pp where the per-seed
#: spread of a difference is 1.2 pp (t = 2.36); 3 seeds gave +-3 pp.
DEFAULT_SEEDS = tuple(range(8))


@dataclass(frozen=True)
class DataConfig:
    """What the study reads.

    Attributes
    ----------
    manifest : str
        Dataset manifest (YAML): a benchmark built from a labelled dataset, or a real
        WebVision / Clothing1M / CSV / ImageFolder tree.
    scale : {None, 'smoke'}
        ``'smoke'`` shrinks the data to the manifest's tiny smoke subset.
    text_model_path : str or None
        A fastText ``.bin`` for the class-name vectors of instance reweighting; None trains a
        small model on the class descriptions the package ships.
    init_weights : str or None
        A local torchvision state dict that initialises every backbone (nothing is downloaded);
        None trains from scratch.
    """

    manifest: str = "data_manifests/fashion_mnist_web.yaml"
    scale: str | None = None
    text_model_path: str | None = None
    init_weights: str | None = None

    def __post_init__(self) -> None:
        check_dataclass_types(self)
        if self.scale not in SCALES:
            raise ValueError(f"data.scale must be one of {list(SCALES)}, got {self.scale!r}")


@dataclass(frozen=True)
class RunConfig:
    """Where and how often the study runs.

    Attributes
    ----------
    run_dir : str
        Folder of the cached stages (baselines, weights, one folder per trained method).
    seeds : tuple of int
        One trained model per seed for every ablation row.
    n_jobs : int
        Trainings run in parallel (processes).
    draw_per_seed : bool
        For a generated benchmark (a manifest with a ``benchmark:`` section), seed ``s`` also
        draws its own noisy training set (benchmark seed = the manifest's seed + ``s``), so the
        intervals over seeds cover the draw as well as the initialisation. Real data has one
        draw.
    cross_fit_folds : int
        K of the baseline's K-fold cross-fitting: each training row's predictions, features
        and confidence come from a baseline that never trained on it (the cross-fitted rows of
        the ablation, the cleanlab peer, the selection). 2 halves the training set per fold
        model and costs one extra baseline per seed.
    validation_fraction : float
        Share of the training rows (stratified by label, seeded) held out as the noisy
        validation split on which every method's hyperparameters are selected; the test split
        is used for the final numbers only.
    protocol : {'finetune', 'scratch'}
        How every ablation row is trained. ``'finetune'`` (default, the paper's section 5: "the
        baseline model is then adopted to further construct the URNet step by step"): each row
        starts from its seed's trained baseline and trains ``finetune_epochs`` more epochs at
        ``finetune_lr``; the baseline row itself continues with plain cross entropy for the
        same epochs, so every row of a seed shares the initial weights and the batch order
        (common random numbers). ``'scratch'``: every row trains ``training.epochs`` from a
        fresh initialisation.
    finetune_epochs : int
        Epochs of every fine-tuned row (``protocol='finetune'``).
    finetune_lr : float
        Peak learning rate of the fine-tuning (same optimizer and schedule as ``training``).
    selection_seeds : int
        How many of the first seeds select each method's hyperparameters: every candidate
        trains once per selection seed (its own noisy validation split and data draw) and the
        scores are averaged.
    profile : {'default', 'quick', 'full'}
        Which rows the ablation runs: ``'default'`` the ladder, every tuned method and the
        oracle; ``'full'`` adds the secondary rows (each step alone, the cross-fitted ladder,
        the ladder trained from scratch, the peers at their papers' defaults); ``'quick'`` the
        ladder and the tuned methods with 3 candidates each (a first answer in minutes);
        ``'peers'`` the baseline and the tuned peers only (the peer sanity check).
    """

    run_dir: str = "runs/default"
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    n_jobs: int = 2
    draw_per_seed: bool = True
    cross_fit_folds: int = 2
    validation_fraction: float = 0.1
    protocol: str = "finetune"
    finetune_epochs: int = 4
    finetune_lr: float = 0.01
    selection_seeds: int = 2
    profile: str = "default"

    def __post_init__(self) -> None:
        check_dataclass_types(self)
        if not self.seeds:
            raise ValueError("run.seeds must name at least one seed")
        if any(s < 0 for s in self.seeds):
            raise ValueError(f"run.seeds must be >= 0, got {list(self.seeds)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"run.seeds has duplicates: {list(self.seeds)}")
        if self.n_jobs < 1:
            raise ValueError(f"run.n_jobs must be >= 1, got {self.n_jobs}")
        if self.cross_fit_folds < 2:
            raise ValueError(f"run.cross_fit_folds must be >= 2, got {self.cross_fit_folds}")
        if not 0.0 < self.validation_fraction < 0.5:
            raise ValueError(f"run.validation_fraction must lie in (0, 0.5), got {self.validation_fraction}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"run.protocol must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        if self.profile not in PROFILES:
            raise ValueError(f"run.profile must be one of {list(PROFILES)}, got {self.profile!r}")
        if self.finetune_epochs < 1:
            raise ValueError(f"run.finetune_epochs must be >= 1, got {self.finetune_epochs}")
        if not self.finetune_lr > 0:
            raise ValueError(f"run.finetune_lr must be > 0, got {self.finetune_lr}")
        if self.selection_seeds < 1:
            raise ValueError(f"run.selection_seeds must be >= 1, got {self.selection_seeds}")

    @property
    def selecting_seeds(self) -> tuple[int, ...]:
        """The seeds on which hyperparameters are selected (the first ``selection_seeds``)."""
        return tuple(self.seeds[: self.selection_seeds])


#: The study's training defaults (every model: baseline, ladder rungs, peers).
STUDY_TRAINING = TrainConfig(epochs=12)

SECTIONS: dict[str, type] = {"data": DataConfig, "training": TrainConfig, "urnet": URNetConfig, "run": RunConfig}

#: Flat names of the first notebooks' parameters cell, still accepted (with a warning).
LEGACY_NAMES = {
    "manifest": "data.manifest", "scale": "data.scale", "text_model_path": "data.text_model_path",
    "weights_path": "data.init_weights", "run_dir": "run.run_dir", "seeds": "run.seeds", "n_jobs": "run.n_jobs",
    "model": "training.model", "epochs": "training.epochs", "batch_size": "training.batch_size",
    "lr": "training.lr", "weight_decay": "training.weight_decay", "kmeans_backend": "urnet.kmeans_backend",
    "top_r": "urnet.top_r",
}


@dataclass(frozen=True)
class StudyConfig:
    """Everything a study run depends on; see the module docstring for the shape."""

    data: DataConfig = field(default_factory=DataConfig)
    training: TrainConfig = STUDY_TRAINING
    urnet: URNetConfig = field(default_factory=URNetConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, *, source: str = "study config",
                  base: "StudyConfig | None" = None) -> "StudyConfig":
        """Build from a nested mapping ``{section: {key: value}}`` over ``base`` (default: defaults).

        Unknown sections or keys and wrongly typed values raise ``ValueError`` naming
        ``source`` and the dotted key.
        """
        config = base if base is not None else cls()
        if values is None:
            return config
        if not isinstance(values, Mapping):
            raise ValueError(f"{source}: expected a mapping of sections {list(SECTIONS)}, got {type(values).__name__}")
        unknown = sorted(set(values) - set(SECTIONS))
        if unknown:
            raise ValueError(f"{source}: unknown section(s) {unknown}; valid sections are {list(SECTIONS)}")
        updates = {}
        for name, section_values in values.items():
            if section_values is None:
                continue
            updates[name] = _replace_section(getattr(config, name), section_values, source, name)
        return dataclasses.replace(config, **updates)

    def with_overrides(self, assignments: Mapping[str, Any] | list[str] | None, *,
                       source: str = "override") -> "StudyConfig":
        """Apply dotted overrides: ``{"urnet.alpha": 0.7}`` or ``["urnet.alpha=0.7"]``.

        In the ``KEY=VALUE`` form the value is read as YAML (``0.7`` a number, ``true`` a
        bool, ``[0, 1]`` a list, ``null`` None), so the type checks still apply.
        """
        if not assignments:
            return self
        if not isinstance(assignments, Mapping):
            parsed = {}
            for item in assignments:
                if "=" not in item:
                    raise ValueError(f"{source}: expected SECTION.KEY=VALUE, got {item!r}")
                key, raw = item.split("=", 1)
                parsed[key.strip()] = _parse_value(raw, f"{source} {key.strip()}")
            assignments = parsed
        nested: dict[str, dict[str, Any]] = {}
        for dotted, value in assignments.items():
            section, _, key = dotted.partition(".")
            if not key:
                raise ValueError(f"{source}: {dotted!r} must be SECTION.KEY with a section of {list(SECTIONS)}")
            nested.setdefault(section, {})[key] = value
        return StudyConfig.from_dict(nested, source=source, base=self)

    @classmethod
    def from_notebook(cls, namespace: Mapping[str, Any]) -> "StudyConfig":
        """The config a notebook's ``parameters`` cell describes (``globals()`` of the notebook).

        Reads ``config`` (a YAML/JSON path or None) and one variable per section
        (``data``, ``training``, ``urnet``, ``run``: a dict, or a JSON/YAML string as papermill
        ``-p`` passes it), plus the first notebooks' flat names (``epochs``, ``seeds``, ...;
        deprecated). A name papermill injected that is none of these is an error, so a typo
        fails before any work. Relative paths resolve against the repository.
        """
        injected = _papermill_injected_names(namespace)
        allowed = {"config", *SECTIONS, *LEGACY_NAMES}
        unknown = sorted(injected - allowed)
        if unknown:
            raise ValueError(f"unknown notebook parameter(s) {unknown}; valid parameters are "
                             f"['config', {', '.join(repr(s) for s in SECTIONS)}] (flat names of older "
                             f"notebooks: {sorted(LEGACY_NAMES)})")
        path = namespace.get("config")
        config = load_study_config(_resolve(path, REPO_ROOT)) if path else cls()
        nested = {}
        for name in SECTIONS:
            value = namespace.get(name)
            if isinstance(value, str):
                value = _parse_value(value, f"notebook parameter {name}")
            if value not in (None, {}):
                nested[name] = value
        config = cls.from_dict(nested, source="notebook parameters", base=config)
        legacy = {LEGACY_NAMES[k]: _legacy_value(namespace[k]) for k in LEGACY_NAMES if k in injected}
        if legacy:
            logger.warning("flat notebook parameters %s are deprecated: pass them in their section, e.g. "
                           "-p training '{\"epochs\": 5}'", sorted(k for k in LEGACY_NAMES if k in injected))
            config = config.with_overrides(legacy, source="notebook parameters")
        return config.resolve_paths(REPO_ROOT)

    # ------------------------------------------------------------------ views
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-able nested dict (tuples as lists): loads back with :meth:`from_dict`."""
        return json.loads(json.dumps({name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}))

    def notebook_parameters(self) -> dict[str, Any]:
        """The values of a notebook's ``parameters`` cell that reproduce this config."""
        return self.to_dict()

    def resolve_paths(self, base: str | os.PathLike) -> "StudyConfig":
        """Relative paths of the data and run sections made absolute against ``base``."""
        base = Path(base)
        data = dataclasses.replace(self.data, manifest=_resolve(self.data.manifest, base),
                                   text_model_path=_resolve(self.data.text_model_path, base),
                                   init_weights=_resolve(self.data.init_weights, base))
        run = dataclasses.replace(self.run, run_dir=_resolve(self.run.run_dir, base))
        return dataclasses.replace(self, data=data, run=run)

    def train_config(self, seed: int, **overrides: Any) -> TrainConfig:
        """The training config of one model: ``training`` with ``seed`` (evaluated once, at the end)."""
        config = dataclasses.replace(self.training, seed=seed, **overrides)
        return dataclasses.replace(config, eval_every=config.epochs)

    def row_config(self, seed: int, *, protocol: str | None = None, **overrides: Any) -> TrainConfig:
        """The training config of one ablation row under ``protocol`` (default ``run.protocol``):
        fine-tuning rows train ``run.finetune_epochs`` at ``run.finetune_lr``."""
        if (protocol or self.run.protocol) == "finetune":
            overrides = {"epochs": self.run.finetune_epochs, "lr": self.run.finetune_lr, **overrides}
        return self.train_config(seed, **overrides)


# ---------------------------------------------------------------------- loading
def load_study_config(path: str | os.PathLike) -> StudyConfig:
    """Read a :class:`StudyConfig` from YAML or JSON (sections as top-level keys)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study config not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    else:
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: malformed YAML: {exc}") from None
    return StudyConfig.from_dict(values or {}, source=str(path))


def _replace_section(section: Any, values: Any, source: str, name: str) -> Any:
    """``section`` with ``values`` replaced; every error reads ``SOURCE: NAME.KEY ...`` (once)."""
    where = f"{source}: {name}"
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping of keys, got {type(values).__name__} {values!r}")
    known = {f.name: f for f in dataclasses.fields(section)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(known)}")
    hints = typing.get_type_hints(type(section))
    coerced = {}
    for key, value in values.items():
        if isinstance(value, list) and typing.get_origin(hints[key]) is tuple:
            value = tuple(value)  # YAML/JSON lists stand for tuples
        if not matches_type(value, hints[key]):
            given = values[key]  # as the user wrote it (a list, not the tuple it stands for)
            raise ValueError(f"{where}.{key} must be {describe_type(hints[key])}, got {type(given).__name__} {given!r}")
        coerced[key] = value
    try:
        return dataclasses.replace(section, **coerced)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {_dotted_message(str(exc), name, known)}") from None


def _dotted_message(message: str, name: str, fields: Mapping[str, Any]) -> str:
    """A section's own check message with its key dotted once: ``run.n_jobs must ...`` stays,
    ``alpha must ...`` becomes ``urnet.alpha must ...``, anything else is ``urnet: ...``."""
    if message.startswith(f"{name}."):
        return message
    first = message.split(" ", 1)[0]
    if first in fields:
        return f"{name}.{message}"
    if message.startswith("field '"):  # the type check's wording: field 'alpha' must be ...
        key = message[len("field '"):].split("'", 1)[0]
        if key in fields:
            return f"{name}.{key}{message[len('field ') + len(key) + 2:]}"
    return f"{name}: {message}"


def _parse_value(raw: str, where: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: cannot read {raw!r} as YAML/JSON: {exc}") from None


def _legacy_value(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    p = Path(os.path.expanduser(str(path)))
    return str(p if p.is_absolute() else (base / p).resolve())


def _papermill_injected_names(namespace: Mapping[str, Any]) -> set[str]:
    """Names assigned by papermill's injected ``# Parameters`` cell (empty outside papermill)."""
    import ast

    names: set[str] = set()
    for source in namespace.get("In", []) or []:
        if not isinstance(source, str) or not source.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names
