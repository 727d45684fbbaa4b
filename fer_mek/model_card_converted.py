"""The model card of a converted checkpoint: weights trained outside fer-mek, with the figures their source reports.

A converted folder (written by fer-mek's converter from, e.g., a MEK-CV checkpoint published on the Hub) is a
``save_pretrained`` folder plus ``conversion.json``: where the weights come from (``source``), the test figures their
source reports (``reported``), the source's training settings (``training``) and serving settings (``serving``). No
fer-mek training run exists for it, so this module fills the markers of the same ``MODEL_CARD.md`` as
:mod:`fer_mek.model_card` from that record, the folder's ``config.json`` and its ``preprocessor_config.json``:

- the figures go into ``model-index`` **marked unverified** (``verified: false``), with the dataset and split they
  were measured on and their source (``source.name`` / ``source.url``); the text says where they come from and never
  presents them as measured by fer-mek;
- the source's training settings, the serving settings of the image processor (greyscale, CLAHE, face-crop geometry,
  default test-time augmentation), the training data's terms (:func:`fer_mek.model_card.describe_dataset`) and the
  command that re-measures the figures with fer-mek's evaluation script.

Pure functions, like :mod:`fer_mek.model_card` (whose helpers it reuses; that module does not import this one).
Entry points: :func:`build_converted_card`, :func:`build_converted_card_data`, :func:`serving_settings`,
:func:`reported_figures`. :mod:`fer_mek.publish` reads the folder and uploads the card.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .model_card import (
    PAPER_URL,
    TASK_NAME,
    DatasetFacts,
    _citation,
    _labels_text,
    _licence_text,
    _normalisation,
    _num,
    _table,
    _usage,
    _wrap,
    describe_dataset,
    fill_template,
    format_metric,
    read_template,
)

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from huggingface_hub import ModelCard, ModelCardData

__all__ = [
    "FER2013_FOLDER_TEST_IMAGES",
    "REPORTED_METRICS",
    "ConversionRecordError",
    "build_converted_card",
    "build_converted_card_data",
    "converted_dataset_facts",
    "reported_figures",
    "serving_settings",
]

#: The reported figures a card lists: ``conversion.json`` key, Hub metric type, name in the card.
REPORTED_METRICS: tuple[tuple[str, str, str], ...] = (
    ("accuracy", "accuracy", "accuracy"),
    ("mean_class_accuracy", "balanced_accuracy", "mean-class accuracy"),
    ("macro_f1", "f1", "macro-F1"),
)
#: FER-2013's image-folder test set (``test/``): its PublicTest and PrivateTest rows together.
FER2013_FOLDER_TEST_IMAGES = 7178
_FER2013_FOLDER_SPLIT = "PublicTest+PrivateTest"


class ConversionRecordError(ValueError):
    """``conversion.json`` reports something a card cannot state: a figure that is not a fraction in [0, 1], or none."""


# -------------------------------------------------------------------------------------------------- the record
def _dataset_key(name: Any) -> str | None:
    key = re.sub(r"[^a-z0-9]", "", str(name or "").lower())
    return {"rafdb": "rafdb", "rafdbbasic": "rafdb", "fer2013": "fer2013"}.get(key)


def _label_dataset(label_names: Sequence[str]) -> str | None:
    from .labels import LABEL_SETS

    for key, names in LABEL_SETS.items():
        if tuple(label_names) == tuple(names):
            return "fer2013" if key.startswith("fer2013") else key
    return None


def reported_figures(conversion: Mapping[str, Any]) -> dict[str, Any] | None:
    """``conversion["reported"]`` checked: its figures are fractions in ``[0, 1]``; ``None`` when it reports none.

    Raises:
        ConversionRecordError: A figure is not a number in ``[0, 1]`` (a percentage, a string), or none is given.
    """
    reported = conversion.get("reported")
    if not reported:
        return None
    if not isinstance(reported, Mapping):
        raise ConversionRecordError(f"conversion.json: 'reported' must be a mapping, got {reported!r}")
    found = {}
    for key, _, _ in REPORTED_METRICS:
        value = reported.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ConversionRecordError(f"conversion.json: reported {key} must be a fraction in [0, 1] (e.g. 0.8641 "
                                        f"for 86.41 %), got {value!r}")
        found[key] = float(value)
    if not found:
        raise ConversionRecordError("conversion.json: 'reported' holds no figure (accuracy, mean_class_accuracy); "
                                    "leave 'reported' out when the source publishes none")
    return {**reported, **found}


def converted_dataset_facts(conversion: Mapping[str, Any], label_names: Sequence[str]) -> DatasetFacts:
    """The dataset the converted weights were trained and tested on: ``reported.dataset``, else
    ``training.dataset``, else told by the class order; RAF-DB and FER-2013 get :func:`describe_dataset`'s facts
    (terms, licence, citation) with the split of the reported figures."""
    reported = conversion.get("reported") or {}
    training = conversion.get("training") or {}
    named = reported.get("dataset") or training.get("dataset")
    key = _dataset_key(named) if named else _label_dataset(label_names)
    split = _split_name(key, reported)
    if key in ("rafdb", "fer2013"):
        return dataclasses.replace(describe_dataset({"dataset": {"source": key, "layout": "folders"}}), split=split)
    if not named:
        return describe_dataset(None)
    name = str(named)
    return DatasetFacts(key="other", name=name, hub_type=re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "other",
                        split=split, license="other", license_name="see-training-data",
                        terms=f"The weights are derived from {name}: its terms apply to them.",
                        description=f"{name}, as the source of the weights names it")


def _split_description(reported: Mapping[str, Any]) -> str | None:
    """``reported.split`` when it describes the test set in words rather than naming a split."""
    split = str(reported.get("split") or "")
    return split if split and not re.fullmatch(r"[\w.+-]+", split) else None


def _split_name(key: str | None, reported: Mapping[str, Any]) -> str:
    """The name of the split the figures were measured on (``model-index``'s ``dataset.split``): ``reported.split``
    when it is a name; FER-2013's 7,178-image folder test set is ``PublicTest+PrivateTest`` (as ``--fer2013-test``
    names it: the folder release's ``test/`` is the CSV's PublicTest and PrivateTest rows); otherwise ``test``."""
    split = str(reported.get("split") or "test")
    described = _split_description(reported)
    if key == "fer2013":
        both = described is not None and "PublicTest" in described and "PrivateTest" in described
        if reported.get("num_test_images") == FER2013_FOLDER_TEST_IMAGES or both or split in ("test",
                                                                                                _FER2013_FOLDER_SPLIT):
            return _FER2013_FOLDER_SPLIT
        if described is not None:
            return next((name for name in ("PrivateTest", "PublicTest") if name in described), "test")
    return "test" if described is not None else split


def serving_settings(processor_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The serving settings the folder's image processor applies (``preprocessor_config.json``); a setting its file
    lacks is the default it loads with (:data:`fer_mek.image_processing_mek.SERVING_DEFAULTS`)."""
    from .image_processing_mek import SERVING_DEFAULTS

    saved = dict(processor_config or {})
    return {key: saved.get(key, default) for key, default in SERVING_DEFAULTS.items()}


