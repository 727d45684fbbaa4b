"""Web demo of fer-mek: upload a photo, use the webcam or pick an example -> the faces, one card per face with its
expression probabilities and attention map, and at the top what model is served (the card's warning for a model
trained on synthetic faces; otherwise its training data and test figures).

The app imports the installed ``fer_mek`` package. Run locally (from the repository root)::

    pip install -e ".[demo]"
    python hub/space/app.py --model path/to/model-or-hub-id

On a Hugging Face Space, the repository's ``fer_mek/`` folder is uploaded next to this file (``requirements.txt``
installs its dependencies); set the Space variable ``FER_MEK_MODEL`` to the model's Hub id (see README.md here).

The model is served as its serving settings say (face crop, grey-scale, CLAHE, test-time augmentation, saved in its
``preprocessor_config.json``); the command line's ``--tta``, ``--clahe/--no-clahe``, ``--grayscale/--no-grayscale``,
``--margin``, ``--square/--no-square``, ``--clip/--no-clip``, ``--align/--no-align`` override them for the server, and
the page's "Serving" controls (TTA, CLAHE, grey-scale) per request.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from fer_mek.annotate import SMOOTH_MAP_CELLS, annotate_result, face_card
from fer_mek.inference import FERPredictor, ModelLoadError  # importing fer_mek registers MEK with transformers
from fer_mek.media import ImageLoadError
from fer_mek.tta import TTA_MODES
from fer_mek_cli.arguments import add_version_argument, positive_int
from fer_mek_cli.serving import add_serving_arguments, serving_overrides

TITLE = "Facial expressions with MEK"
DESCRIPTION = (
    "Upload a photo, take one with the webcam or pick an example. Every face is found (MTCNN), cropped and classified "
    "by a MEK model; each face's card shows the probability of every expression and the model's class attention map "
    "for the expression it predicts: where it looked."
)
#: Example pictures shown under the upload box (public-domain photographs, see examples/README.md).
EXAMPLES = Path(__file__).resolve().parent / "examples"


# ------------------------------------------------------------------------------------------------ the model
def _model_records(name: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(results.json, conversion.json)`` of a served model, each ``None`` when it has none.

    A run's ``best/`` or ``last/`` folder: the run's ``results.json`` when its test section evaluates these weights
    (:func:`fer_mek.runs.load_run`); a published folder or Hub repository: the ``results.json`` and
    ``conversion.json`` uploaded beside the weights.
    """
    from fer_mek.runs import RunError, load_run, read_conversion, read_results

    folder = Path(name).expanduser()
    if not folder.is_dir():
        folder = _hub_records(name)
        if folder is None:
            return None, None
    try:
        if folder.name in ("best", "last") and (folder.parent / "results.json").is_file():
            run = load_run(folder.parent, folder.name)
            results = dict(run.results or {})
            if not run.test_results_apply:
                results.pop("test", None)
            return results, read_conversion(folder)
        results = read_results(folder) if (folder / "results.json").is_file() else None
        return results, read_conversion(folder)
    except RunError:
        return None, None


def _hub_records(repo_id: str) -> Path | None:
    """The local folder of a Hub model's ``results.json`` / ``conversion.json`` (downloaded when there), or ``None``."""
    from huggingface_hub import hf_hub_download

    folder = None
    for filename in ("results.json", "conversion.json"):
        try:
            folder = Path(hf_hub_download(repo_id, filename)).parent
        except Exception:  # noqa: BLE001 - not there, offline, private: the page says the record is missing
            continue
    return folder


