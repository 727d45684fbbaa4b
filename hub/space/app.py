"""Web demo of fer-mek: upload a photo or use the webcam -> annotated faces, expression probabilities, attention maps.

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
from typing import Any

import gradio as gr
from PIL import Image

from fer_mek.cli import add_serving_arguments, serving_overrides
from fer_mek.inference import FERPredictor, ModelLoadError  # importing fer_mek registers MEK with transformers
from fer_mek.media import ImageLoadError
from fer_mek.tta import TTA_MODES

TITLE = "Facial expressions with MEK"
DESCRIPTION = (
    "Upload a photo or take one with the webcam. Every face is found (MTCNN), cropped and classified by a MEK model; "
    "the heatmap is the model's class attention map for the expression it predicts: where it looked."
)


def analyze(
    predictor: FERPredictor,
    image: Image.Image | None,
    tta: str | None = None,
    clahe: bool | None = None,
    grayscale: bool | None = None,
) -> tuple[Image.Image | None, dict[str, float], list, str]:
    """What the demo shows for one picture.

    Args:
        predictor: The predictor (served as its models' settings and its own overrides say).
        image: The picture.
        tta: Test-time augmentation for this picture (``None``: the predictor's).
        clahe: CLAHE for this picture (``None``: the predictor's).
        grayscale: Grey-scale for this picture (``None``: the predictor's).

    Returns:
        ``(annotated image, probabilities of the first face by class name, gallery of (picture, caption), status)``.

    Raises:
        gr.Error: No picture, or a picture that cannot be read (shown to the user as a message).
    """
    if image is None:
        raise gr.Error("Upload a photo or take one with the webcam first.")
    overrides = {
        name: value for name, value in (("tta", tta), ("clahe", clahe), ("grayscale", grayscale)) if value is not None
    }
    if overrides:
        predictor = predictor.with_settings(**overrides)
    try:
        analysis = predictor.analyze(image)
    except ImageLoadError as error:
        raise gr.Error(str(error)) from error
    faces = analysis.faces
    if not faces:
        return analysis.annotated, {}, [], "No face found. Try a photo where a face is clearly visible."
    gallery: list[tuple[Image.Image, str]] = []
    for number, (face, overlay, chart) in enumerate(zip(faces, analysis.overlays, analysis.charts, strict=True), 1):
        gallery.append((overlay, f"face {number}: attention map for '{face.label}'"))
        gallery.append((chart, f"face {number}: probabilities"))
    probabilities = {name: float(p) for name, p in zip(faces[0].labels, faces[0].probabilities, strict=True)}
    summary = "; ".join(f"face {i}: {face.label} ({face.score:.0%})" for i, face in enumerate(faces, 1))
    return analysis.annotated, probabilities, gallery, f"{len(faces)} face(s) found - {summary}"


def build_demo(predictor: FERPredictor) -> gr.Blocks:
    """The Gradio app around a predictor; its "Serving" controls start at the predictor's (first model's) settings."""
    served = predictor.serving[0]
    initial = {"tta": served["tta"], "clahe": bool(served["do_clahe"]), "grayscale": bool(served["do_grayscale"])}

    def run(image: Image.Image | None, tta: str, clahe: bool, grayscale: bool) -> tuple[Any, ...]:
        # Only what the user changed overrides the models' settings (ensemble members may differ from the first).
        chosen = {"tta": tta, "clahe": bool(clahe), "grayscale": bool(grayscale)}
        changed = {name: value for name, value in chosen.items() if value != initial[name]}
        return analyze(predictor, image, **changed)

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"# {TITLE}\n{DESCRIPTION}\n\nClasses: {', '.join(predictor.labels)}.\n\n"
            f"How the model is served (its own settings, see Serving below): {predictor.describe_serving()}."
        )
        with gr.Row():
            with gr.Column():
                picture = gr.Image(type="pil", sources=["upload", "webcam"], label="Photo", elem_id="input-image")
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
                label = gr.Label(num_top_classes=len(predictor.labels), label="Face 1: expression", elem_id="label")
        gallery = gr.Gallery(
            label="Attention maps and probabilities per face",
            columns=4,
            object_fit="contain",
            height=360,
            elem_id="gallery",
        )
        button.click(
            run,
            inputs=[picture, tta, clahe, grayscale],
            outputs=[annotated, label, gallery, status],
            api_name="analyze",
        )
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    """Start the demo server."""
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument(
        "--model",
        action="append",
        help="model folder or Hub id; repeat for an ensemble (default: $FER_MEK_MODEL)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    add_serving_arguments(parser)
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to serve on")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port")
    args = parser.parse_args(argv)
    models = args.model or ([os.environ["FER_MEK_MODEL"]] if os.environ.get("FER_MEK_MODEL") else None)
    if not models:
        parser.error("give --model FOLDER_OR_HUB_ID or set FER_MEK_MODEL")
    try:
        predictor = FERPredictor(models, device=args.device, **serving_overrides(args))
    except (ModelLoadError, ImportError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    build_demo(predictor).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