# ------------------------------------------------------------------------------------------------- provenance
_WHERE = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<rev>[0-9a-f]{7,40}))?[\s:,(]+`?"
                    r"(?P<path>[\w./-]+\.\w+)`?(?:[:#]L?(?P<first>\d+)(?:-L?(?P<last>\d+))?)?")


def _where_url(where: str, source: Mapping[str, Any]) -> str | None:
    """A link to the file and lines of ``where`` (``OWNER/REPO[@COMMIT]:PATH:LINE[-LINE]``): on the Hub when it names
    the source's Hub repository, on GitHub otherwise."""
    match = _WHERE.search(where)
    if not match:
        return None
    repo, rev, path = match.group("repo"), match.group("rev"), match.group("path")
    lines = f"#L{match.group('first')}" if match.group("first") else ""
    if lines and match.group("last"):
        lines += f"-L{match.group('last')}"
    if repo == source.get("repo_id"):
        pinned = rev or source.get("commit") or source.get("revision") or "main"
        return f"https://huggingface.co/{repo}/blob/{pinned}/{path}{lines}"
    return f"https://github.com/{repo}/blob/{rev or 'HEAD'}/{path}{lines}"


def _short_where(where: str) -> str:
    """``where`` reduced to its first repository, file and lines (the ``source.name`` of ``model-index``)."""
    match = _WHERE.search(where)
    if not match:
        return where
    lines = f":{match.group('first')}" if match.group("first") else ""
    if lines and match.group("last"):
        lines += f"-{match.group('last')}"
    return f"{match.group('repo')}, {match.group('path')}{lines}"


def _figures_source(conversion: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Where the reported figures come from: a name (``reported.where``) and a link (``reported.url``, the file and
    lines ``where`` names, or the source's Hub repository)."""
    reported = conversion.get("reported") or {}
    source = conversion.get("source") or {}
    where = str(reported["where"]) if reported.get("where") else None
    url = reported.get("url") or (_where_url(where, source) if where else None)
    if not url and source.get("repo_id"):
        url = f"https://huggingface.co/{source['repo_id']}"
    if url and not where:
        where = f"the model card of {source['repo_id']}" if source.get("repo_id") else "the source"
    return where, url


def _source_file(conversion: Mapping[str, Any]) -> str:
    """The converted file, as Markdown: a link to it in its Hub repository (at the commit it was downloaded from when
    recorded), or its name."""
    source = conversion.get("source") or {}
    filename = str(source.get("filename") or "")
    repo = source.get("repo_id")
    if repo and filename:
        revision, commit = str(source.get("revision") or "main"), source.get("commit")
        pinned = [f"revision `{revision}`"] if revision != "main" and revision != commit else []
        if commit:
            pinned.append(f"commit `{str(commit)[:12]}`")
        shown = f" ({', '.join(pinned)})" if pinned else ""
        return (f"[`{filename}`](https://huggingface.co/{repo}/blob/{commit or revision}/{filename}) of the Hub "
                f"repository [`{repo}`](https://huggingface.co/{repo}){shown}")
    return f"the file `{Path(filename.replace(chr(92), '/')).name}`" if filename else "a checkpoint file"


# ------------------------------------------------------------------------------------------------- the metadata
def _eval_results(conversion: Mapping[str, Any], facts: DatasetFacts) -> list[Any]:
    from huggingface_hub import EvalResult

    reported = reported_figures(conversion)
    if reported is None:
        return []
    name, url = _figures_source(conversion)
    common = {
        "task_type": "image-classification",
        "task_name": TASK_NAME,
        "dataset_type": facts.hub_type,
        "dataset_name": facts.name,
        "dataset_split": facts.split,
        "dataset_config": facts.config,
        "source_name": f"reported by {_short_where(name)}" if url and name else None,
        "source_url": url,
    }
    return [EvalResult(**common, metric_type=metric, metric_name=f"{label[0].upper()}{label[1:]} (reported by the "
                       "source, not verified)", metric_value=reported[key], verified=False,
                       metric_args={"average": "macro"} if key == "macro_f1" else None)
            for key, metric, label in REPORTED_METRICS if key in reported]


def build_converted_card_data(
    conversion: Mapping[str, Any],
    config: Mapping[str, Any],
    repo_id: str,
    *,
    license: str | None = None,
) -> ModelCardData:
    """The YAML metadata of a converted checkpoint's card: licence (the training data's terms), tags, datasets and
    ``model-index`` with the figures the source reports, each ``verified: false``, with its dataset, split and source.

    Args:
        conversion: The folder's ``conversion.json``.
        config: The folder's ``config.json``.
        repo_id: ``USER/NAME``; its name part names the model in ``model-index``.
        license: Overrides the licence derived from the dataset.

    Raises:
        ConversionRecordError: A reported figure is not a fraction in ``[0, 1]``.
    """
    from huggingface_hub import ModelCardData

    facts = converted_dataset_facts(conversion, _label_names(config))
    backbone = str(config.get("backbone") or "unknown")
    eval_results = _eval_results(conversion, facts)
    chosen = license or facts.license
    return ModelCardData(
        license=chosen,
        license_name=facts.license_name if chosen == "other" else None,
        license_link=facts.license_link if chosen == "other" else None,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["image-classification", "facial-expression-recognition", "mek", backbone.split(".")[0].lower(), "timm",
              "converted"],
        datasets=[facts.hub_type] if facts.key in ("rafdb", "fer2013") else None,
        metrics=[result.metric_type for result in eval_results] or None,
        model_name=repo_id.split("/")[-1] if eval_results else None,
        eval_results=eval_results or None,
    )


# ----------------------------------------------------------------------------------------------------- the body
def _label_names(config: Mapping[str, Any]) -> list[str]:
    id2label = config.get("id2label") or {}
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def _quote(text: str) -> str:
    return textwrap.fill(text, width=118, initial_indent="> ", subsequent_indent="> ", break_long_words=False,
                         break_on_hyphens=False)


def _test_set(facts: DatasetFacts, reported: Mapping[str, Any]) -> str:
    """The test set the figures were measured on, in words."""
    count = reported.get("num_test_images")
    if facts.key == "fer2013" and facts.split == _FER2013_FOLDER_SPLIT:
        return (f"FER-2013's {FER2013_FOLDER_TEST_IMAGES:,}-image test set: the `test/` folder of its image-folder "
                "release, i.e. the `PublicTest` and `PrivateTest` rows of `fer2013.csv` together")
    images = f" ({int(count):,} images)" if isinstance(count, int) else ""
    if facts.key == "rafdb" and facts.split == "test":
        return f"RAF-DB's official test partition{images}"
    return f"the {facts.name} `{facts.split}` split{images}"


def _notice(conversion: Mapping[str, Any], reported: Mapping[str, Any] | None) -> str:
    figures = ("The accuracy figures on this card are **the ones its source reports**: fer-mek has not measured "
               "them, and the Hub's evaluation results mark them unverified (`verified: false`). Re-measure them "
               "before relying on them (see Results)." if reported else
               "Its source reports no test figures for these weights and fer-mek has not measured any: this card "
               "makes no accuracy claim.")
    return _quote(f"**Converted checkpoint, not trained by fer-mek.** These are the weights of "
                  f"{_source_file(conversion)}, converted unchanged into a transformers model (the converted model "
                  f"computes the original module's logits). {figures}")


def _ratio_text(value: Any) -> str:
    return f"{_num(round(100 * float(value), 6))} %"


def _serving_rows(serving: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    grey = ("yes: every input is turned grey, then back into three equal channels" if serving["do_grayscale"]
            else "no (colour input)")
    clahe = (f"yes: contrast-limited adaptive histogram equalisation of the lightness, clip limit "
             f"{_num(serving['clahe_clip_limit'])}, {serving['clahe_tile_grid_size']} × "
             f"{serving['clahe_tile_grid_size']} tiles" if serving["do_clahe"] else "no")
    crop = [f"the detector's box widened by {_ratio_text(serving['face_margin'])} of its longer side on every side",
            "made square" if serving["face_square"] else "not made square",
            "clipped to the picture" if serving["face_clip"] else "parts outside the picture left black",
            "eyes levelled" if serving["face_align"] else "no rotation (eyes not levelled)"]
    tta = {"none": "none", "flip": "`flip`: the face and its mirror image, probabilities averaged",
           "tencrop": "`tencrop`: ten crops, probabilities averaged"}.get(str(serving["default_tta"]),
                                                                             f"`{serving['default_tta']}`")
    where_processor = "image processor (`pipeline()` too)"
    where_predictor = "`fer-mek predict`, `scripts/eval.py`, the demo"
    return [("greyscale", grey, where_processor), ("CLAHE", clahe, where_processor),
            ("face crop", ", ".join(crop), f"{where_predictor} (face detection)"),
            ("test-time augmentation", tta, where_predictor)]


def _summary(conversion: Mapping[str, Any], config: Mapping[str, Any], facts: DatasetFacts,
             reported: Mapping[str, Any] | None, serving: Mapping[str, Any], card_license: str) -> str:
    training = conversion.get("training") or {}
    source = conversion.get("source") or {}
    epsilon = training.get("epsilon", config.get("smoothing"))
    lam = training.get("lambda", config.get("attention_weight"))
    size = config.get("image_size")
    steps = [step for step, on in (("turned grey", serving["do_grayscale"]), ("equalised with CLAHE", serving["do_clahe"]))
             if on]
    steps_text = f", {' and '.join(steps)}," if steps else ""
    init = f", initialised by the source from {training['init']}" if training.get("init") else ""
    if reported:
        figures = [f"{label} {format_metric(reported[key])}" for key, _, label in REPORTED_METRICS if key in reported]
        result = (f"{' and '.join(figures)} on {_test_set(facts, reported)}, **as reported by the source** (not "
                  "measured by fer-mek)")
    else:
        result = "none reported by the source, none measured by fer-mek"
    data_text = f"[{facts.name}]({facts.link})" if facts.link else facts.name
    origin = _source_file(conversion)
    if source.get("sha256"):
        origin += f", SHA-256 `{source['sha256']}`"
    items = [
        ("Task", f"facial-expression recognition (image classification), {len(_label_names(config))} classes"),
        ("Method", f"MEK, with re-balanced smooth labels (ε = {_num(epsilon)}) and re-balanced attention consistency "
                   f"(λ = {_num(lam)})"),
        ("Backbone", f"`{config.get('backbone')}` with the {config.get('head', 'linear')} head{init}"),
        ("Input", f"an RGB face crop{steps_text} resized to {size} × {size} pixels and normalised with "
                  f"{_normalisation(config)} (the image processor of this repository does all of it)"),
        ("Training data", data_text),
        ("Test result", result),
        ("Converted from", origin),
        ("Licence", _licence_text(facts, card_license)),
        ("Paper", f"[Leave No Stone Unturned: Mine Extra Knowledge for Imbalanced Facial Expression "
                  f"Recognition]({PAPER_URL}), NeurIPS 2023"),
    ]
    bullets = "\n".join(textwrap.fill(f"- **{key}:** {value}.", width=118, subsequent_indent="  ",
                                      break_long_words=False, break_on_hyphens=False) for key, value in items)
    terms = f"**Data terms.** {facts.terms}" if facts.terms else ""
    if terms and source.get("license"):
        terms += (f" The source labels its files `{source['license']}`; that covers its own work, not the rights of "
                  "the people and the dataset the weights were trained on.")
    return f"## Model summary\n\n{bullets}" + (f"\n\n{_wrap(terms)}" if terms else "")


def _dataset(facts: DatasetFacts, reported: Mapping[str, Any] | None) -> str:
    source = f"[{facts.name}]({facts.link})" if facts.link else f"**{facts.name}**"
    text = f"**Data.** {source}: {facts.description}." if facts.description else f"**Data.** {source}."
    text += " The source trained these weights on the dataset's training split"
    text += (f" and reports its figures on {_test_set(facts, reported)}." if reported else ".")
    text += (" The validation split and the choice of checkpoint are the source's (see Training); fer-mek did not "
             "train or select these weights.")
    return _wrap(text)


def _eval_command(model: str, facts: DatasetFacts) -> str:
    if facts.key == "fer2013":
        return (f"python scripts/eval.py --model {model} --source fer2013 --data-root data/fer2013 \\\n"
                f"    --fer2013-test {_FER2013_FOLDER_SPLIT} --output metrics.json\n"
                "# data/fer2013: the image-folder release (train/, test/) or fer2013.csv")
    if facts.key == "rafdb":
        return (f"python scripts/eval.py --model {model} --source rafdb --data-root data/RAF-DB/basic "
                "--output metrics.json\n# data/RAF-DB/basic: RAF-DB as distributed, or train/1..7 and test/1..7 folders")
    return f"python scripts/eval.py --model {model} --source folder --data-root data/faces --output metrics.json"


#: The evaluation script's switch (``scripts/eval.py``, :mod:`fer_mek.evaluation`) for a step of the source's test
#: protocol: ``(step, value) -> flag``.
_EVAL_SWITCHES: dict[tuple[str, Any], str] = {
    ("clahe", True): "--clahe", ("clahe", False): "--no-clahe",
    ("grayscale", True): "--grayscale", ("grayscale", False): "--no-grayscale",
    ("face_crop", True): "--detect-faces",
}


def _eval_switch(step: str, value: Any) -> str | None:
    if step == "tta":
        return f"--tta {value}"
    return _EVAL_SWITCHES.get((step, bool(value)))


def _protocol_differences(facts: DatasetFacts, reported: Mapping[str, Any],
                          serving: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """How the source measured (``reported.measured_with``: ``tta``, ``clahe``, ``grayscale``, ``face_crop``) where it
    differs from this model's serving settings: ``(how the source measured, what to change, the evaluation script's
    flag or None)`` for each difference."""
    measured = dict(reported.get("measured_with") or {})
    if "tta" not in measured and reported.get("tta") is not None:
        measured["tta"] = reported["tta"]
    found: list[tuple[str, str, str | None]] = []
    tta = measured.get("tta")
    if tta is not None and str(tta) != str(serving["default_tta"]):
        words = ("one view per image (no test-time augmentation)" if str(tta) == "none"
                 else f"with test-time augmentation `{tta}`")
        found.append((words, f"test-time augmentation `{tta}`", _eval_switch("tta", tta)))
    for key, setting, name in (("clahe", "do_clahe", "CLAHE"), ("grayscale", "do_grayscale", "greyscale")):
        value = measured.get(key)
        if value is None or bool(value) == bool(serving[setting]) or (key == "grayscale" and facts.key == "fer2013"):
            continue  # FER-2013's images are grey already: greyscale changes nothing on them
        found.append((f"{'with' if value else 'without'} {name}", f"{name} {'on' if value else 'off'}",
                      _eval_switch(key, value)))
    if measured.get("face_crop"):
        found.append(("on faces detected and cropped in the test images", "face detection on the test images",
                      _eval_switch("face_crop", True)))
    return found


def _remeasure(facts: DatasetFacts, reported: Mapping[str, Any] | None, serving: Mapping[str, Any],
               repo_id: str) -> str:
    """How to measure the figures with fer-mek: the evaluation command, and how to follow the source's protocol."""
    applied = [name for name, on in (("greyscale", serving["do_grayscale"]), ("CLAHE", serving["do_clahe"]),
                                     (f"`{serving['default_tta']}` test-time augmentation",
                                      serving["default_tta"] != "none")) if on]
    settings = (f"applies this model's serving settings by default ({', '.join(applied)}) and lets you override each "
                "(`python scripts/eval.py --help`)" if applied else "applies this model's serving settings by default")
    text = (f"**Re-measure with fer-mek.** The evaluation script {settings}; `--split test` is the default and "
            "`--output` writes every metric, the recall of each class and the confusion matrix.")
    command = _eval_command(repo_id, facts)
    differences = _protocol_differences(facts, reported or {}, serving)
    if differences:
        changes = [f"`{flag}`" if flag else f"{change} (see `--help`)" for _, change, flag in differences]
        text += (f" The source measured {', '.join(words for words, _, _ in differences)}: to follow its protocol "
                 f"rather than measure the model as it is served, use {' and '.join(changes)}.")
        flags = [flag for _, _, flag in differences if flag]
        if flags:
            command += f"\n# as the source measured: add {' '.join(flags)}"
    elif reported and not reported.get("measured_with") and serving["default_tta"] != "none":
        text += " How the source measured is not recorded; `--tta none` measures one view per image."
    return f"{_wrap(text)}\n\n```bash\n{command}\n```"


def _results(conversion: Mapping[str, Any], facts: DatasetFacts, reported: Mapping[str, Any] | None,
             serving: Mapping[str, Any], repo_id: str) -> str:
    block = _remeasure(facts, reported, serving, repo_id)
    if not reported:
        return _wrap("No test figures are published with this model: its source reports none and fer-mek has not "
                     "evaluated it. Evaluate it on the test split of its dataset before relying on it.") + f"\n\n{block}"
    rows = [(label, f"**{format_metric(reported[key])}**", "not measured")
            for key, _, label in REPORTED_METRICS if key in reported]
    table = _table(("metric", "reported by the source", "measured by fer-mek"), rows, "lrr")
    name, url = _figures_source(conversion)
    where = f"{name} ([link]({url}))" if url and name else (name or "the source (where is not recorded)")
    intro = (f"Measured on {_test_set(facts, reported)}. These figures are **reported by the source of the "
             "weights, not measured by fer-mek**; the evaluation results in this card's metadata are marked "
             "`verified: false`.")
    provenance = f"Where they come from: {where}."
    described = _split_description(reported)
    if described:
        provenance += f" The test set, as the conversion records it: {described}."
    if reported.get("preprocessing"):
        provenance += f" The source's test images: {reported['preprocessing']}."
    return f"{_wrap(intro)}\n\n{table}\n\n{_wrap(provenance)}\n\n{block}"


def _confusion() -> str:
    return _wrap("fer-mek has not evaluated this checkpoint, so no confusion matrix is published with it; the "
                 "command above writes one (`--output metrics.json`).")


_TRAINING_LABELS = {
    "epsilon": "ε (label smoothing)",
    "lambda": "λ (attention consistency weight)",
    "dropout": "dropout",
    "balance_weight_rule": "balance weights",
    "init": "initialisation",
    "optimizer": "optimiser",
    "learning_rate": "learning rate",
    "lr": "learning rate",
    "lr_schedule": "schedule",
    "batch_size": "batch size",
    "image_size": "input size",
    "augmentation": "augmentation",
    "train_preprocessing": "preprocessing",
    "ema_decay": "weight EMA decay",
    "epochs": "epochs planned",
    "epochs_run": "epochs run",
    "best_epoch": "best epoch",
    "early_stop_patience": "early stopping patience",
    "selection": "checkpoint selection",
    "script": "training script",
    "run": "run",
    "where": "source of these settings",
}
_RULES = {"mean1": "inverse class frequency normalised to mean 1 (MEK-CV's rule), from the training split's counts",
          "official": "`N / (10 n_c)` (the official MEK code's rule)"}


def _setting(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{key} {_setting(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_setting(item) for item in value)
    if isinstance(value, float) and math.isnan(value):
        return "—"
    return _num(value)


def _training(conversion: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    training = dict(conversion.get("training") or {})
    for key, config_key in (("epsilon", "smoothing"), ("lambda", "attention_weight"), ("dropout", "dropout"),
                            ("balance_weight_rule", "balance_weight_rule")):
        if key not in training and config.get(config_key) is not None:
            training[key] = config[config_key]
    order = [key for key in _TRAINING_LABELS if key in training] + [key for key in training if key not in
                                                                     _TRAINING_LABELS]
    rows = []
    for key in order:
        value = training[key]
        text = _RULES.get(str(value), _setting(value)) if key == "balance_weight_rule" else _setting(value)
        if key in ("script", "run") and isinstance(value, str):
            text = f"`{value}`"
        rows.append((_TRAINING_LABELS.get(key, key.replace("_", " ")), text))
    intro = ("Trained by the source with its own code, not with fer-mek's trainer. The settings below are those the "
             "conversion records (`conversion.json`, `training`); ε, λ, dropout and the balance weights are also in "
             "`config.json`, so fine-tuning with fer-mek continues with them.")
    return _wrap(intro) + (f"\n\n{_table(('setting', 'value'), rows)}" if rows else "")


def _usage_section(conversion: Mapping[str, Any], serving: Mapping[str, Any], repo_id: str, revision: str | None,
                   num_labels: int) -> str:
    table = _table(("serving setting", "value", "applied by"), _serving_rows(serving))
    origin = conversion.get("serving_source") or {}
    intro = ("**Served the way the source serves it.** " if origin else "**Serving settings.** ")
    intro += ("The serving settings travel with the weights, in `preprocessor_config.json`. The image processor "
              "applies greyscale and CLAHE itself, so `AutoImageProcessor` and `pipeline()` give the model its "
              "intended input; the face crop and the test-time augmentation need a face detector or several forward "
              "passes, so `fer-mek predict`, `scripts/eval.py` and the Gradio demo read them from the processor. "
              "Each can be overridden (`fer-mek predict --help`).")
    if origin.get("where"):
        intro += f" Where these settings come from: {origin['where']}."
    intro += f" {origin['notes']}" if origin.get("notes") else (" fer-mek finds faces with its own detector (MTCNN); "
                                                                 "the source's may place boxes differently.")
    return f"{_wrap(intro)}\n\n{table}\n\n{_usage(repo_id, revision, num_labels)}"


def _balance_weights(config: Mapping[str, Any]) -> list[float]:
    if not config.get("class_counts") and not config.get("balance_weights"):
        return []
    from .configuration_mek import MEKConfig

    try:
        return [float(w) for w in MEKConfig.from_dict(dict(config)).get_balance_weights()]
    except (ValueError, TypeError):  # an unusable record: the card simply leaves the weights out
        return []


def build_converted_card(
    conversion: Mapping[str, Any],
    config: Mapping[str, Any],
    repo_id: str,
    *,
    processor_config: Mapping[str, Any] | None = None,
    template: str | os.PathLike | None = None,
    revision: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """The card of a converted checkpoint: ``MODEL_CARD.md`` with its markers filled from ``conversion.json``, under
    the metadata of :func:`build_converted_card_data`.

    Args:
        conversion: The folder's ``conversion.json`` (``source``, ``reported``, ``training``, ``serving``).
        config: The folder's ``config.json``.
        repo_id: ``USER/NAME`` (usage snippets, the evaluation command and ``model-index``).
        processor_config: The folder's ``preprocessor_config.json``: the serving settings the card states.
        template: The card template; default :func:`fer_mek.model_card.default_card_template`.
        revision: The branch the model is pushed to; snippets name it when it is not ``main``.
        license: Overrides the licence derived from the dataset.

    Raises:
        CardTemplateError: The template is missing or its markers are not the expected ones.
        ConversionRecordError: A reported figure is not a fraction in ``[0, 1]``.
    """
    from huggingface_hub import ModelCard

    text = read_template(template)
    names = _label_names(config)
    facts = converted_dataset_facts(conversion, names)
    reported = reported_figures(conversion)
    serving = serving_settings(processor_config)
    data = build_converted_card_data(conversion, config, repo_id, license=license)
    sections = {
        "synthetic-notice": _notice(conversion, reported),
        "model-summary": _summary(conversion, config, facts, reported, serving, str(data.license)),
        "dataset": _dataset(facts, reported),
        "results": _results(conversion, facts, reported, serving, repo_id),
        "confusion-matrix": _confusion(),
        "labels": _labels_text(names, _balance_weights(config), config.get("balance_weight_rule")),
        "training": _training(conversion, config),
        "usage": _usage_section(conversion, serving, repo_id, revision, len(names)),
        "citation": _citation(facts),
    }
    body = fill_template(text, sections)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