def describe_model(name: str, predictor: FERPredictor) -> str:
    """What the page says about the model it serves (Markdown): the training data and test figures, or the model
    card's warning for a model trained on synthetic faces; the attention map's resolution; the serving settings."""
    from fer_mek.model_card import describe_dataset, format_metric

    results, conversion = _model_records(name)
    model = predictor.models[0]
    config = model.config
    parts = [f"**Model:** `{name}` ({getattr(config, 'backbone', type(model).__name__)}, "
             f"{getattr(config, 'image_size', '?')} px input; classes: {', '.join(predictor.labels)})."]
    facts = describe_dataset(results) if results else None
    if facts is not None and facts.synthetic:
        parts.append(
            "> ⚠️ **Demonstration model, trained on synthetic data.** Its training images are cartoon faces drawn by "
            "fer-mek's code, not photographs of people. It has not learned to recognise expressions on real faces: "
            "its answers on your photos mean nothing. It shows how the demo works, nothing more."
        )
    elif conversion is not None:
        source = conversion.get("source") or {}
        reported = conversion.get("reported")
        origin = "/".join(str(source[key]) for key in ("repo_id", "filename") if source.get(key))
        text = f"**Weights:** converted from `{origin or 'a published checkpoint'}` (not trained by fer-mek)."
        if reported:
            text += (f" Its source reports accuracy {format_metric(reported.get('accuracy'))} and mean-class accuracy "
                     f"{format_metric(reported.get('mean_class_accuracy'))} on {reported.get('dataset')} "
                     f"({reported.get('num_test_images')} test images); not re-measured here.")
        parts.append(text)
    elif facts is not None:
        test = results.get("test") if results else None
        data = f"[{facts.name}]({facts.link})" if facts.link else facts.name
        text = f"**Trained on** {data}."
        if test:
            text += (f" On its `{facts.split}` split ({test.get('num_samples')} images): accuracy "
                     f"{format_metric(test.get('accuracy'))}, mean-class accuracy "
                     f"{format_metric(test.get('mean_class_accuracy'))}, macro-F1 {format_metric(test.get('macro_f1'))}.")
        else:
            text += " No test results are recorded for these weights."
        if facts.terms:
            text += f" {facts.terms}"
        parts.append(text)
    else:
        parts.append("**Training data:** not recorded with this model (no `results.json` beside it): what it was trained "
                     "on and how well it does is unknown to this page.")
    rows, cols = attention_grid(predictor)
    if rows and cols:
        note = (f"**Attention maps:** {rows}×{cols} cells over the face crop the model sees. ")
        if min(rows, cols) < SMOOTH_MAP_CELLS:
            note += (f"That is coarse: each cell is 1/{rows * cols} of the crop, so a map says which part of the face "
                     "the model relied on, not which feature; it is drawn as blocks, not as a smooth gradient.")
        else:
            note += "Upsampled bilinearly to the face."
        note += " Colours: viridis, from the face's least attended cell (dark) to its most attended (yellow)."
        parts.append(note)
    serving = "; ".join(line.removeprefix("serving: ") for line in predictor.describe_serving().splitlines())
    parts.append(f"**Serving** (the model's own settings; see *Serving* below): {serving}.")
    return "\n\n".join(parts)


def attention_grid(predictor: FERPredictor) -> tuple[int, int]:
    """The attention map's cells ``(rows, columns)`` for the first model (one forward pass on a blank crop), ``(0, 0)``
    for a model without maps."""
    size = int(getattr(predictor.models[0].config, "image_size", 64) or 64)
    _, maps = predictor.classify([Image.new("RGB", (size, size), (128, 128, 128))])
    return tuple(maps[0].shape[-2:]) if maps and maps[0] is not None else (0, 0)


def example_pictures() -> list[str]:
    """The example pictures shipped beside the app (``examples/*.jpg``), by name."""
    return sorted(str(path) for path in EXAMPLES.glob("*.jpg"))


# ------------------------------------------------------------------------------------------------ one picture
def analyze(
    predictor: FERPredictor,
    image: Image.Image | None,
    tta: str | None = None,
    clahe: bool | None = None,
    grayscale: bool | None = None,
) -> tuple[Image.Image | None, list[tuple[Image.Image, str]], str]:
    """What the demo shows for one picture: each result once.

    Args:
        predictor: The predictor (served as its models' settings and its own overrides say).
        image: The picture.
        tta: Test-time augmentation for this picture (``None``: the predictor's).
        clahe: CLAHE for this picture (``None``: the predictor's).
        grayscale: Grey-scale for this picture (``None``: the predictor's).

    Returns:
        ``(picture with numbered face boxes and attention maps, one card per face (crop with its attention map and
        the probability of every class) with its caption, status line)``.

    Raises:
        gr.Error: No picture, or a picture that cannot be read (shown to the user as a message).
    """
    if image is None:
        raise gr.Error("Upload a photo, take one with the webcam or pick an example first.")
    overrides = {
        name: value for name, value in (("tta", tta), ("clahe", clahe), ("grayscale", grayscale)) if value is not None
    }
    if overrides:
        predictor = predictor.with_settings(**overrides)
    try:
        result = predictor.predict(image)
    except ImageLoadError as error:
        raise gr.Error(str(error)) from error
    annotated = annotate_result(result, panel=False)
    faces = result.faces
    if not faces:
        return annotated, [], "No face found. Try a photo where a face is clearly visible."
    several = len(faces) > 1
    cards = [
        (face_card(face, number if several else None), f"face {number}: {face.label} {face.score:.0%}")
        for number, face in enumerate(faces, start=1)
    ]
    found = f"{len(faces)} faces found, numbered left to right" if several else "1 face found"
    return annotated, cards, f"{found}. Each card below shows one face."


