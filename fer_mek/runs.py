"""The run folder: what a training run leaves behind, and how training, evaluation and publishing read it.

One place for the contract between :mod:`fer_mek.train` (which writes a run), :mod:`fer_mek.evaluation` (which
re-evaluates its models on the run's own split) and :mod:`fer_mek.publish` (which uploads it)::

    RUN/
        best/, last/             save_pretrained folders (the checkpoint chosen on validation; the final weights)
        checkpoint/              state for --resume (fer_mek.train.checkpoint)
        results.json             metrics, class counts, settings, environment (schema: RESULTS_SCHEMA_VERSION)
        train_config.yaml        the resolved training configuration
        confusion_matrix.png     test confusion matrix of the chosen checkpoint
        training_curves.png      losses and validation metrics per epoch
        logs/                    tracker logs

:class:`DataOptions` holds the options that rebuild a run's exact train / validation / test split; every reader of a
run gets them from here. Importing this module imports neither torch nor the data stack.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_mek_cli.defaults import BEST, LAST  # a run's two model folders (one place: the command lines show them)

# conversion.json (beside the weights of a converted checkpoint) is written by fer_mek.convert, which must not import
# this module (it reaches the data stack); its name and writer live in fer_mek.published and are part of this contract.
from .published import CONVERSION, CONVERSION_SCHEMA_VERSION, write_conversion

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import datasets

__all__ = [
    "BEST",
    "CHECKPOINT",
    "CONFUSION_MATRIX",
    "CONVERSION",
    "CONVERSION_SCHEMA_VERSION",
    "LAST",
    "LOGS",
    "METRIC_KEYS",
    "MODEL_FILES",
    "RESULTS",
    "RESULTS_SCHEMA_VERSION",
    "TRAINING_CURVES",
    "TRAIN_CONFIG",
    "DataOptions",
    "Run",
    "RunError",
    "load_run",
    "read_conversion",
    "read_results",
    "read_train_config",
    "run_config_of_model",
    "weights_digest",
    "write_conversion",
    "write_results",
    "write_train_config",
]

CHECKPOINT = "checkpoint"
RESULTS = "results.json"
TRAIN_CONFIG = "train_config.yaml"
CONFUSION_MATRIX = "confusion_matrix.png"
TRAINING_CURVES = "training_curves.png"
LOGS = "logs"
#: Version of the ``results.json`` layout written by :func:`write_results`; files without the key are version 1.
RESULTS_SCHEMA_VERSION = 1
#: Keys every metrics section (``validation``, ``test``) of ``results.json`` holds (:func:`fer_mek.metrics.compute_metrics`).
METRIC_KEYS: tuple[str, ...] = ("accuracy", "mean_class_accuracy", "macro_f1", "per_class_recall", "confusion_matrix",
                                "num_samples")
#: Metadata files of a saved model folder besides the weights (``*.safetensors``) and the remote code (``*.py``).
MODEL_FILES: tuple[str, ...] = ("config.json", "preprocessor_config.json")


class RunError(ValueError):
    """A run folder is missing, incomplete or inconsistent; the message says which file and how to fix it."""


# ----------------------------------------------------------------------------------------------- results.json
def write_results(run_dir: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Write ``results.json`` of a run (atomically), stamped with :data:`RESULTS_SCHEMA_VERSION`."""
    from .io import atomic_write_text

    stamped = {"schema_version": RESULTS_SCHEMA_VERSION, **results}
    return atomic_write_text(Path(run_dir) / RESULTS, json.dumps(stamped, indent=2, default=str))


def check_results(results: Any, path: str | os.PathLike) -> dict[str, Any]:
    """``results`` if it has the layout of :func:`write_results`; otherwise :class:`RunError` naming ``path``."""
    if not isinstance(results, dict):
        raise RunError(f"{path} is not a results object (a JSON mapping); re-run the training's evaluation")
    version = results.get("schema_version", 1)
    if not isinstance(version, int) or version > RESULTS_SCHEMA_VERSION:
        raise RunError(f"{path} has results schema version {version!r}; this fer-mek reads up to "
                       f"{RESULTS_SCHEMA_VERSION}: upgrade fer-mek")
    for split in ("test", "validation"):
        metrics = results.get(split)
        if metrics is None:
            continue
        missing = [key for key in METRIC_KEYS if key not in metrics]
        if missing:
            raise RunError(f"{path}: {split} lacks {missing}; it was not written by fer-mek's trainer "
                           "(re-run the evaluation, or publish with --allow-no-results)")
    return results


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a ``results.json`` (a file, or a run folder that holds one)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} does not exist; the run did not finish its evaluation") from None
    except json.JSONDecodeError as error:
        raise RunError(f"{path} is not valid JSON ({error}); re-run the training's evaluation") from error
    return check_results(results, path)


