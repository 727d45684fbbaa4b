"""The model card of a published run: the Hub metadata and the filled-in ``MODEL_CARD.md``.

Pure functions of a :class:`~fer_mek.runs.Run` (after timm's ``timm/models/_hub.py``, where ``generate_readme`` is
separate from ``push_to_hf_hub``): the only file read is the card template. The template is ``MODEL_CARD.md`` (the
human-written part of every card, at the root of the fer-mek repository), shipped inside the package as
``fer_mek/model_card_template.md``; its ``<!-- fer-mek:NAME -->`` markers are filled from the run's ``results.json``.
The metadata (licence, tags, datasets, base model, ``model-index``) is built with huggingface_hub's ``ModelCardData``
and ``EvalResult``.

Entry points: :func:`build_card` (the whole card), :func:`build_card_data` (its YAML metadata),
:func:`describe_dataset` (what the card says about the data). :mod:`fer_mek.publish` writes and uploads the card. The
card of a converted checkpoint (weights trained elsewhere, no run) is :mod:`fer_mek.model_card_converted`'s, which
reuses this module's helpers (this module does not import it).

Reason for its length: one small pure function per section of the card (and per row of its training table, which
describes every option a run records); split into modules they would only hand the same run to each other.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .runs import BEST, Run

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from huggingface_hub import ModelCard, ModelCardData

__all__ = [
    "CARD_MARKERS",
    "FER2013_BIBTEX",
    "FER2013_URL",
    "MEK_BIBTEX",
    "PAPER_URL",
    "RAFDB_BIBTEX",
    "RAFDB_URL",
    "TASK_NAME",
    "TEMPLATE_NAME",
    "CardTemplateError",
    "DatasetFacts",
    "build_card",
    "build_card_data",
    "default_card_template",
    "describe_dataset",
    "fill_template",
    "format_metric",
    "read_template",
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
#: The card template shipped in the package: a link to ``MODEL_CARD.md`` in the repository, a copy in a wheel.
TEMPLATE_NAME = "model_card_template.md"

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


class CardTemplateError(ValueError):
    """The card template is missing, or its ``<!-- fer-mek:NAME -->`` markers are not the expected ones."""


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


def _hub_id(name_or_path: str) -> bool:
    """Whether ``name_or_path`` is an ``owner/name`` Hub id (:func:`fer_mek.locations.is_hub_id`) rather than a local
    file or folder."""
    from .locations import is_hub_id

    return "/" in name_or_path and is_hub_id(name_or_path) and not _looks_local(name_or_path)


#: ``results["init"]["kind"]`` of a run initialised from a saved fer-mek model (``--init FOLDER|OWNER/NAME``).
_FER_MEK_MODEL = "fer-mek model"


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
    source, weights = str(init.get("source") or ""), str(init.get("weights") or "")
    if init.get("kind") == _FER_MEK_MODEL:
        return source if _hub_id(source) else None
    if source.startswith("timm") and _hub_id(weights):
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
def format_metric(value: Any, digits: int = 4) -> str:
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


def _final_checkpoint_reported(selection: Mapping[str, Any]) -> bool:
    """Whether a run had no validation split and reports its final weights (``--val-split none``)."""
    return bool(selection) and selection.get("metric") is None and selection.get("checkpoint") == "last"


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
    if init.get("kind") == _FER_MEK_MODEL:
        new_head = ", with a new classifier for these classes" if init.get("reinitialised") else ""
        if _hub_id(source):
            return f"the fer-mek model [`{source}`](https://huggingface.co/{source}){new_head}"
        return f"the fer-mek model `{'/'.join(Path(source).parts[-2:])}` (a local folder, not on the Hub){new_head}"
    if source.startswith("timm"):
        if _hub_id(weights):
            return f"timm's pretrained weights [`{weights}`](https://huggingface.co/{weights})"
        if weights and _looks_local(weights):  # pretrained_cfg_overlay=dict(file=...): a local file, no Hub link
            return (f"timm's pretrained weights of `{source.split(':', 1)[-1]}`, read from the local file "
                    f"`{Path(weights).name}`")
        return f"timm's pretrained weights of `{source.split(':', 1)[-1]}`"
    name = Path(source).name
    extra = " (MS-Celeb-1M face-recognition weights)" if "msceleb" in name.lower() else ""
    return f"the local state_dict `{name}`{extra}, not on the Hub"


def _teacher_text(results: Mapping[str, Any]) -> str:
    """``--method ldt``: the teacher (with its revision / commit and weights digest) as a noun phrase."""
    teacher = results.get("teacher") or {}
    source = str(teacher.get("model") or (results.get("config") or {}).get("teacher") or "an unrecorded teacher")
    hub = _hub_id(source)
    name = (f"the teacher [`{source}`](https://huggingface.co/{source})" if hub
            else f"the teacher `{'/'.join(Path(source).parts[-2:])}`")
    details = [None if hub else "a local folder, not on the Hub",
               f"revision `{teacher['revision']}`" if teacher.get("revision") else None,
               f"commit `{teacher['commit']}`" if teacher.get("commit") else None,
               f"weights `{teacher['digest']}`" if teacher.get("digest") else None]
    details = [d for d in details if d]
    return name + (f" ({'; '.join(details)})" if details else "")


def _distill_text(results: Mapping[str, Any], c: Mapping[str, Any]) -> str:
    """``--method ldt``: the loss as a formula of its weights."""
    teacher = results.get("teacher") or {}
    alpha = float(teacher.get("weight", c.get("distill_weight", 1.0)))
    temperature = teacher.get("temperature", c.get("distill_temperature", 1.0))
    reduction = teacher.get("reduction", c.get("distill_reduction", "batchmean"))
    terms = [f"{_num(alpha)} × cross-entropy to the teacher's softmax (T = {_num(temperature)}, "
             f"{'mean over batch × classes, as EfficientFace' if reduction == 'elementwise' else 'batch mean'})"]
    if alpha < 1:
        terms.append(f"{_num(1 - alpha)} × re-balanced smooth labels (ε = {_num(c.get('smoothing'))})")
    if teacher.get("attention", c.get("distill_attention")):
        terms.append(f"{_num(c.get('attention_weight'))} × attention consistency")
    mapping = teacher.get("label_map")
    return " + ".join(terms) + (f"; teacher classes mapped {mapping}" if mapping else "")


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


def _licence_text(facts: DatasetFacts, card_license: str) -> str:
    """The summary's licence line: the weights follow the training data's terms, the code is Apache-2.0."""
    if card_license == "other" and "research" in str(facts.license_name):
        return f"weights for non-commercial research only ({facts.name} terms, below); code (`*.py`): Apache-2.0"
    if card_license == "apache-2.0":
        return "Apache-2.0, weights and code"
    return f"weights: `{card_license}`{' (see the data terms below)' if facts.terms else ''}; code (`*.py`): Apache-2.0"


def _summary(run: Run, facts: DatasetFacts, card_license: str) -> str:
    config, results = run.config, run.results or {}
    train_config = results.get("config") or {}
    method = results.get("method") or train_config.get("method") or "mek"
    if method == "mek":
        method_text = (f"MEK, with re-balanced smooth labels (ε = {_num(config.get('smoothing'))}) and re-balanced "
                       f"attention consistency (λ = {_num(config.get('attention_weight'))})")
    elif method == "ldt":
        method_text = f"label-distribution training (EfficientFace's distillation) from {_teacher_text(results)}"
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
        result_text = (f"accuracy {format_metric(test['accuracy'])} and mean-class accuracy "
                       f"{format_metric(test['mean_class_accuracy'])} on the {facts.name} `{facts.split}` split "
                       f"({test['num_samples']:,} images)")
    elif test is not None:
        result_text = "none on real faces (synthetic data)"
    else:
        result_text = "none published with this model"
    selection = results.get("selection") or {}
    epochs = len(results.get("history") or [])
    run_text = f"`{run.name}`, checkpoint `{run.checkpoint}`" if run.checkpoint else f"`{run.name}`"
    if _final_checkpoint_reported(selection):
        run_text += f" (the final weights, after {_plural(epochs, 'epoch')}: no validation split, nothing was selected)"
    elif run.checkpoint == BEST and selection.get("best_epoch"):
        run_text += (f" (epoch {selection['best_epoch']} of {epochs}, chosen on validation "
                     f"{_metric_name(selection.get('metric'))})")
    licence = _licence_text(facts, card_license)
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
    how = data.get("validation", "stratified_from_train")
    seed = data.get("split_seed", data.get("seed", 0))
    if how == "stratified_from_train":
        val = (f"the validation split is a stratified {_num(100 * float(data.get('val_fraction') or 0.1))} % of the "
               f"training split (seed {seed})")
    elif how == "permutation_from_train":
        val = (f"the validation split is a random, not stratified, {_num(100 * float(data.get('val_fraction') or 0.1))}"
               f" % of the training split (NumPy's permutation with seed {seed}, as MEK-CV's scripts)")
    elif how == "none" or data.get("val_split") == "none":
        val = ("there is no validation split (the model trained on the whole training split and the final weights "
               "are reported, as the official MEK code does)")
    else:
        val = "the validation split is the dataset's own"
    test_fraction = data.get("test_fraction") if facts.synthetic else None
    carved = f" (a stratified {_num(100 * float(test_fraction))} % of all images)" if test_fraction else ""
    text += f" In this run, {val}, and the test split is `{facts.split}`{carved}."
    if data.get("num_skipped"):
        text += f" {_plural(int(data['num_skipped']), 'unreadable image')} were skipped (listed in `results.json`)."
    text = _wrap(text)
    splits = ("train", "test") if how == "none" else ("train", "validation", "test")
    if counts and all(len(counts.get(s) or []) == len(names) for s in splits):
        rows = [(name, *(f"{counts[s][i]:,}" for s in splits)) for i, name in enumerate(names)]
        rows.append(("**total**", *(f"**{sum(counts[s]):,}**" for s in splits)))
        text += "\n\n" + _table(("class", *splits), rows, "l" + "r" * len(splits))
    return text


def _results(run: Run, facts: DatasetFacts) -> str:
    test, validation = run.test, run.validation
    if test is None:
        return _wrap(f"No test results are published with this model ({run.no_test_reason}). Evaluate it on the "
                     "test split of its dataset before relying on it.")
    selection = (run.results or {}).get("selection") or {}
    metric = _metric_name(selection.get("metric", "mean_class_accuracy"))
    chosen = (" the final checkpoint (no validation split: nothing was selected)"
              if _final_checkpoint_reported(selection) else f" the checkpoint chosen by validation {metric}")
    if facts.synthetic:
        intro = ("These figures are measured on the **synthetic** test split, drawings and not faces: they check "
                 "that training works and say nothing about facial-expression recognition.")
    else:
        intro = (f"{facts.name}, `{facts.split}` split ({test['num_samples']:,} images), evaluated once on"
                 f"{chosen}.")
    rows = [(label, f"**{format_metric(test[key])}**", format_metric(validation[key]) if validation else "—")
            for key, label in (("accuracy", "accuracy"), ("mean_class_accuracy", "mean-class accuracy"),
                               ("macro_f1", "macro-F1"))]
    overall = _table(("metric", "test", "validation"), rows, "lrr")
    support = [int(sum(row)) for row in test["confusion_matrix"]]
    per_class = [
        (i, name, "n/a" if support[i] == 0 else format_metric(float(test["per_class_recall"][i])), f"{support[i]:,}")
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
    return _labels_text(run.label_names, (run.results or {}).get("balance_weights") or [],
                        run.config.get("balance_weight_rule"))


def _labels_text(names: Sequence[str], weights: Sequence[float], rule: str | None) -> str:
    """The classes section: ``config.id2label`` in order, with the MEK balance weight of each class when known."""
    header: tuple[str, ...] = ("index", "label")
    rows: list[tuple[Any, ...]] = [(i, f"`{name}`") for i, name in enumerate(names)]
    text = (f"The classes of `config.id2label`, in {_label_order(names)}. `pipeline` returns these names, and "
            "`logits[:, i]` is the score of class `i`.")
    if len(weights) == len(names):
        header += ("MEK balance weight",)
        rows = [(*row, format_metric(float(w), 3)) for row, w in zip(rows, weights, strict=True)]
        rule = ("`w_c = (1 / n_c) K / Σ_j (1 / n_j)` (inverse frequency normalised to mean 1, MEK-CV's rule)"
                if rule == "mean1" else "`w_c = N / (10 n_c)`")
        text += (f" The balance weight {rule} of a class comes from its number of training images: "
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
    schedules = {"cosine": f"cosine, with {_warmup_text(c)}", "timm-cosine": f"timm's cosine, with {_warmup_text(c)}",
                 "exponential": f"exponential, × {_num(c.get('gamma'))} per epoch", "constant": "constant",
                 "step": f"step, × {_num(c.get('gamma'))} every {c.get('step_size')} epochs"}
    augmentation = [
        _geometry_text(c),
        f"RandAugment `{c['auto_augment']}`" if c.get("auto_augment") else _jitter_text(c),
        f"random erasing (p = {_num(c.get('re_prob'))})" if c.get("re_prob") else None,
        "each image paired with its mirror image (attention consistency)"
        if method == "mek" or (method == "ldt" and c.get("distill_attention")) else None,
        "class-balanced sampling" if c.get("balanced_sampler") else None,
    ]
    hours = f", {float(results['train_seconds']) / 60:.1f} min" if results.get("train_seconds") else ""
    rows = [
        ("recipe", f"`{recipe}` (`--recipe {recipe}`: `fer_mek/train/recipes/{recipe}.yaml` in fer-mek)"
         if recipe else "—"),
        ("method", "MEK (re-balanced smooth labels + attention consistency)" if method == "mek"
         else f"label-distribution training: {_distill_text(results, c)}" if method == "ldt"
         else "baseline (cross-entropy)"),
        *([("teacher", _teacher_text(results))] if method == "ldt" else []),
        ("ε (label smoothing) / λ (attention weight)",
         f"{_num(c.get('smoothing'))} / {_num(c.get('attention_weight'))}" if method == "mek" else "—"),
        ("backbone", f"`{c.get('backbone')}`, {c.get('head')} head, dropout {_num(c.get('dropout'))}, "
                     f"drop path {_num(c.get('drop_path'))}"),
        ("initialisation", _init_text(results.get("init"))),
        ("input size", f"{c.get('image_size')} × {c.get('image_size')} px"),
        ("epochs", _length_text(c, history, selection)),
        ("batch size", f"{c.get('batch_size')} per process × {_plural(processes, 'process')}"
                       + (f" × {c.get('grad_accum')} accumulation steps" if int(c.get("grad_accum") or 1) > 1 else "")),
        ("optimiser", f"{c.get('optimizer')}, learning rate "
                      f"{_num(lr) if lr is not None else '5e-4 × total batch / 512'}, weight decay "
                      f"{_num(c.get('weight_decay'))}" + (" on every parameter" if c.get("weight_decay_all") else "")),
        ("schedule", schedules.get(str(c.get("scheduler")), str(c.get("scheduler")))),
        ("augmentation", ", ".join(a for a in augmentation if a)),
        ("gradient clipping", f"norm {_num(c.get('clip_grad_norm'))}" if c.get("clip_grad_norm") else "off"),
        ("weight EMA", f"decay {_num(c.get('ema_decay'))}" if c.get("ema_decay") else "off"),
        ("mixed precision", _precision_text(c, env)),
        ("seed", c.get("seed")),
        ("hardware", f"{_plural(processes, 'process')} on {env.get('device', '?')}{hours}"),
        ("software", ", ".join(f"{k} {env[k]}" for k in ("fer_mek", "torch", "timm", "transformers", "accelerate")
                               if k in env)),
    ]
    text = _wrap("Trained with fer-mek's trainer (`scripts/train.py`, i.e. `fer_mek.train`, on Hugging Face "
                 "accelerate). Every option is recorded in `results.json` (`config`), with the history of each epoch.")
    text += "\n\n" + _table(("setting", "value"), rows)
    if has_curves:
        text += "\n\n![Training losses and validation metrics per epoch](training_curves.png)"
    return text


def _precision_text(c: Mapping[str, Any], env: Mapping[str, Any]) -> str:
    """The precision the run used; with ``--mixed-precision auto``, also what chose it (``environment``)."""
    used = env.get("mixed_precision", c.get("mixed_precision", "no"))
    if c.get("mixed_precision") == "auto" and env.get("mixed_precision_reason"):
        return f"{used} ({env['mixed_precision_reason']})"
    return str(used)


def _warmup_text(c: Mapping[str, Any]) -> str:
    """The warm-up (and floor) of a cosine schedule."""
    if c.get("warmup_steps"):
        text = f"{c['warmup_steps']:,} warm-up steps"
    else:
        warmup = c.get("warmup_epochs") or 0
        text = f"{_num(warmup)} warm-up epoch{'' if warmup == 1 else 's'}"
    if c.get("warmup_lr"):
        text += f" from {_num(c['warmup_lr'])}"
    if c.get("min_lr"):
        text += f", floor {_num(c['min_lr'])}"
    if c.get("schedule_unit") == "epoch":
        text += ", changed once per epoch"
    return text


def _geometry_text(c: Mapping[str, Any]) -> str:
    """The geometric augmentation steps, in order."""
    rotation = c.get("rotation", 10.0)
    rotate = f"rotation (±{_num(rotation)}°)" if rotation else None
    if c.get("crop") == "padded":
        crop = f"random crop with {_num(c.get('crop_padding'))} px zero padding"
        steps = [crop, rotate]
    else:
        steps = [rotate, "random resized crop"]
    hflip = c.get("hflip", 0.5)
    if hflip:
        steps.append("horizontal flip" if hflip == 0.5 else f"horizontal flip (p = {_num(hflip)})")
    steps = [step for step in steps if step]
    if "rotation" not in c and "crop" not in c:  # a run saved before these options: the fixed augmentation
        return "rotation, random resized crop and horizontal flip"
    return ", ".join(steps[:-1]) + f" and {steps[-1]}" if len(steps) > 1 else steps[0]


def _jitter_text(c: Mapping[str, Any]) -> str | None:
    jitter = c.get("color_jitter")
    if jitter is None:
        return "colour jitter (no RandAugment)"
    if not any(jitter):
        return None
    return f"colour jitter {', '.join(_num(v) for v in jitter)} (no RandAugment)"


def _length_text(c: Mapping[str, Any], history: Sequence[Any], selection: Mapping[str, Any]) -> str:
    """The training table's length and selection row."""
    planned = f"{c['train_steps']:,} optimizer steps" if c.get("train_steps") else f"{c.get('epochs')} planned"
    if c.get("epoch_size"):
        planned += f", epochs of {c['epoch_size']:,} samples"
    if _final_checkpoint_reported(selection):
        return f"{len(history)} ({planned}); the final checkpoint is reported (no validation split)"
    return (f"{len(history)} (of {planned}); epoch {selection.get('best_epoch')} chosen on validation "
            f"{_metric_name(selection.get('metric'))}")


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
    """The card template shipped with the package (``fer_mek/model_card_template.md``, i.e. ``MODEL_CARD.md``)."""
    return Path(__file__).with_name(TEMPLATE_NAME)


