"""Publish a training run as a Hugging Face Hub model repository: assemble, verify, upload.

A run folder written by ``scripts/train.py`` becomes a folder that anyone can load with
``AutoModelForImageClassification.from_pretrained(repo_id)`` (with ``fer_mek`` installed) or with
``trust_remote_code=True`` (without it)::

    model.safetensors, config.json (auto_map + id2label), preprocessor_config.json,
    configuration_mek.py, modeling_mek.py, image_processing_mek.py, losses.py, labels.py,
    README.md (the model card), confusion_matrix.png, training_curves.png, results.json

The card is ``MODEL_CARD.md`` (the human-written part, at the root of the repository) with its
``<!-- fer-mek:NAME -->`` markers filled from the run's ``results.json``; its metadata (licence, tags, datasets, base
model, ``model-index``) is built with huggingface_hub's ``ModelCardData`` and ``EvalResult``.

Before anything is written or uploaded, the assembled folder is verified: reloaded with the package (Auto classes and
pipeline) and, in a subprocess where ``fer_mek`` cannot be imported, with ``trust_remote_code=True``; its logits on a
few validation images must equal those of the run's own checkpoint. Upload is ``create_repo(exist_ok=True)`` and one
``create_commit``. The token comes from huggingface_hub's usual sources (``HF_TOKEN``, ``hf auth login``); this
module never reads, prints or writes it.

Entry point: :func:`publish` (``scripts/push.py`` is its command line). Importing this module has no side effect.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from huggingface_hub import CommitInfo, ModelCard, ModelCardData
    from PIL import Image

__all__ = [
    "CARD_MARKERS",
    "PublishError",
    "PublishResult",
    "Run",
    "VerificationError",
    "VerificationReport",
    "assemble",
    "build_card",
    "build_card_data",
    "default_card_template",
    "describe_dataset",
    "fill_template",
    "load_run",
    "publish",
    "upload",
    "validate_repo_id",
    "verification_images",
    "verify_folder",
]

#: The markers of ``MODEL_CARD.md`` that the generator fills, in the order they appear.
CARD_MARKERS: tuple[str, ...] = (
    "synthetic-notice",
    "model-summary",
    "dataset",
    "results",
    "confusion-matrix",
    "labels",
    "training",
    "usage",
    "citation",
)
#: Metadata files of a saved model folder that are published (weights and ``*.py`` code are found by pattern).
MODEL_FILES: tuple[str, ...] = ("config.json", "preprocessor_config.json")
#: The ``auto_map`` entries that both loading paths need.
REQUIRED_AUTO_MAP: tuple[str, ...] = ("AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoImageProcessor")
#: Verification: largest allowed difference between the published folder's logits and the run's (float32 round-off).
LOGITS_ATOL = 1e-5
LOGITS_RTOL = 1e-5
#: Number of validation images the verification runs on.
NUM_VERIFY_IMAGES = 8

PAPER_URL = "https://arxiv.org/abs/2310.19636"
MEK_BIBTEX = """\
@inproceedings{zhang2023leave,
  title     = {Leave No Stone Unturned: Mine Extra Knowledge for Imbalanced Facial Expression Recognition},
  author    = {Zhang, Yuhang and Li, Yaqi and Qin, Lixiong and Liu, Xuannan and Deng, Weihong},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2023}
}"""
RAFDB_BIBTEX = """\
@inproceedings{li2017reliable,
  title     = {Reliable Crowdsourcing and Deep Locality-Preserving Learning for Expression Recognition in the Wild},
  author    = {Li, Shan and Deng, Weihong and Du, JunPing},
  booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {2852--2861},
  year      = {2017}
}"""
FER2013_BIBTEX = """\
@inproceedings{goodfellow2013challenges,
  title     = {Challenges in Representation Learning: A Report on Three Machine Learning Contests},
  author    = {Goodfellow, Ian J. and Erhan, Dumitru and Carrier, Pierre Luc and Courville, Aaron and Mirza, Mehdi
               and others},
  booktitle = {Neural Information Processing (ICONIP 2013)},
  series    = {Lecture Notes in Computer Science},
  volume    = {8228},
  pages     = {117--124},
  year      = {2013}
}"""
RAFDB_URL = "http://www.whdeng.cn/RAF/model1.html"
FER2013_URL = "https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge"
TASK_NAME = "Facial expression recognition"


class PublishError(Exception):
    """A run cannot be published as asked; the message says why and how to fix it."""


class VerificationError(PublishError):
    """The assembled folder does not reproduce the run's model; nothing is written or uploaded."""