# ------------------------------------------------------------------------------------------- conversion.json
def read_conversion(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``conversion.json`` of a model folder (:data:`CONVERSION`, written by :func:`write_conversion` when a
    checkpoint is converted), or ``None`` when it has none (a trained model).

    Raises:
        RunError: the file is not valid JSON, not a record with a ``source``, or of a newer schema.
    """
    path = Path(model_dir) / CONVERSION
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunError(f"{path} is not valid JSON ({error}); convert the checkpoint again") from error
    if not isinstance(record, dict) or not isinstance(record.get("source"), dict):
        raise RunError(f"{path} is not a conversion record (no source); convert the checkpoint again")
    version = record.get("schema_version", 1)
    if not isinstance(version, int) or version > CONVERSION_SCHEMA_VERSION:
        raise RunError(f"{path} has conversion schema version {version!r}; this fer-mek reads up to "
                       f"{CONVERSION_SCHEMA_VERSION}: upgrade fer-mek")
    return record


# ------------------------------------------------------------------------------------------ train_config.yaml
def write_train_config(run_dir: str | os.PathLike, values: Mapping[str, Any]) -> Path:
    """Write the resolved training configuration of a run as ``train_config.yaml`` (keys in the given order)."""
    import yaml

    from .io import atomic_write_text

    return atomic_write_text(Path(run_dir) / TRAIN_CONFIG, yaml.safe_dump(dict(values), sort_keys=False))


def read_train_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``train_config.yaml`` of a run folder as a mapping (``RunError`` when it is missing or not a mapping)."""
    import yaml

    path = Path(run_dir) / TRAIN_CONFIG
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} does not exist: {run_dir} is not a training run folder") from None
    except yaml.YAMLError as error:
        raise RunError(f"{path} is not valid YAML ({error}); it was not written by fer-mek's trainer") from error
    if values is None:
        raise RunError(f"{path} is empty (a write that did not finish?); restore it, or start the run again")
    if not isinstance(values, dict):
        raise RunError(f"{path} is not a mapping of option: value; it was not written by fer-mek's trainer")
    return values


def run_config_of_model(model: str | os.PathLike) -> dict[str, Any] | None:
    """The training configuration of the run that a model folder belongs to (``RUN/best`` or ``RUN/last``), or
    ``None`` when ``model`` is not a folder inside a run (a bare folder, a Hub id)."""
    folder = Path(model).expanduser()
    if not folder.is_dir() or not (folder.parent / TRAIN_CONFIG).is_file():
        return None
    return read_train_config(folder.parent)