def read_template(path: str | os.PathLike | None = None) -> str:
    """The text of a card template, checked: each of :data:`CARD_MARKERS` stands once on a line of its own.

    Args:
        path: The template; default :func:`default_card_template`.

    Raises:
        CardTemplateError: The file is missing, a marker is missing or repeated, or a marker is unknown.
    """
    template = Path(path) if path is not None else default_card_template()
    if not template.is_file():
        raise CardTemplateError(f"card template {template} not found; pass --card-template PATH to a MODEL_CARD.md "
                                "(the one at the root of the fer-mek repository), or leave it out to use the "
                                "template packaged with fer-mek")
    text = template.read_text(encoding="utf-8")
    counts = {name: len(re.findall(rf"^<!-- fer-mek:{name} -->[ \t]*$", text, flags=re.MULTILINE))
              for name in CARD_MARKERS}
    wrong = {name: n for name, n in counts.items() if n != 1}
    if wrong:
        raise CardTemplateError(f"card template {template}: each marker must stand once on a line of its own; "
                                f"found {wrong} (markers: {', '.join(f'<!-- fer-mek:{m} -->' for m in CARD_MARKERS)})")
    unknown = sorted(set(re.findall(r"<!-- fer-mek:([\w-]+) -->", text)) - set(CARD_MARKERS))
    if unknown:
        raise CardTemplateError(f"card template {template} has unknown marker(s) {unknown}; known: "
                                f"{list(CARD_MARKERS)}")
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
        CardTemplateError: The template is missing or its markers are not the expected ones.
    """
    from huggingface_hub import ModelCard

    text = read_template(template)
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