# ------------------------------------------------------------------------------------------------ the page
def build_demo(predictor: FERPredictor, model_name: str | None = None) -> gr.Blocks:
    """The Gradio app around a predictor; its "Serving" controls start at the predictor's (first model's) settings.

    Args:
        predictor: What classifies the faces.
        model_name: The folder or Hub id it was loaded from (default: the predictor's first model), described at
            the top of the page.
    """
    served = predictor.serving[0]
    initial = {"tta": served["tta"], "clahe": bool(served["do_clahe"]), "grayscale": bool(served["do_grayscale"])}
    model_text = describe_model(model_name or predictor.model_names[0], predictor)

    def run(image: Image.Image | None, tta: str, clahe: bool, grayscale: bool) -> tuple[Any, ...]:
        # Only what the user changed overrides the models' settings (ensemble members may differ from the first).
        chosen = {"tta": tta, "clahe": bool(clahe), "grayscale": bool(grayscale)}
        changed = {name: value for name, value in chosen.items() if value != initial[name]}
        return analyze(predictor, image, **changed)

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}")
        gr.Markdown(model_text, elem_id="model-info")
        with gr.Row():
            with gr.Column():
                picture = gr.Image(type="pil", sources=["upload", "webcam"], label="Photo", elem_id="input-image")
                examples = example_pictures()
                if examples:
                    gr.Examples(examples=examples, inputs=picture, label="Examples (public-domain photographs)")
                with gr.Accordion("Serving", open=False):
                    tta = gr.Dropdown(
                        list(TTA_MODES), value=initial["tta"], label="Test-time augmentation", elem_id="tta"
                    )
                    clahe = gr.Checkbox(value=initial["clahe"], label="CLAHE lighting equalisation", elem_id="clahe")
                    grayscale = gr.Checkbox(value=initial["grayscale"], label="Grey-scale input", elem_id="grayscale")
                button = gr.Button("Analyze", variant="primary", elem_id="analyze")
            with gr.Column():
                annotated = gr.Image(type="pil", label="Faces", elem_id="annotated", format="png")
                status = gr.Textbox(label="Result", interactive=False, elem_id="status")
        gallery = gr.Gallery(
            label="Per face: where it looked, and the probability of every expression",
            columns=2,
            object_fit="contain",
            height="auto",
            preview=False,
            elem_id="gallery",
        )
        button.click(
            run,
            inputs=[picture, tta, clahe, grayscale],
            outputs=[annotated, gallery, status],
            api_name="analyze",
        )
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    """Start the demo server."""
    parser = argparse.ArgumentParser(description=TITLE)
    add_version_argument(parser)
    parser.add_argument(
        "--model",
        action="append",
        help="model folder or Hub id; repeat for an ensemble (default: $FER_MEK_MODEL)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: CUDA when available)")
    add_serving_arguments(parser)
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to serve on")
    parser.add_argument(
        "--port", type=positive_int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port"
    )
    args = parser.parse_args(argv)
    models = args.model or ([os.environ["FER_MEK_MODEL"]] if os.environ.get("FER_MEK_MODEL") else None)
    if not models:
        parser.error("give --model FOLDER_OR_HUB_ID or set FER_MEK_MODEL")
    try:
        predictor = FERPredictor(models, device=args.device, **serving_overrides(args))
    except (ModelLoadError, ImportError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    build_demo(predictor, models[0]).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