# ------------------------------------------------------------------------------------------------ the split
@dataclass(frozen=True)
class DataOptions:
    """The data options of a run: everything that decides its train / validation / test split.

    Field names are those of the training configuration (``train_config.yaml``, ``results["config"]``), so
    :meth:`from_config` reads either. ``None`` for a synthetic-set option means the synthetic set's default
    (:data:`fer_mek.data.synthetic.SYNTHETIC_NUM_IMAGES`, :data:`~fer_mek.data.synthetic.SYNTHETIC_IMAGE_SIZE`).

    Attributes:
        source: ``synthetic``, ``rafdb``, ``fer2013``, ``folder`` or ``hub``.
        data_root: The dataset's file, folder or Hub id (``None`` for ``synthetic``).
        val_fraction: Fraction of train held out for validation (ignored with ``val_split="none"``).
        split_seed: Seed of the train / validation split.
        synthetic_images: Synthetic set: number of images over the three splits.
        synthetic_image_size: Synthetic set: side of the drawn images.
        skip_bad: Skip unreadable items instead of stopping.
        val_split: How validation is made from train: ``stratified`` (default), ``permutation`` (MEK-CV's plain
            NumPy permutation with ``split_seed``) or ``none`` (no validation split); see
            :data:`fer_mek.data.VAL_SPLITS`. Configurations written before the option read as ``stratified``.
        fer2013_test: FER-2013's test set: ``PrivateTest`` (default), ``PublicTest`` or ``PublicTest+PrivateTest``
            (the 7,178 images of the image-folder release's ``test/``). The CSV gives each; the folder layout only
            its ``test/`` folder (the default or ``PublicTest+PrivateTest``). Other sources: the default only.
        fer2013_val: FER-2013's CSV: validate on this ``Usage`` (``PrivateTest`` or ``PublicTest``) instead of a part
            of train, which then keeps every ``Training`` row (both FER-2013 single-network sources: validation =
            PrivateTest, test = PublicTest); ``""`` (default): validation comes from train by ``val_split``.
    """

    source: str = "synthetic"
    data_root: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    synthetic_images: int | None = None
    synthetic_image_size: int | None = None
    skip_bad: bool = False
    val_split: str = "stratified"
    fer2013_test: str = "PrivateTest"
    fer2013_val: str = ""

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None) -> DataOptions:
        """The options found in a training configuration mapping; missing keys keep their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in (values or {}).items() if key in names})

    def replace(self, **changes: Any) -> DataOptions:
        """A copy with ``changes`` applied; ``None`` values leave a field as it is (command-line defaults)."""
        return dataclasses.replace(self, **{key: value for key, value in changes.items() if value is not None})

    def loader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`fer_mek.data.load_source` (besides ``source`` and ``root``).

        Raises:
            ValueError: ``fer2013_test`` other than the default for a source other than ``fer2013``.
        """
        kwargs: dict[str, Any] = {"val_fraction": self.val_fraction, "seed": self.split_seed}
        if self.val_split != "stratified":  # the default is every loader's own
            kwargs["val_split"] = self.val_split
        if self.source == "synthetic":
            kwargs.update(num_images=self.synthetic_images, image_size=self.synthetic_image_size)
        else:
            kwargs["skip_bad"] = self.skip_bad
        if self.fer2013_test != "PrivateTest":
            if self.source != "fer2013":
                raise ValueError(f"fer2013_test={self.fer2013_test!r} applies to source 'fer2013' only, not "
                                 f"{self.source!r}; leave it at 'PrivateTest'")
            # The default is left to the loader: PrivateTest for the CSV, the test/ folder for the folder layout.
            kwargs["test_split"] = self.fer2013_test
        return kwargs

    def load(self, **extra: Any) -> datasets.DatasetDict:
        """The run's ``DatasetDict``, split exactly as in training (``extra``: more loader options, e.g. ``cache``)."""
        from .data import load_source

        if self.source != "synthetic" and not self.data_root:
            raise RunError(f"source {self.source!r} needs a data root (--data-root: the dataset's file, folder or "
                           "Hub id)")
        if self.fer2013_val:
            if self.source != "fer2013":
                raise ValueError(f"fer2013_val={self.fer2013_val!r} applies to source 'fer2013' only, not "
                                 f"{self.source!r}; leave it empty")
            # Train keeps every Training row; validation is that Usage of the CSV, loaded as a test set.
            whole = dataclasses.replace(self, val_split="none", fer2013_val="")
            dataset = whole.load(**extra)
            dataset["validation"] = dataclasses.replace(whole, fer2013_test=self.fer2013_val).load(**extra)["test"]
            return dataset
        return load_source(self.source, self.data_root, **self.loader_kwargs(), **extra)


# ------------------------------------------------------------------------------------------------ a finished run
@dataclass
class Run:
    """A training run (or a bare ``save_pretrained`` folder) and what it says about the weights it holds.

    Attributes:
        path: The run folder (or the bare model folder).
        model_dir: The ``save_pretrained`` folder of the chosen weights (``path/best`` by default).
        checkpoint: ``"best"``/``"last"``, or ``None`` when ``path`` itself is the model folder.
        results: The parsed ``results.json``, or ``None`` when the run has none.
        config: The model's ``config.json``.
        test_results_apply: Whether ``results["test"]`` evaluates exactly these weights.
        no_test_reason: Why there are no applicable test results (``None`` when there are).
    """

    path: Path
    model_dir: Path
    checkpoint: str | None
    results: dict[str, Any] | None
    config: dict[str, Any]
    test_results_apply: bool
    no_test_reason: str | None

    @property
    def name(self) -> str:
        """The run's name: ``results["run"]``, else the folder name."""
        if self.results and self.results.get("run"):
            return str(self.results["run"])
        return self.path.resolve().name

    @property
    def label_names(self) -> list[str]:
        """Class names in index order, from ``config.json``'s ``id2label``."""
        id2label = self.config.get("id2label") or {}
        return [str(id2label[key]) for key in sorted(id2label, key=int)]

    @property
    def test(self) -> dict[str, Any] | None:
        """The test metrics of these weights, or ``None``."""
        return self.results.get("test") if self.results and self.test_results_apply else None

    @property
    def validation(self) -> dict[str, Any] | None:
        """The validation metrics of these weights, or ``None``."""
        return self.results.get("validation") if self.results and self.test_results_apply else None

    @property
    def data_options(self) -> DataOptions | None:
        """The options that rebuild the run's split (from ``results["config"]``); ``None`` when the run records none."""
        config = (self.results or {}).get("config")
        return DataOptions.from_config(config) if config else None