# ---------------------------------------------------------------------------------------------------------- the run
@dataclass
class Run:
    """A training run (or a bare ``save_pretrained`` folder) and what it says about the weights to publish.

    Attributes:
        path: The run folder given on the command line.
        model_dir: The ``save_pretrained`` folder whose weights are published (``path/best`` by default).
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


def _weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _check_results_schema(results: Any, path: Path) -> None:
    if not isinstance(results, dict):
        raise PublishError(f"{path} is not a results object (a JSON mapping); re-run the training's evaluation")
    for split in ("test", "validation"):
        metrics = results.get(split)
        if metrics is None:
            continue
        missing = [key for key in ("accuracy", "mean_class_accuracy", "macro_f1", "per_class_recall",
                                   "confusion_matrix", "num_samples") if key not in metrics]
        if missing:
            raise PublishError(f"{path}: {split} lacks {missing}; it was not written by scripts/train.py "
                               "(re-run the evaluation, or pass --allow-no-results to publish without results)")


def load_run(run_dir: str | os.PathLike, checkpoint: str = "best") -> Run:
    """Find the weights and results of a run folder.

    Args:
        run_dir: The ``--output-dir`` of ``scripts/train.py``, or a bare ``save_pretrained`` folder.
        checkpoint: ``"best"`` (the checkpoint chosen on validation and evaluated on test) or ``"last"``.

    Returns:
        The :class:`Run`. Its test results apply when ``results.json`` has a ``test`` section evaluating these very
        weights (the selected checkpoint, or another one with byte-identical weights).

    Raises:
        PublishError: The folder is missing, holds no model, or its ``results.json`` is malformed or disagrees with
            the model's class names.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise PublishError(f"run folder {path} does not exist; pass the --output-dir of a training run "
                           "(scripts/train.py), e.g. --run runs/rafdb-resnet18-imagenet")
    if checkpoint not in ("best", "last"):
        raise PublishError(f"--checkpoint must be 'best' or 'last', got {checkpoint!r}")
    if (path / checkpoint / "config.json").is_file():
        model_dir, chosen = path / checkpoint, checkpoint
    elif (path / "config.json").is_file():
        model_dir, chosen = path, None
    else:
        found = sorted(p.name for p in path.iterdir())[:12]
        hint = (" The run has no finished epoch yet (interrupted?): resume it with scripts/train.py --resume."
                if (path / "checkpoint").is_dir() else "")
        raise PublishError(f"{path} has no {checkpoint}/config.json (found {found}); pass a training run folder "
                           f"with best/ and last/, or a save_pretrained folder.{hint}")
    if not any(model_dir.glob("*.safetensors")):
        raise PublishError(f"{model_dir} has no model.safetensors; save the model with save_pretrained first")
    for name in MODEL_FILES:
        if not (model_dir / name).is_file():
            raise PublishError(f"{model_dir} has no {name}; re-save it with MEKForImageClassification.save_pretrained "
                               "(it writes the config, the image processor and the remote code)")
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise PublishError(f"{model_dir / 'config.json'} is not valid JSON ({error})") from error

    results: dict[str, Any] | None = None
    results_path = path / "results.json"
    if chosen is not None and results_path.is_file():
        try:
            results = json.loads(results_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise PublishError(f"{results_path} is not valid JSON ({error}); re-run the training's evaluation or "
                               "pass --allow-no-results") from error
        _check_results_schema(results, results_path)

    run = Run(path=path, model_dir=model_dir, checkpoint=chosen, results=results, config=config,
              test_results_apply=False, no_test_reason=None)
    if results is not None:
        names = [str(n) for n in results.get("label_names") or []]
        if names and names != run.label_names:
            raise PublishError(f"{results_path} lists classes {names} but {model_dir / 'config.json'} has "
                               f"id2label {run.label_names}: the results belong to another model")
    if results is None:
        run.no_test_reason = (f"{path} is a bare model folder without results.json" if chosen is None
                              else f"{path} has no results.json (the run did not finish its evaluation)")
    elif not results.get("test"):
        run.no_test_reason = f"{results_path} has no test results"
    else:
        evaluated = (results.get("selection") or {}).get("checkpoint", "best")
        if evaluated == chosen or _weights_digest(path / evaluated) == _weights_digest(model_dir):
            run.test_results_apply = True
        else:
            run.no_test_reason = (f"{results_path} evaluates the {evaluated!r} checkpoint, not {chosen!r} "
                                  "(different weights)")
    return run


# ----------------------------------------------------------------------------------------------------- metadata
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def validate_repo_id(repo_id: str) -> str:
    """Check a ``USER/NAME`` (or ``ORG/NAME``) model id; returns it.

    Raises:
        PublishError: The id is not ``namespace/name`` or breaks the Hub's naming rules.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hub_validate

    example = "e.g. --repo-id alice/fer-mek-rafdb"
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise PublishError(f"--repo-id must be USER/NAME or ORG/NAME ({example}): letters, digits, '-', '_' and "
                           f"'.' on both sides of one '/', got {repo_id!r}")
    try:
        hub_validate(repo_id)
    except HFValidationError as error:
        raise PublishError(f"--repo-id {repo_id!r} is not a valid Hub model id ({error}); {example}") from error
    return repo_id


@dataclass(frozen=True)
class DatasetFacts:
    """What the card says about the dataset of a run (name, split, licence, citation)."""

    key: str
    name: str
    hub_type: str
    split: str
    config: str | None = None
    link: str | None = None
    synthetic: bool = False
    license: str = "apache-2.0"
    license_name: str | None = None
    license_link: str | None = None
    terms: str = ""
    citation: str | None = None
    description: str = ""


def _looks_local(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().exists() or os.path.isabs(name_or_path) or name_or_path.startswith(".")


def describe_dataset(results: Mapping[str, Any] | None) -> DatasetFacts:
    """The dataset a run was trained and tested on, from ``results["dataset"]``.

    RAF-DB and FER-2013 (also when prepared into a Hub/``save_to_disk`` dataset by ``scripts/prepare_data.py``) get
    their names, test split, terms and citation; the synthetic set is flagged; other sources are described by
    their id or folder name.
    """
    if not results:
        return DatasetFacts(key="unknown", name="not recorded", hub_type="unknown", split="test",
                            license="other", license_name="see-training-data",
                            terms="The training data of these weights is not recorded; check it before reuse.")
    data = dict(results.get("dataset") or {})
    source = str(data.get("source") or (results.get("config") or {}).get("source") or "unknown")
    origin = data.get("prepared_from") if source == "hub" else None
    key = origin if origin in ("rafdb", "fer2013", "synthetic") else source
    if data.get("synthetic") or key == "synthetic":
        return DatasetFacts(
            key="synthetic", name="fer-mek synthetic expressions", hub_type="fer-mek-synthetic", split="test",
            synthetic=True, license="apache-2.0",
            terms=("The training images are generated by fer-mek's code; no third-party data is involved, so the "
                   "weights carry the code's Apache-2.0 licence."),
            description=("cartoon faces drawn by `fer_mek.data.load_synthetic`, not photographs of people, in the "
                         "class proportions of RAF-DB's training set"),
        )
    if key == "rafdb":
        return DatasetFacts(
            key="rafdb", name="RAF-DB", hub_type="raf-db", config="basic", split="test", link=RAFDB_URL,
            license="other", license_name="rafdb-research-only", license_link=RAFDB_URL,
            terms=("RAF-DB is distributed by its authors for non-commercial research only, under an agreement each "
                   "user signs. These weights are derived from it and are shared under the same restriction: "
                   "research use only, no commercial use."),
            citation=RAFDB_BIBTEX,
            description=("the Real-world Affective Faces Database (basic emotions), about 15,000 face images from "
                         "the internet, each labelled by about 40 annotators, with an official train/test partition"),
        )
    if key == "fer2013":
        csv_layout = data.get("layout") == "csv" or "test_split" in data
        split = str(data.get("test_split") or "PrivateTest") if csv_layout else "test"
        where = (f"the `{split}` rows of `fer2013.csv`" if csv_layout
                 else "the `test/` folder of the image-folder release")
        return DatasetFacts(
            key="fer2013", name="FER-2013", hub_type="fer2013", split=split, link=FER2013_URL,
            license="other", license_name="fer2013-research-only", license_link=FER2013_URL,
            terms=("FER-2013 was released for the ICML 2013 representation-learning challenge under the "
                   "competition's rules; its images were collected by web image search without the consent of the "
                   "people shown. These weights are derived from it and are shared for non-commercial research "
                   "only."),
            citation=FER2013_BIBTEX,
            description=(f"35,887 grayscale 48x48 face images collected by Google image search, seven classes; "
                         f"test = {where}"),
        )
    root = str(data.get("name_or_path") or data.get("root") or "")
    if source == "hub" and root and not _looks_local(root):
        splits = data.get("splits_used") or {}
        return DatasetFacts(
            key="hub", name=root, hub_type=root, split=str(splits.get("test") or "test"),
            link=f"https://huggingface.co/datasets/{root}", license="other", license_name="see-training-data",
            terms=f"The weights are derived from the Hub dataset `{root}`: its terms apply to them.",
            description=f"the Hub dataset [`{root}`](https://huggingface.co/datasets/{root})",
        )
    name = Path(root).name if root else source
    return DatasetFacts(
        key=source, name=name, hub_type="imagefolder", split="test", license="other",
        license_name="see-training-data",
        terms=f"The weights are derived from the image collection `{name}`: its terms apply to them.",
        description=f"a local image collection (`{name}`, {source} layout)",
    )


def _backbone_tag(backbone: str) -> str:
    return backbone.split(".")[0].lower()


def _base_model(results: Mapping[str, Any] | None) -> str | None:
    init = (results or {}).get("init") or {}
    weights = str(init.get("weights") or "")
    if str(init.get("source", "")).startswith("timm") and "/" in weights:
        return weights
    return None


def _eval_results(run: Run, facts: DatasetFacts) -> list[Any]:
    from huggingface_hub import EvalResult

    test = run.test
    if test is None or facts.synthetic:
        return []
    common = {
        "task_type": "image-classification",
        "task_name": TASK_NAME,
        "dataset_type": facts.hub_type,
        "dataset_name": facts.name,
        "dataset_split": facts.split,
        "dataset_config": facts.config,
    }
    return [
        EvalResult(**common, metric_type="accuracy", metric_name="Accuracy", metric_value=test["accuracy"]),
        EvalResult(**common, metric_type="balanced_accuracy", metric_name="Mean-class accuracy",
                   metric_value=test["mean_class_accuracy"]),
        EvalResult(**common, metric_type="f1", metric_name="Macro-F1", metric_value=test["macro_f1"],
                   metric_args={"average": "macro"}),
    ]


def build_card_data(run: Run, repo_id: str, *, license: str | None = None) -> ModelCardData:
    """The card's YAML metadata: licence, library, tags, datasets, base model, pipeline tag and ``model-index``.

    ``model-index`` (the Hub's evaluation-results widget) holds test accuracy, mean-class accuracy and macro-F1 on
    the named dataset and split. It is left out for synthetic-data runs (a widget figure next to the
    facial-expression tags would read as an FER accuracy claim) and when the run has no test results for these
    weights.

    Args:
        run: The run to publish.
        repo_id: ``USER/NAME``; its name part names the model in ``model-index``.
        license: Overrides the licence derived from the dataset (e.g. ``"apache-2.0"`` for your own data).
    """
    from huggingface_hub import ModelCardData

    facts = describe_dataset(run.results)
    backbone = str(run.config.get("backbone") or "unknown")
    tags = ["image-classification", "facial-expression-recognition", "mek", _backbone_tag(backbone), "timm"]
    if facts.synthetic:
        tags.append("synthetic-data")
    eval_results = _eval_results(run, facts)
    chosen = license or facts.license
    return ModelCardData(
        license=chosen,
        license_name=facts.license_name if chosen == "other" else None,
        license_link=facts.license_link if chosen == "other" else None,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=tags,
        datasets=[facts.hub_type] if facts.key in ("rafdb", "fer2013", "hub") else None,
        base_model=_base_model(run.results),
        metrics=["accuracy", "balanced_accuracy", "f1"] if eval_results else None,
        model_name=repo_id.split("/")[-1] if eval_results else None,
        eval_results=eval_results or None,
    )


# ------------------------------------------------------------------------------------------------------ the body
def _fmt(value: Any, digits: int = 4) -> str:
    """A metric with a fixed number of decimals (``—`` when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{float(value):.{digits}f}"


def _num(value: Any) -> str:
    """A hyper-parameter in its shortest form (``0.002``, ``5e-05``, ``64``; ``—`` when missing)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _metric_name(key: Any) -> str:
    return {"mean_class_accuracy": "mean-class accuracy", "macro_f1": "macro-F1"}.get(str(key), str(key))


def _wrap(text: str, width: int = 118) -> str:
    """Wrap a prose paragraph like the hand-written template (Markdown ignores the line breaks)."""
    return textwrap.fill(text, width=width, break_long_words=False, break_on_hyphens=False)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _label_order(names: Sequence[str]) -> str:
    from .labels import LABEL_SETS

    described = {"rafdb": "RAF-DB's order", "fer2013": "FER-2013's order (the `emotion` column of `fer2013.csv`)",
                 "fer2013-folders": "the alphabetical order of FER-2013's class folders"}
    for key, label_set in LABEL_SETS.items():
        if tuple(names) == tuple(label_set):
            return described.get(key, key)
    return "the order of the training data's class names"


def _init_text(init: Mapping[str, Any] | None) -> str:
    """How the backbone was initialised, as a noun phrase."""
    init = init or {}
    source = str(init.get("source") or "random")
    weights = str(init.get("weights") or "")
    if source == "random":
        return "random initialisation (no pretraining)"
    if source.startswith("timm"):
        if "/" in weights:
            return f"timm's pretrained weights [`{weights}`](https://huggingface.co/{weights})"
        return f"timm's pretrained weights of `{source.split(':', 1)[-1]}`"
    name = Path(source).name
    extra = " (MS-Celeb-1M face-recognition weights)" if "msceleb" in name.lower() else ""
    return f"the local state_dict `{name}`{extra}, not on the Hub"


def _normalisation(config: Mapping[str, Any]) -> str:
    from .configuration_mek import IMAGENET_MEAN, IMAGENET_STD

    mean, std = config.get("image_mean"), config.get("image_std")
    if mean is not None and std is not None and (list(mean), list(std)) == (list(IMAGENET_MEAN), list(IMAGENET_STD)):
        return "ImageNet's mean and standard deviation"
    return f"mean {mean} and standard deviation {std}"


def _synthetic_notice(facts: DatasetFacts) -> str:
    if not facts.synthetic:
        return ""
    return textwrap.dedent("""\
        > ⚠️ **Demonstration model, trained on synthetic data.** Its training and test images are cartoon faces drawn
        > by fer-mek's code, not photographs of people. It has not learned to recognise expressions on real faces and
        > no facial-expression-recognition accuracy is claimed for it: the figures below only show that training,
        > evaluation and publishing work end to end. Do not use it on real faces.""")


def _summary(run: Run, facts: DatasetFacts, card_license: str) -> str:
    config, results = run.config, run.results or {}
    train_config = results.get("config") or {}
    method = results.get("method") or train_config.get("method") or "mek"
    if method == "mek":
        method_text = (f"MEK, with re-balanced smooth labels (ε = {_num(config.get('smoothing'))}) and re-balanced "
                       f"attention consistency (λ = {_num(config.get('attention_weight'))})")
    else:
        method_text = "baseline: plain cross-entropy, without MEK's two terms"
    init = results.get("init")
    init_text = ("randomly initialised" if not init or init.get("source") == "random"
                 else f"initialised from {_init_text(init)}")
    size = config.get("image_size")
    if facts.synthetic:
        data_text = "synthetic drawings, see the notice above"
    else:
        data_text = f"[{facts.name}]({facts.link})" if facts.link else f"{facts.name}"
    test = run.test
    if test is not None and not facts.synthetic:
        result_text = (f"accuracy {_fmt(test['accuracy'])} and mean-class accuracy "
                       f"{_fmt(test['mean_class_accuracy'])} on the {facts.name} `{facts.split}` split "
                       f"({test['num_samples']:,} images)")
    elif test is not None:
        result_text = "none on real faces (synthetic data)"
    else:
        result_text = "none published with this model"
    selection = results.get("selection") or {}
    epochs = len(results.get("history") or [])
    run_text = f"`{run.name}`, checkpoint `{run.checkpoint}`" if run.checkpoint else f"`{run.name}`"
    if run.checkpoint == "best" and selection.get("best_epoch"):
        run_text += (f" (epoch {selection['best_epoch']} of {epochs}, chosen on validation "
                     f"{_metric_name(selection.get('metric'))})")
    research_only = card_license == "other" and "research" in str(facts.license_name)
    if research_only:
        licence = f"weights for non-commercial research only ({facts.name} terms, below); code (`*.py`): Apache-2.0"
    elif card_license == "apache-2.0":
        licence = "Apache-2.0, weights and code"
    else:
        licence = f"weights: `{card_license}`{' (see the data terms below)' if facts.terms else ''}; code (`*.py`): Apache-2.0"
    items = [
        ("Task", f"facial-expression recognition (image classification), {len(run.label_names)} classes"),
        ("Method", method_text),
        ("Backbone", f"`{config.get('backbone')}` from timm with the {config.get('head', 'linear')} head, {init_text}"),
        ("Input", f"an RGB face crop, resized to {size} × {size} pixels and normalised with {_normalisation(config)} "
                  "(the image processor of this repository does both)"),
        ("Training data", data_text),
        ("Test result", result_text),
        ("Run", run_text),
        ("Licence", licence),
        ("Paper", f"[Leave No Stone Unturned: Mine Extra Knowledge for Imbalanced Facial Expression "
                  f"Recognition]({PAPER_URL}), NeurIPS 2023"),
    ]
    bullets = "\n".join(textwrap.fill(f"- **{key}:** {value}.", width=118, subsequent_indent="  ",
                                      break_long_words=False, break_on_hyphens=False) for key, value in items)
    terms = f"\n\n{_wrap(f'**Data terms.** {facts.terms}')}" if facts.terms else ""
    return f"## Model summary\n\n{bullets}{terms}"


def _dataset(run: Run, facts: DatasetFacts) -> str:
    results = run.results
    if not results:
        return "**Data.** The training data of this model is not recorded: no `results.json` was published with it."
    data = results.get("dataset") or {}
    counts = results.get("class_counts") or {}
    names = run.label_names
    source = f"[{facts.name}]({facts.link})" if facts.link else f"**{facts.name}**"
    text = f"**Data.** {source}: {facts.description}." if facts.description else f"**Data.** {source}."
    if data.get("validation", "stratified_from_train") == "stratified_from_train":
        val = (f"the validation split is a stratified {_num(100 * float(data.get('val_fraction', 0.1)))} % of the "
               f"training split (seed {data.get('split_seed', data.get('seed', 0))})")
    else:
        val = "the validation split is the dataset's own"
    test_fraction = data.get("test_fraction") if facts.synthetic else None
    carved = f" (a stratified {_num(100 * float(test_fraction))} % of all images)" if test_fraction else ""
    text += f" In this run, {val}, and the test split is `{facts.split}`{carved}."
    if data.get("num_skipped"):
        text += f" {_plural(int(data['num_skipped']), 'unreadable image')} were skipped (listed in `results.json`)."
    text = _wrap(text)
    splits = ("train", "validation", "test")
    if counts and all(len(counts.get(s) or []) == len(names) for s in splits):
        rows = [(name, *(f"{counts[s][i]:,}" for s in splits)) for i, name in enumerate(names)]
        rows.append(("**total**", *(f"**{sum(counts[s]):,}**" for s in splits)))
        text += "\n\n" + _table(("class", "train", "validation", "test"), rows, "lrrr")
    return text


def _results(run: Run, facts: DatasetFacts) -> str:
    test, validation = run.test, run.validation
    if test is None:
        return _wrap(f"No test results are published with this model ({run.no_test_reason}). Evaluate it on the "
                     "test split of its dataset before relying on it.")
    selection = (run.results or {}).get("selection") or {}
    metric = _metric_name(selection.get("metric", "mean_class_accuracy"))
    if facts.synthetic:
        intro = ("These figures are measured on the **synthetic** test split, drawings and not faces: they check "
                 "that training works and say nothing about facial-expression recognition.")
    else:
        intro = (f"{facts.name}, `{facts.split}` split ({test['num_samples']:,} images), evaluated once on the "
                 f"checkpoint chosen by validation {metric}.")
    rows = [(label, f"**{_fmt(test[key])}**", _fmt(validation[key]) if validation else "—")
            for key, label in (("accuracy", "accuracy"), ("mean_class_accuracy", "mean-class accuracy"),
                               ("macro_f1", "macro-F1"))]
    overall = _table(("metric", "test", "validation"), rows, "lrr")
    support = [int(sum(row)) for row in test["confusion_matrix"]]
    per_class = [
        (i, name, "n/a" if support[i] == 0 else _fmt(float(test["per_class_recall"][i])), f"{support[i]:,}")
        for i, name in enumerate(run.label_names)
    ]
    per_class_table = _table(("#", "class", "recall", "test images"), per_class, "rlrr")
    return f"{_wrap(intro)}\n\n{overall}\n\nRecall of each class on the test split:\n\n{per_class_table}"


def _confusion(run: Run, facts: DatasetFacts, has_image: bool) -> str:
    if run.test is None or not has_image:
        return ""
    where = "synthetic test split" if facts.synthetic else f"{facts.name} `{facts.split}` split"
    alt = f"Confusion matrix on the {where.replace('`', '')}, rows normalised"
    caption = (f"Confusion matrix on the {where}. Rows are the true classes, normalised so that the diagonal is the "
               "recall of each class; the counts are in brackets.")
    return f"![{alt}](confusion_matrix.png)\n\n{_wrap(caption)}"


def _labels(run: Run) -> str:
    names = run.label_names
    weights = (run.results or {}).get("balance_weights") or []
    header: tuple[str, ...] = ("index", "label")
    rows: list[tuple[Any, ...]] = [(i, f"`{name}`") for i, name in enumerate(names)]
    text = (f"The classes of `config.id2label`, in {_label_order(names)}. `pipeline` returns these names, and "
            "`logits[:, i]` is the score of class `i`.")
    if len(weights) == len(names):
        header += ("MEK balance weight",)
        rows = [(*row, _fmt(float(w), 3)) for row, w in zip(rows, weights, strict=True)]
        text += (" The balance weight `w_c = N / (10 n_c)` of a class comes from its number of training images: "
                 "the rarer the class, the more MEK's two terms favour it.")
    return f"{_wrap(text)}\n\n{_table(header, rows, 'rl' + 'r' * (len(header) - 2))}"


def _training(run: Run, has_curves: bool) -> str:
    results = run.results
    if not results:
        return "The training run of this model is not recorded."
    c = dict(results.get("config") or {})
    env = results.get("environment") or {}
    selection = results.get("selection") or {}
    history = results.get("history") or []
    method = results.get("method") or c.get("method")
    recipe = results.get("recipe") or c.get("recipe")
    processes = int(env.get("num_processes", 1))
    lr = c.get("lr")
    warmup = c.get("warmup_epochs") or 0
    schedules = {"cosine": f"cosine, with {_num(warmup)} warm-up epoch{'' if warmup == 1 else 's'}",
                 "exponential": f"exponential, × {_num(c.get('gamma'))} per epoch", "constant": "constant"}
    augmentation = [
        "rotation, random resized crop and horizontal flip",
        f"RandAugment `{c['auto_augment']}`" if c.get("auto_augment") else "colour jitter (no RandAugment)",
        f"random erasing (p = {_num(c.get('re_prob'))})" if c.get("re_prob") else None,
        "each image paired with its mirror image (attention consistency)" if method == "mek" else None,
        "class-balanced sampling" if c.get("balanced_sampler") else None,
    ]
    hours = f", {float(results['train_seconds']) / 60:.1f} min" if results.get("train_seconds") else ""
    rows = [
        ("recipe", f"`{recipe}` (`configs/{recipe}.yaml` in fer-mek)" if recipe else "—"),
        ("method", "MEK (re-balanced smooth labels + attention consistency)" if method == "mek"
         else "baseline (cross-entropy)"),
        ("ε (label smoothing) / λ (attention weight)",
         f"{_num(c.get('smoothing'))} / {_num(c.get('attention_weight'))}" if method == "mek" else "—"),
        ("backbone", f"`{c.get('backbone')}`, {c.get('head')} head, dropout {_num(c.get('dropout'))}, "
                     f"drop path {_num(c.get('drop_path'))}"),
        ("initialisation", _init_text(results.get("init"))),
        ("input size", f"{c.get('image_size')} × {c.get('image_size')} px"),
        ("epochs", f"{len(history)} (of {c.get('epochs')} planned); epoch {selection.get('best_epoch')} chosen on "
                   f"validation {_metric_name(selection.get('metric'))}"),
        ("batch size", f"{c.get('batch_size')} per process × {_plural(processes, 'process')}"
                       + (f" × {c.get('grad_accum')} accumulation steps" if int(c.get("grad_accum") or 1) > 1 else "")),
        ("optimiser", f"{c.get('optimizer')}, learning rate "
                      f"{_num(lr) if lr is not None else '5e-4 × total batch / 512'}, weight decay "
                      f"{_num(c.get('weight_decay'))}"),
        ("schedule", schedules.get(str(c.get("scheduler")), str(c.get("scheduler")))),
        ("augmentation", ", ".join(a for a in augmentation if a)),
        ("gradient clipping", f"norm {_num(c.get('clip_grad_norm'))}" if c.get("clip_grad_norm") else "off"),
        ("weight EMA", f"decay {_num(c.get('ema_decay'))}" if c.get("ema_decay") else "off"),
        ("mixed precision", c.get("mixed_precision", "no")),
        ("seed", c.get("seed")),
        ("hardware", f"{_plural(processes, 'process')} on {env.get('device', '?')}{hours}"),
        ("software", ", ".join(f"{k} {env[k]}" for k in ("fer_mek", "torch", "timm", "transformers", "accelerate")
                               if k in env)),
    ]
    text = _wrap("Trained with fer-mek's `scripts/train.py` (on Hugging Face accelerate). Every option is recorded "
                 "in `results.json` (`config`), with the history of each epoch.")
    text += "\n\n" + _table(("setting", "value"), rows)
    if has_curves:
        text += "\n\n![Training losses and validation metrics per epoch](training_curves.png)"
    return text


def _usage(repo_id: str, revision: str | None, num_labels: int) -> str:
    rev = f', revision="{revision}"' if revision and revision != "main" else ""
    return textwrap.dedent(f"""\
        **With the `fer-mek` package** (installed from its repository): importing it registers the MEK classes with
        the transformers Auto classes.

        ```python
        import fer_mek  # noqa: F401  (registers MEK with AutoModel, AutoModelForImageClassification, ...)
        import torch
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained("{repo_id}"{rev}).eval()
        processor = AutoImageProcessor.from_pretrained("{repo_id}"{rev})

        image = Image.open("face.jpg")  # a cropped face
        with torch.no_grad():
            outputs = model(**processor(image, return_tensors="pt"))
        probabilities = outputs.logits.softmax(-1)[0]
        print(model.config.id2label[int(probabilities.argmax())], float(probabilities.max()))
        outputs.attention_maps  # [1, {num_labels}, h, w]: the class attention maps, where the model looked
        ```

        **Without the package**, transformers runs the model code stored in this repository (it needs `torch`,
        `transformers` and `timm`). Read the code first: `trust_remote_code=True` executes it on your machine; pin a
        commit with `revision=` to keep running the code you read.

        ```python
        from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained("{repo_id}"{rev}, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained("{repo_id}"{rev}, trust_remote_code=True)
        backbone_and_head = AutoModel.from_pretrained("{repo_id}"{rev}, trust_remote_code=True)  # no training losses
        ```

        **Pipeline** (`trust_remote_code=True` is only needed without the package):

        ```python
        from transformers import pipeline

        classifier = pipeline("image-classification", model="{repo_id}"{rev}, trust_remote_code=True)
        classifier("face.jpg")  # [{{'label': 'happy', 'score': 0.97}}, ...]
        ```

        **Command line** (with the package): find the faces in pictures, crop them and classify each one.

        ```bash
        fer-mek predict --model {repo_id} photo.jpg holidays/ --output expressions.csv
        # or: python -m fer_mek predict --model {repo_id} photo.jpg
        ```""")


def _citation(facts: DatasetFacts) -> str:
    blocks = [f"```bibtex\n{MEK_BIBTEX}\n```"]
    if facts.citation:
        blocks.append(f"{facts.name}:\n\n```bibtex\n{facts.citation}\n```")
    elif facts.synthetic:
        blocks.append("The synthetic training set is generated by fer-mek; there is no dataset to cite.")
    return "\n\n".join(blocks)


def default_card_template() -> Path:
    """``MODEL_CARD.md`` at the root of the fer-mek repository (beside the ``fer_mek`` package)."""
    from . import __file__ as package_init

    return Path(package_init).resolve().parents[1] / "MODEL_CARD.md"


def _read_template(path: str | os.PathLike | None) -> str:
    template = Path(path) if path is not None else default_card_template()
    if not template.is_file():
        raise PublishError(f"card template {template} not found; pass --card-template PATH to the MODEL_CARD.md "
                           "at the root of the fer-mek repository")
    text = template.read_text(encoding="utf-8")
    counts = {name: len(re.findall(rf"^<!-- fer-mek:{name} -->[ \t]*$", text, flags=re.MULTILINE))
              for name in CARD_MARKERS}
    wrong = {name: n for name, n in counts.items() if n != 1}
    if wrong:
        raise PublishError(f"card template {template}: each marker must stand once on a line of its own; "
                           f"found {wrong} (markers: {', '.join(f'<!-- fer-mek:{m} -->' for m in CARD_MARKERS)})")
    unknown = sorted(set(re.findall(r"<!-- fer-mek:([\w-]+) -->", text)) - set(CARD_MARKERS))
    if unknown:
        raise PublishError(f"card template {template} has unknown marker(s) {unknown}; known: {list(CARD_MARKERS)}")
    return text


def fill_template(template: str, sections: Mapping[str, str]) -> str:
    """Replace each ``<!-- fer-mek:NAME -->`` line by ``sections[NAME]`` (an empty section removes the line)."""
    def replace(match: re.Match[str]) -> str:
        return sections[match.group(1)].strip("\n")

    text = re.sub(r"^<!-- fer-mek:([\w-]+) -->[ \t]*$", replace, template, flags=re.MULTILINE)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


def build_card(
    run: Run,
    repo_id: str,
    *,
    template: str | os.PathLike | None = None,
    revision: str | None = None,
    license: str | None = None,
    has_confusion_matrix: bool = True,
    has_training_curves: bool = False,
) -> ModelCard:
    """The model card: ``MODEL_CARD.md`` with its markers filled, under the metadata of :func:`build_card_data`.

    Args:
        run: The run to publish.
        repo_id: ``USER/NAME`` (used in the usage snippets and ``model-index``).
        template: The card template; default :func:`default_card_template`.
        revision: The branch the model is pushed to; usage snippets name it when it is not ``main``.
        license: Overrides the licence derived from the dataset.
        has_confusion_matrix: Whether ``confusion_matrix.png`` is published beside the card.
        has_training_curves: Whether ``training_curves.png`` is published beside the card.

    Raises:
        PublishError: The template is missing or its markers are not the expected ones.
    """
    from huggingface_hub import ModelCard

    text = _read_template(template)
    facts = describe_dataset(run.results)
    data = build_card_data(run, repo_id, license=license)
    sections = {
        "synthetic-notice": _synthetic_notice(facts),
        "model-summary": _summary(run, facts, str(data.license)),
        "dataset": _dataset(run, facts),
        "results": _results(run, facts),
        "confusion-matrix": _confusion(run, facts, has_confusion_matrix),
        "labels": _labels(run),
        "training": _training(run, has_training_curves),
        "usage": _usage(repo_id, revision, len(run.label_names)),
        "citation": _citation(facts),
    }
    body = fill_template(text, sections)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


# ------------------------------------------------------------------------------------------------------ assembly

def _is_local_path(value: str) -> bool:
    return value.startswith(("/", "~", "\\\\")) or (len(value) > 2 and value[1] == ":" and value[2] in "\\/")


def public_results(results: Any) -> Any:
    """``results.json`` as published: absolute local paths (data roots, run folders, backbone files, skipped images)
    reduced to their last component, so that a model repository does not expose the trainer's file system.
    Everything else — metrics, counts, settings — is kept as it is."""
    if isinstance(results, dict):
        return {key: public_results(value) for key, value in results.items()}
    if isinstance(results, list):
        return [public_results(value) for value in results]
    if isinstance(results, str) and _is_local_path(results):
        return Path(results.replace("\\", "/")).name or results
    return results

def assemble(
    run: Run,
    folder: str | os.PathLike,
    repo_id: str,
    *,
    template: str | os.PathLike | None = None,
    revision: str | None = None,
    license: str | None = None,
) -> list[str]:
    """Write the folder to upload into ``folder`` (which must exist and be empty).

    The model files are copied unchanged from the run's checkpoint (weights, ``config.json``,
    ``preprocessor_config.json`` and the ``*.py`` remote code saved with them, i.e. the code the run was evaluated
    with); the card, ``results.json`` and the figures are added when the run's results apply to these weights.

    Returns:
        The relative paths written, sorted.
    """
    folder = Path(folder)
    names: list[str] = []
    for source in sorted(run.model_dir.iterdir()):
        is_weights = source.suffix == ".safetensors" or source.name == "model.safetensors.index.json"
        if source.is_file() and (is_weights or source.name in MODEL_FILES or source.suffix == ".py"):
            shutil.copyfile(source, folder / source.name)
            names.append(source.name)
    has_matrix = has_curves = False
    if run.test is not None:
        published = public_results(json.loads((run.path / "results.json").read_text()))
        (folder / "results.json").write_text(json.dumps(published, indent=2, default=str) + "\n")
        names.append("results.json")
        image = run.path / "confusion_matrix.png"
        if image.is_file():
            shutil.copyfile(image, folder / "confusion_matrix.png")
        else:
            from .plots import plot_confusion_matrix

            plot_confusion_matrix(run.test["confusion_matrix"], run.label_names, folder / "confusion_matrix.png",
                                  title="test confusion matrix")
        names.append("confusion_matrix.png")
        has_matrix = True
        curves = run.path / "training_curves.png"
        if curves.is_file():
            shutil.copyfile(curves, folder / "training_curves.png")
            names.append("training_curves.png")
            has_curves = True
    card = build_card(run, repo_id, template=template, revision=revision, license=license,
                      has_confusion_matrix=has_matrix, has_training_curves=has_curves)
    (folder / "README.md").write_text(str(card), encoding="utf-8")
    names.append("README.md")
    return sorted(names)


# -------------------------------------------------------------------------------------------------- verification
@dataclass
class VerificationReport:
    """What the verification checked and found.

    Attributes:
        images: Where the images came from.
        num_images: How many images were compared.
        checks: One line per passed check.
        max_abs_diff: Largest absolute logit difference to the run's model over all loading paths.
    """

    images: str
    num_images: int
    checks: list[str] = field(default_factory=list)
    max_abs_diff: float = 0.0


def _synthetic_validation(data: Mapping[str, Any], count: int) -> list[Image.Image]:
    from .data import load_source

    options = {"num_images": data.get("num_images"), "image_size": data.get("image_size"),
               "balanced": data.get("balanced"), "class_weights": data.get("class_weights"),
               "test_fraction": data.get("test_fraction")}
    dataset = load_source("synthetic", None, val_fraction=float(data.get("val_fraction", 0.1)),
                          seed=int(data.get("split_seed", data.get("seed", 0))), cache=False,
                          **{k: v for k, v in options.items() if v is not None})
    validation = dataset["validation"]
    return [validation[i]["image"] for i in range(min(count, len(validation)))]


def verification_images(run: Run, count: int = NUM_VERIFY_IMAGES, source: str = "auto") -> tuple[list[Image.Image], str]:
    """A few images to compare the published folder with the run's model on.

    ``source="auto"``: the run's own validation images, rebuilt exactly as the trainer split them (synthetic runs
    regenerate theirs; other runs read their dataset root when it exists on this machine). Otherwise, and with
    ``source="synthetic"``, deterministic synthetic faces from fer-mek's generator: the check compares two loadings
    of the same weights, so any fixed images show a difference.

    Returns:
        The images and a description of where they came from.
    """
    from .data import render_face

    results = run.results or {}
    data = dict(results.get("dataset") or {})
    train_config = results.get("config") or {}
    if source == "auto" and data.get("source") == "synthetic":
        return _synthetic_validation(data, count), "the run's synthetic validation split (regenerated)"
    root = data.get("root")
    if source == "auto" and data.get("source") and root and Path(str(root)).exists():
        from .data import load_source

        options: dict[str, Any] = {"val_fraction": float(data.get("val_fraction", 0.1)),
                                   "seed": int(data.get("split_seed", 0)),
                                   "skip_bad": bool(train_config.get("skip_bad", False))}
        try:
            validation = load_source(str(data["source"]), str(root), **options)["validation"]
        except (ValueError, TypeError, OSError) as error:
            raise PublishError(f"cannot rebuild the run's validation images from {root} ({error}); pass "
                               "--verify-on synthetic to verify on generated faces instead") from error
        return ([validation[i]["image"] for i in range(min(count, len(validation)))],
                f"the run's validation split ({data['source']} at {root})")
    size = int(run.config.get("image_size") or 112)
    images = [render_face(i % 7, max(size, 16), seed=[20231110, i]) for i in range(count)]
    reason = "" if source == "synthetic" else " (the run's validation images are not available here)"
    return images, f"{count} generated synthetic faces{reason}"


_REMOTE_CHECK = textwrap.dedent("""\
    import importlib.abc, json, sys

    class BlockFerMek(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "fer_mek" or name.startswith("fer_mek."):
                raise ImportError(name + " is blocked: this check loads the folder's own code")
            return None

    sys.meta_path.insert(0, BlockFerMek())
    try:
        import fer_mek  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("fer_mek is importable although it was blocked")

    from pathlib import Path

    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

    folder, images_dir, out, threads = sys.argv[1:5]
    torch.set_num_threads(int(threads))
    images = [Image.open(p) for p in sorted(Path(images_dir).glob("*.png"))]
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    report = {"processor": type(processor).__module__ + "." + type(processor).__name__}
    for name, auto in (("AutoModelForImageClassification", AutoModelForImageClassification), ("AutoModel", AutoModel)):
        model = auto.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            logits = model(pixel_values=pixel_values).logits
        report[name] = {"class": type(model).__module__ + "." + type(model).__name__, "logits": logits.tolist()}
    classifier = pipeline("image-classification", model=folder, trust_remote_code=True)
    report["pipeline"] = classifier(images, top_k=1)
    Path(out).write_text(json.dumps(report))
    """)


def _compare(name: str, logits: Any, reference: Any, report: VerificationReport) -> None:
    import torch

    logits = torch.as_tensor(logits, dtype=torch.float32)
    if logits.shape != reference.shape:
        raise VerificationError(f"{name}: logits of shape {tuple(logits.shape)}, the run's model gives "
                                f"{tuple(reference.shape)}; the published folder is not the run's model")
    diff = float((logits - reference).abs().max())
    report.max_abs_diff = max(report.max_abs_diff, diff)
    if not torch.allclose(logits, reference, atol=LOGITS_ATOL, rtol=LOGITS_RTOL):
        raise VerificationError(f"{name}: logits differ from the run's model by up to {diff:.3g} (allowed "
                                f"{LOGITS_ATOL:g}); the published folder would not reproduce the run. Check that the "
                                "checkpoint's code and weights belong together (re-save it with the current fer_mek)")
    if not torch.equal(logits.argmax(-1), reference.argmax(-1)):
        raise VerificationError(f"{name}: predicted classes differ from the run's model")
    exact = "identical" if diff == 0 else f"max |Δ| {diff:.1e}"
    report.checks.append(f"{name}: logits {exact}")


def _check_pipeline(name: str, rows: Sequence[Any], reference: Any, labels: Sequence[str]) -> None:
    probabilities = reference.softmax(-1)
    for i, row in enumerate(rows):
        top = row[0] if isinstance(row, list) else row
        expected = labels[int(probabilities[i].argmax())]
        if top["label"] != expected or abs(float(top["score"]) - float(probabilities[i].max())) > 1e-4:
            raise VerificationError(f"{name}: image {i} gives {top}, the run's model {expected!r} "
                                    f"({float(probabilities[i].max()):.4f})")


def _check_config(folder: Path, run: Run) -> None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    auto_map = config.get("auto_map") or {}
    missing = [key for key in REQUIRED_AUTO_MAP if key not in auto_map]
    if missing:
        raise VerificationError(f"config.json's auto_map lacks {missing}: trust_remote_code loading would fail. "
                                "Re-save the checkpoint with MEKForImageClassification.save_pretrained")
    for target in auto_map.values():
        module = str(target).split("--")[-1].split(".")[0]
        if not (folder / f"{module}.py").is_file():
            raise VerificationError(f"config.json's auto_map names {target} but {module}.py is not in the folder")
    processor = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    if "AutoImageProcessor" not in (processor.get("auto_map") or {}):
        raise VerificationError("preprocessor_config.json has no auto_map for AutoImageProcessor; re-save the "
                                "image processor with MEKImageProcessor.save_pretrained")
    if run.results and run.results.get("label_names") and run.results["label_names"] != run.label_names:
        raise VerificationError("config.json's id2label differs from results.json's label_names")


def verify_folder(
    folder: str | os.PathLike,
    run: Run,
    images: Sequence[Image.Image],
    images_source: str = "given images",
    *,
    timeout: float = 600.0,
) -> VerificationReport:
    """Check that the assembled folder reproduces the run's model; raise otherwise.

    The reference is the run's checkpoint loaded with the package (``MEKForImageClassification`` and its own
    ``MEKImageProcessor``). The folder must give the same logits (to float32 round-off, same predicted classes) when
    loaded (1) with the package, through ``AutoModelForImageClassification``, ``AutoModel``, ``AutoImageProcessor``
    and ``pipeline``, and (2) in a subprocess where ``fer_mek`` cannot be imported, the same ways with
    ``trust_remote_code=True``; there, the classes must come from the folder's own code. The subprocess gets no Hub
    token, runs offline and uses a private modules cache.

    Raises:
        VerificationError: Any difference, or a loading failure (the subprocess's error is included).
    """
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

    from .image_processing_mek import MEKImageProcessor
    from .modeling_mek import MEKForImageClassification, MEKModel

    folder = Path(folder)
    if not images:
        raise VerificationError("no images to verify on")
    _check_config(folder, run)
    report = VerificationReport(images=images_source, num_images=len(images))
    labels = run.label_names

    try:
        reference_model = MEKForImageClassification.from_pretrained(run.model_dir).eval()
        reference_processor = MEKImageProcessor.from_pretrained(run.model_dir)
        with torch.no_grad():
            reference = reference_model(**reference_processor(list(images), return_tensors="pt")).logits.float()
    except Exception as error:  # any loading failure, re-raised with what it means here
        raise PublishError(f"cannot load the run's checkpoint {run.model_dir} with fer_mek ({error}); it must be a "
                           "MEKForImageClassification save_pretrained folder") from error

    try:
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=False)
        pixel_values = processor(list(images), return_tensors="pt")["pixel_values"]
        models = [(auto, expected, auto.from_pretrained(folder, trust_remote_code=False).eval())
                  for auto, expected in ((AutoModelForImageClassification, MEKForImageClassification),
                                         (AutoModel, MEKModel))]
        classifier = pipeline("image-classification", model=str(folder), trust_remote_code=False)
        rows = classifier(list(images), top_k=1)
    except Exception as error:  # any loading failure, re-raised with what it means here
        raise VerificationError(f"the assembled folder does not load with fer_mek installed: {error}") from error
    if not isinstance(processor, MEKImageProcessor):
        raise VerificationError(f"AutoImageProcessor loads {type(processor).__name__}, not MEKImageProcessor")
    for auto, expected, model in models:
        if type(model) is not expected:
            raise VerificationError(f"{auto.__name__} loads {type(model).__name__}, expected {expected.__name__}")
        with torch.no_grad():
            _compare(f"package, {auto.__name__}", model(pixel_values=pixel_values).logits, reference, report)
    _check_pipeline("package, pipeline", rows, reference, labels)
    report.checks.append("package, pipeline: same labels and scores")

    with tempfile.TemporaryDirectory(prefix="fer-mek-verify-") as scratch:
        scratch_dir = Path(scratch)
        (scratch_dir / "images").mkdir()
        for i, image in enumerate(images):
            image.save(scratch_dir / "images" / f"{i:03d}.png")
        env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(scratch_dir / "modules"),
                   HF_HUB_DISABLE_TELEMETRY="1")
        command = [sys.executable, "-c", _REMOTE_CHECK, str(folder.resolve()), str(scratch_dir / "images"),
                   str(scratch_dir / "out.json"), str(torch.get_num_threads())]
        try:
            done = subprocess.run(command, cwd=scratch_dir, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise VerificationError(f"loading the folder with trust_remote_code took more than {timeout:.0f} s") from error
        if done.returncode != 0:
            raise VerificationError("the folder does not load with trust_remote_code=True without fer_mek "
                                    f"installed:\n{done.stderr[-3000:]}")
        remote = json.loads((scratch_dir / "out.json").read_text())
    if not remote["processor"].startswith("transformers_modules."):
        raise VerificationError(f"trust_remote_code loaded the image processor {remote['processor']}, not the "
                                "folder's own code")
    for name in ("AutoModelForImageClassification", "AutoModel"):
        if not remote[name]["class"].startswith("transformers_modules."):
            raise VerificationError(f"trust_remote_code loaded {remote[name]['class']}, not the folder's own code")
        _compare(f"remote code, {name}", remote[name]["logits"], reference, report)
    _check_pipeline("remote code, pipeline", remote["pipeline"], reference, labels)
    report.checks.append("remote code, pipeline: same labels and scores")
    return report


# ------------------------------------------------------------------------------------------------------- upload
def _check_can_upload() -> None:
    """Raise a :class:`PublishError` when an upload cannot work: offline mode, or no token anywhere."""
    from huggingface_hub import constants, get_token

    if constants.is_offline_mode():
        raise PublishError("HF_HUB_OFFLINE is set: uploading needs the network. Unset HF_HUB_OFFLINE (and "
                           "TRANSFORMERS_OFFLINE), or use --dry-run --output-dir DIR to write the folder only")
    if get_token() is None:
        raise PublishError("not logged in to the Hugging Face Hub: run `hf auth login` or set HF_TOKEN to a token "
                           "with write access")


def _hub_error_hint(status: int | None, repo_id: str) -> str:
    return {
        401: "your token is missing, invalid or expired: run `hf auth login` or set HF_TOKEN to a token with write "
             "access",
        403: f"your token may not write to {repo_id}: use a write token (or a fine-grained token with write access "
             "to this repository or namespace), and a namespace you belong to",
        404: f"{repo_id} or its branch was not found: check --repo-id and --revision",
        409: "the repository changed during the upload: run the command again",
        412: "the repository changed during the upload: run the command again",
        413: "the upload is too large for a regular commit",
    }.get(status or 0, "check the message above, then run the command again")


def upload(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    commit_message: str,
    commit_description: str = "",
    private: bool = False,
    revision: str | None = None,
    endpoint: str | None = None,
) -> CommitInfo:
    """Create the repository if needed and upload ``folder`` as one commit.

    ``create_repo(exist_ok=True)``, ``create_branch(exist_ok=True)`` when ``revision`` is not ``main``, then one
    ``create_commit`` with every file of ``folder``: the Hub applies all files or none. The token comes from
    huggingface_hub (``HF_TOKEN``, ``hf auth login``); this function never reads it.

    Raises:
        PublishError: Offline mode, no token, an unreachable endpoint, or the Hub refused (with the reason and a hint).
    """
    import httpx2
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    _check_can_upload()
    api = HfApi(endpoint=endpoint)
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                  for p in files]
    try:
        api.create_repo(repo_id, repo_type="model", private=private or None, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        return api.create_commit(repo_id, operations=operations, commit_message=commit_message,
                                 commit_description=commit_description, repo_type="model", revision=revision)
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        raise PublishError(f"the Hub refused the upload to {repo_id}: {error}\nHow to fix: "
                           f"{_hub_error_hint(status, repo_id)}. Nothing was committed.") from error
    except OfflineModeIsEnabled as error:
        raise PublishError(f"{error}. Nothing was committed.") from error
    except ValueError as error:  # huggingface_hub: README metadata rejected by the Hub's YAML validation
        raise PublishError(f"the Hub rejected the upload to {repo_id}: {error}\nNothing was committed.") from error
    except httpx2.TransportError as error:  # the HTTP library of huggingface_hub: connection, timeout, TLS
        raise PublishError(f"cannot reach {api.endpoint} ({error}): check the network, proxies and HF_ENDPOINT. "
                           "Nothing was committed.") from error


# ------------------------------------------------------------------------------------------------------ publish
@dataclass
class PublishResult:
    """The outcome of :func:`publish`.

    Attributes:
        files: The files of the published folder.
        folder: Where the folder was written (``output_dir``), or ``None`` when it only existed temporarily.
        verification: What the verification checked.
        commit_url: The commit on the Hub, ``None`` for a dry run.
        repo_url: The model's page on the Hub, ``None`` for a dry run.
    """

    files: list[str]
    folder: Path | None
    verification: VerificationReport
    commit_url: str | None = None
    repo_url: str | None = None


def _default_commit_message(run: Run) -> str:
    checkpoint = f" ({run.checkpoint} checkpoint)" if run.checkpoint else ""
    return f"Upload fer-mek run {run.name}{checkpoint}"


def _commit_description(run: Run, report: VerificationReport) -> str:
    facts = describe_dataset(run.results)
    lines = []
    if run.test is not None:
        what = "synthetic test split" if facts.synthetic else f"{facts.name} {facts.split}"
        lines.append(f"Test ({what}): accuracy {_fmt(run.test['accuracy'])}, mean-class accuracy "
                     f"{_fmt(run.test['mean_class_accuracy'])}, macro-F1 {_fmt(run.test['macro_f1'])}.")
    else:
        lines.append(f"No test results: {run.no_test_reason}.")
    lines.append(f"Verified before upload on {report.num_images} images ({report.images}): "
                 + "; ".join(report.checks) + ".")
    return "\n".join(lines)


def publish(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    checkpoint: str = "best",
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    allow_no_results: bool = False,
    commit_message: str | None = None,
    card_template: str | os.PathLike | None = None,
    license: str | None = None,
    verify_on: str = "auto",
    endpoint: str | None = None,
    echo: Callable[[str], None] = print,
) -> PublishResult:
    """Assemble, verify and (unless ``dry_run``) upload a training run.

    Args:
        run_dir: The run folder (``scripts/train.py --output-dir``) or a bare ``save_pretrained`` folder.
        repo_id: ``USER/NAME`` or ``ORG/NAME``.
        checkpoint: ``"best"`` or ``"last"``.
        private: Create the repository private (an existing repository keeps its visibility).
        revision: Branch to commit to (created from ``main`` if missing); default ``main``.
        dry_run: Write the folder (to ``output_dir``) and stop: no network.
        output_dir: Where to write the folder; required for a dry run, optional otherwise (a record of what was
            uploaded). Written atomically: complete or not at all.
        overwrite: Replace an existing non-empty ``output_dir``.
        allow_no_results: Publish weights without test results (the card then makes no accuracy claim).
        commit_message: Commit title; default names the run and checkpoint.
        card_template: ``MODEL_CARD.md``; default :func:`default_card_template`.
        license: Licence identifier overriding the one derived from the dataset.
        verify_on: ``"auto"`` or ``"synthetic"`` (see :func:`verification_images`).
        endpoint: Hub endpoint; default ``$HF_ENDPOINT`` or https://huggingface.co.
        echo: Where progress lines go.

    Raises:
        PublishError: Invalid arguments, an unusable run, missing test results without ``allow_no_results``, a failed
            verification (:class:`VerificationError`) or a refused upload. Nothing is left half-written.
    """
    from .io import atomic_directory

    validate_repo_id(repo_id)
    if dry_run and output_dir is None:
        raise PublishError("--dry-run needs --output-dir DIR: the folder that would be uploaded is written there")
    if verify_on not in ("auto", "synthetic"):
        raise PublishError(f"verify_on must be 'auto' or 'synthetic', got {verify_on!r}")
    if revision is not None and not revision.strip():
        raise PublishError("--revision must name a branch, e.g. --revision main")
    run = load_run(run_dir, checkpoint)
    if run.test is None and not allow_no_results:
        raise PublishError(f"{run.no_test_reason}. A published model should come with its test results; finish the "
                           "run's evaluation, or pass --allow-no-results to publish it without any accuracy claim")
    if output_dir is not None:
        target = Path(output_dir)
        resolved, run_path, model_path = target.resolve(), run.path.resolve(), run.model_dir.resolve()
        if resolved in (run_path, *run_path.parents) or resolved == model_path or model_path in resolved.parents:
            raise PublishError(f"--output-dir {target} would replace or sit inside the run's own files; choose a "
                               "folder outside the run, e.g. --output-dir hub-preview")
        if target.exists() and not overwrite and (not target.is_dir() or any(target.iterdir())):
            raise PublishError(f"{target} already exists and is not empty; choose another --output-dir or pass "
                               "--overwrite")
    if not dry_run:
        _check_can_upload()  # before the slow part: fail early when the upload cannot happen

    echo(f"run {run.path} ({run.checkpoint or 'model folder'}): "
         + ("test results apply" if run.test is not None else f"no test results ({run.no_test_reason})"))
    images, images_source = verification_images(run, source=verify_on)

    def build(staging: Path) -> tuple[list[str], VerificationReport]:
        files = assemble(run, staging, repo_id, template=card_template, revision=revision, license=license)
        echo(f"assembled {len(files)} files: {', '.join(files)}")
        echo(f"verifying on {len(images)} images ({images_source}) ...")
        report = verify_folder(staging, run, images, images_source)
        for line in report.checks:
            echo(f"  ok  {line}")
        return files, report

    def push(folder: Path, report: VerificationReport) -> CommitInfo:
        echo(f"uploading to {repo_id}" + (f" (branch {revision})" if revision and revision != "main" else "") + " ...")
        return upload(folder, repo_id, commit_message=commit_message or _default_commit_message(run),
                      commit_description=_commit_description(run, report), private=private, revision=revision,
                      endpoint=endpoint)

    if output_dir is not None:
        with atomic_directory(output_dir, overwrite=overwrite) as staging:
            files, report = build(staging)
        folder = Path(output_dir)
        echo(f"wrote {folder}")
        if dry_run:
            echo(f"dry run: nothing was uploaded; this folder is what would be pushed to {repo_id}")
            return PublishResult(files=files, folder=folder, verification=report)
        info = push(folder, report)
    else:
        with tempfile.TemporaryDirectory(prefix="fer-mek-publish-") as scratch:
            staging = Path(scratch) / "model"
            staging.mkdir()
            files, report = build(staging)
            info = push(staging, report)
    echo(f"commit: {info.commit_url}")
    return PublishResult(files=files, folder=Path(output_dir) if output_dir is not None else None,
                         verification=report, commit_url=info.commit_url,
                         repo_url=str(info.repo_url) if getattr(info, "repo_url", None) else None)
