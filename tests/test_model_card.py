"""The model card (``fer_mek.model_card``): metadata, sections, the template shipped with the package.

Pure functions of a run: the tests build cards from the results of a tiny run (:func:`tests.publish_fixtures.make_run`)
or from results edited here; the published card of a whole run is checked in ``test_publish.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fer_mek
from fer_mek.model_card import (
    CARD_MARKERS,
    CardTemplateError,
    build_card,
    build_card_data,
    default_card_template,
    describe_dataset,
    read_template,
)
from fer_mek.runs import Run, load_run

from .conftest import REPO_ROOT
from .publish_fixtures import REPO_ID, make_run


@pytest.fixture(scope="module")
def rafdb_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("card-run"))


def _run_with(results: dict, config: dict | None = None) -> Run:
    labels = results["label_names"]
    config = config or {"backbone": "resnet18", "head": "conv_bn", "image_size": 224,
                        "id2label": {str(i): n for i, n in enumerate(labels)}, "smoothing": 0.2,
                        "attention_weight": 0.1}
    return Run(path=Path("runs/fer"), model_dir=Path("runs/fer/best"), checkpoint="best", results=results,
               config=config, test_results_apply=True, no_test_reason=None)


@pytest.mark.parametrize(("layout", "split"), [("csv", "PrivateTest"), ("folders", "test")])
def test_fer2013_card_names_the_split_and_terms(rafdb_run, layout, split):
    from huggingface_hub import ModelCard

    from fer_mek.labels import FER2013_LABELS

    results = json.loads((rafdb_run / "results.json").read_text())
    results["label_names"] = list(FER2013_LABELS)
    results["dataset"] = {"source": "fer2013", "layout": layout, "val_fraction": 0.1, "split_seed": 0,
                          **({"test_split": "PrivateTest"} if layout == "csv" else {})}
    results["init"] = {"source": "random"}
    card = ModelCard(str(build_card(_run_with(results), "bob/fer-mek-fer2013")))
    assert {(r.dataset_type, r.dataset_name, r.dataset_split) for r in card.data.eval_results} == {
        ("fer2013", "FER-2013", split)}
    assert card.data.license == "other" and card.data.license_name == "fer2013-research-only"
    assert card.data.base_model is None and card.data.datasets == ["fer2013"]
    assert "goodfellow2013challenges" in card.text and "FER-2013's order" in card.text


def test_prepared_hub_dataset_keeps_its_origin_and_license_can_be_overridden(rafdb_run):
    results = json.loads((rafdb_run / "results.json").read_text())
    results["dataset"] = {"source": "hub", "root": "/data/rafdb-prepared", "prepared_from": "rafdb"}
    assert describe_dataset(results).name == "RAF-DB"
    results["dataset"] = {"source": "hub", "root": "someone/my-faces", "splits_used": {"test": "test"}}
    data = build_card_data(_run_with(results), REPO_ID, license="apache-2.0")
    assert data.datasets == ["someone/my-faces"] and data.license == "apache-2.0" and data.license_name is None
    assert {r.dataset_type for r in data.eval_results} == {"someone/my-faces"}


# -------------------------------------------------------------------------------------------------- the template
def test_card_from_the_packaged_template(rafdb_run):
    """The default template ships inside the package (no checkout needed): a non-editable install builds the card."""
    from huggingface_hub import ModelCard

    template = default_card_template()
    package_dir = Path(fer_mek.__file__).parent
    assert template.parent == package_dir and template.name == "model_card_template.md"
    assert template.is_file()
    # One copy of the prose: in the repository, the packaged template is MODEL_CARD.md itself.
    assert template.read_text(encoding="utf-8") == (REPO_ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    card = ModelCard(str(build_card(load_run(rafdb_run), REPO_ID)))  # template=None: the packaged one
    assert "<!-- fer-mek:" not in card.text
    for heading in ("## Intended use", "## Out-of-scope use", "## Limitations", "## Evaluation protocol"):
        assert heading in card.text, heading
    assert card.data.license_name == "rafdb-research-only"
    # The recipe is named the way the trainer takes it, and where it lives in the package.
    assert "`--recipe rafdb-resnet18-imagenet`: `fer_mek/train/recipes/rafdb-resnet18-imagenet.yaml`" in card.text
    assert "configs/" not in card.text


def test_template_markers_are_checked(tmp_path):
    text = read_template()
    for name in CARD_MARKERS:
        assert f"<!-- fer-mek:{name} -->" in text
    broken = tmp_path / "card.md"
    broken.write_text(text.replace("<!-- fer-mek:usage -->", "") + "\n<!-- fer-mek:extra -->\n")
    with pytest.raises(CardTemplateError, match=r"\{'usage': 0\}"):
        read_template(broken)
    broken.write_text(text + "\n<!-- fer-mek:extra -->\n")
    with pytest.raises(CardTemplateError, match=r"unknown marker\(s\) \['extra'\]"):
        read_template(broken)
    with pytest.raises(CardTemplateError, match="not found"):
        read_template(tmp_path / "missing.md")


@pytest.mark.parametrize(("init", "text", "base_model"), [
    ({"source": "timm:resnet18", "weights": "timm/resnet18.a1_in1k"},
     "timm's pretrained weights [`timm/resnet18.a1_in1k`](https://huggingface.co/timm/resnet18.a1_in1k)",
     "timm/resnet18.a1_in1k"),
    ({"source": "timm:resnet18", "weights": "/home/alice/weights/resnet18.pth"},
     "timm's pretrained weights of `resnet18`, read from the local file `resnet18.pth`", None),
    ({"source": "alice/fer-mek-rafdb", "kind": "fer-mek model", "reinitialised": {"mek.head.classifier": "new"}},
     "the fer-mek model [`alice/fer-mek-rafdb`](https://huggingface.co/alice/fer-mek-rafdb), with a new classifier "
     "for these classes", "alice/fer-mek-rafdb"),
    ({"source": "/home/alice/runs/rafdb/best", "kind": "fer-mek model", "reinitialised": {}},
     "the fer-mek model `rafdb/best` (a local folder, not on the Hub)", None),
])
def test_the_card_names_the_initialisation_and_links_only_hub_ids(rafdb_run, init, text, base_model):
    from huggingface_hub import ModelCard

    results = json.loads((rafdb_run / "results.json").read_text())
    results["init"] = init
    card = ModelCard(str(build_card(_run_with(results), REPO_ID)))
    assert text in card.text.replace("\n", " ")
    assert card.data.base_model == base_model
    assert "huggingface.co//" not in card.text


@pytest.mark.parametrize(("scheduler", "extra", "text"), [
    ("step", {"gamma": 0.1, "step_size": 30}, "| schedule | step, × 0.1 every 30 epochs |"),
    ("exponential", {"gamma": 0.9}, "| schedule | exponential, × 0.9 per epoch |"),
])
def test_the_card_describes_the_schedule(rafdb_run, scheduler, extra, text):
    """Every --scheduler choice has its words in the card's training table (the step schedule: EfficientFace's)."""
    from fer_mek.train import CHOICES

    assert scheduler in CHOICES["scheduler"]
    run = load_run(rafdb_run)
    run.results["config"] = {**run.results["config"], "scheduler": scheduler, **extra}
    card = build_card(run, REPO_ID)
    assert text in str(card), [line for line in str(card).splitlines() if "schedule" in line]