def weights_digest(folder: str | os.PathLike) -> str:
    """SHA-256 over the ``*.safetensors`` files of a model folder (in name order)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_run(run_dir: str | os.PathLike, checkpoint: str = BEST) -> Run:
    """Find the weights and results of a run folder.

    Args:
        run_dir: The ``--output-dir`` of a training run, or a bare ``save_pretrained`` folder.
        checkpoint: ``"best"`` (the checkpoint chosen on validation and evaluated on test) or ``"last"``.

    Returns:
        The :class:`Run`. Its test results apply when ``results.json`` has a ``test`` section evaluating these very
        weights (the selected checkpoint, or another one with byte-identical weights).

    Raises:
        RunError: The folder is missing, holds no model, or its ``results.json`` is malformed or disagrees with the
            model's class names.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"run folder {path} does not exist; pass the --output-dir of a training run "
                       "(accelerate launch scripts/train.py), e.g. --run runs/rafdb-resnet18-imagenet")
    if checkpoint not in (BEST, LAST):
        raise RunError(f"--checkpoint must be {BEST!r} or {LAST!r}, got {checkpoint!r}")
    if (path / checkpoint / "config.json").is_file():
        model_dir, chosen = path / checkpoint, checkpoint
    elif (path / "config.json").is_file():
        model_dir, chosen = path, None
    else:
        found = sorted(p.name for p in path.iterdir())[:12]
        hint = (" The run has no finished epoch yet (interrupted?): resume it with `scripts/train.py --resume`."
                if (path / CHECKPOINT).is_dir() else "")
        raise RunError(f"{path} has no {checkpoint}/config.json (found {found}); pass a training run folder "
                       f"with best/ and last/, or a save_pretrained folder.{hint}")
    if not any(model_dir.glob("*.safetensors")):
        raise RunError(f"{model_dir} has no model.safetensors; save the model with save_pretrained first")
    for name in MODEL_FILES:
        if not (model_dir / name).is_file():
            raise RunError(f"{model_dir} has no {name}; re-save it with MEKForImageClassification.save_pretrained "
                           "(it writes the config, the image processor and the remote code)")
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunError(f"{model_dir / 'config.json'} is not valid JSON ({error})") from error

    results: dict[str, Any] | None = None
    results_path = path / RESULTS
    if chosen is not None and results_path.is_file():
        try:
            results = read_results(results_path)
        except RunError as error:
            raise RunError(f"{error} (or pass --allow-no-results)") from error

    run = Run(path=path, model_dir=model_dir, checkpoint=chosen, results=results, config=config,
              test_results_apply=False, no_test_reason=None)
    if results is not None:
        names = [str(n) for n in results.get("label_names") or []]
        if names and names != run.label_names:
            raise RunError(f"{results_path} lists classes {names} but {model_dir / 'config.json'} has "
                           f"id2label {run.label_names}: the results belong to another model")
    if results is None:
        run.no_test_reason = (f"{path} is a bare model folder without {RESULTS}" if chosen is None
                              else f"{path} has no {RESULTS} (the run did not finish its evaluation)")
    elif not results.get("test"):
        run.no_test_reason = f"{results_path} has no test results"
    else:
        evaluated = (results.get("selection") or {}).get("checkpoint", BEST)
        if evaluated == chosen or weights_digest(path / evaluated) == weights_digest(model_dir):
            run.test_results_apply = True
        else:
            run.no_test_reason = (f"{results_path} evaluates the {evaluated!r} checkpoint, not {chosen!r} "
                                  "(different weights)")
    return run
