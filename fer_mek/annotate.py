"""Drawings on people's pictures: annotated images and video frames, probability bar charts, attention overlays.

The records of :mod:`fer_mek.results` are data; the functions here draw them: :func:`annotate_result` (boxes, labels,
attention maps and a probability panel on the picture), :func:`face_attention_overlay`,
:func:`face_probability_chart`, and :func:`analyze_result` for all of them at once. (Run figures — confusion matrix,
training curves — are :mod:`fer_mek.figures`.) Formerly ``fer_mek.visualize``.

How attention maps are drawn: the predicted class's map is shown over the detected face box only (the map covers
the whole crop the model saw; the margin around the face is left uncoloured), in the perceptual ``viridis`` colour
map, semi-transparent, with a legend. Each map is scaled to its own range (0: the face's least attended cell, 1: its
most attended). A coarse map (fewer than :data:`SMOOTH_MAP_CELLS` cells a side, e.g. the 2x2 map of a 64-pixel
ResNet) is drawn as blocks (nearest neighbour), which is what it is; finer maps are upsampled bilinearly.

Drawing uses PIL and OpenCV; charts use a matplotlib ``Figure`` with the Agg canvas (no ``pyplot``, no global
state), so everything is safe in threads, servers and headless machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .faces import import_cv2
from .results import NO_FACE_MESSAGE, Analysis, FacePrediction, ImageResult

#: Box colours, one per face (RGB), repeated when there are more faces.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
)
_MAX_BARS = 10
#: Maps with fewer cells than this on a side are drawn as blocks (nearest neighbour), finer ones upsampled bilinearly.
SMOOTH_MAP_CELLS = 7
#: The colour map of attention maps (perceptual, readable in grey, colour-blind safe); OpenCV's and matplotlib's
#: ``viridis`` are the same table.
ATTENTION_COLORMAP = "viridis"


def face_color(index: int) -> tuple[int, int, int]:
    """The drawing colour of face number ``index`` (0-based)."""
    return PALETTE[index % len(PALETTE)]


def is_coarse_map(attention: np.ndarray) -> bool:
    """Whether a map is drawn as blocks: fewer than :data:`SMOOTH_MAP_CELLS` cells on a side."""
    return min(np.shape(attention)[-2:]) < SMOOTH_MAP_CELLS


def attention_colors(values: np.ndarray) -> np.ndarray:
    """Values in ``[0, 1]`` as RGB ``uint8`` colours of :data:`ATTENTION_COLORMAP` (shape ``values.shape + (3,)``)."""
    cv2 = import_cv2()
    levels = np.round(np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)
    colored = cv2.applyColorMap(levels.reshape(levels.shape[0], -1), cv2.COLORMAP_VIRIDIS)
    return cv2.cvtColor(colored, cv2.COLOR_BGR2RGB).reshape(*levels.shape, 3)


def attention_heatmap(attention: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map with values in ``[0, 1]`` resized to ``size = (width, height)`` and coloured (``viridis``, RGB uint8):
    blocks (nearest neighbour) for a coarse map (:func:`is_coarse_map`), bilinear for a finer one."""
    cv2 = import_cv2()
    values = np.clip(np.asarray(attention, dtype=np.float32), 0.0, 1.0)
    interpolation = cv2.INTER_NEAREST if is_coarse_map(values) else cv2.INTER_LINEAR
    values = cv2.resize(values, (int(size[0]), int(size[1])), interpolation=interpolation)
    return attention_colors(values)


def face_box_in_crop(face: FacePrediction) -> np.ndarray:
    """The corners of the detected face box in the crop's pixels (``[4, 2]``, clockwise from the top left): the
    crop adds a margin around the box, and is rotated when the eyes were levelled."""
    box = face.box
    corners = np.array(
        [[box.x, box.y], [box.x + box.width, box.y], [box.x + box.width, box.y + box.height], [box.x, box.y + box.height]],
        dtype=np.float64,
    )
    matrix = np.asarray(face.transform, dtype=np.float64)
    return corners @ matrix[:, :2].T + matrix[:, 2]


def overlay_attention(
    crop: Image.Image, attention: np.ndarray | None, alpha: float = 0.45, region: np.ndarray | None = None
) -> Image.Image:
    """The face crop blended with its attention heatmap (the crop unchanged when ``attention`` is ``None``).

    Args:
        crop: RGB face crop.
        attention: Map in ``[0, 1]`` at any resolution (upsampled to the crop, see :func:`attention_heatmap`).
        alpha: Weight of the heatmap.
        region: A polygon (``[N, 2]`` crop pixels, e.g. :func:`face_box_in_crop`) outside which the crop is left
            as it is; ``None``: the whole crop.
    """
    crop = crop.convert("RGB")
    if attention is None:
        return crop.copy()
    heat = attention_heatmap(attention, crop.size).astype(np.float32)
    weight = np.full((crop.height, crop.width, 1), alpha, np.float32)
    if region is not None:
        weight *= _polygon_mask(region, crop.size)[..., None]
    blended = (1.0 - weight) * np.asarray(crop, dtype=np.float32) + weight * heat
    return Image.fromarray(np.clip(blended, 0, 255).round().astype(np.uint8))


def _polygon_mask(polygon: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[height, width]`` float mask, 1 inside ``polygon`` (pixel coordinates), 0 outside."""
    cv2 = import_cv2()
    mask = np.zeros((size[1], size[0]), np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(polygon)).astype(np.int32)], 1)
    return mask.astype(np.float32)


def probability_chart(
    probabilities: Sequence[float] | np.ndarray,
    labels: Sequence[str],
    title: str | None = None,
    width: float = 4.0,
    dpi: int = 100,
) -> Image.Image:
    """A horizontal bar chart of class probabilities in the model's class order, the predicted class highlighted.

    Args:
        probabilities: ``[K]`` probabilities.
        labels: ``[K]`` class names.
        title: Optional title.
        width: Figure width in inches (height follows the number of classes).
        dpi: Resolution.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(probabilities) != len(labels):
        raise ValueError(f"{len(probabilities)} probabilities for {len(labels)} labels")
    figure = Figure(figsize=(width, 0.9 + 0.32 * len(labels)), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    _draw_probabilities(axes, probabilities, labels)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def _draw_probabilities(axes: Any, probabilities: np.ndarray, labels: Sequence[str], color: str = "#d62728") -> None:
    """Horizontal probability bars on matplotlib ``axes``, in the model's class order, the predicted one in ``color``."""
    best = int(np.argmax(probabilities))
    positions = np.arange(len(labels))
    axes.barh(positions, probabilities, color=[color if i == best else "#9a9a9a" for i in positions])
    axes.set_yticks(positions, list(labels))
    axes.invert_yaxis()
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("probability")
    for y, p in zip(positions, probabilities, strict=True):
        axes.text(min(p + 0.02, 0.85), y, f"{p:.0%}", va="center", fontsize=9)


def face_card(face: FacePrediction, number: int | None = None, alpha: float = 0.5, dpi: int = 100) -> Image.Image:
    """One face's whole result in one picture: the crop the model saw with the predicted class's attention map over
    the face box (with a colour bar; blocks and cell lines for a coarse map) beside the probability of every class.

    Args:
        face: The prediction.
        number: The face's number in its picture (title and colour), ``None`` for a lone face.
        alpha: Opacity of the attention map.
        dpi: Resolution (the card is 8 x 3.4 inches).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Polygon

    color = "#{:02x}{:02x}{:02x}".format(*face_color((number or 1) - 1))
    figure = Figure(figsize=(8.0, 3.4), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    picture, bars = figure.add_axes((0.01, 0.1, 0.36, 0.78)), figure.add_axes((0.6, 0.15, 0.37, 0.73))
    crop = np.asarray(face.crop.convert("RGB"))
    height, width = crop.shape[:2]
    picture.imshow(crop, extent=(0, width, height, 0))
    picture.set_axis_off()
    corners = face_box_in_crop(face)
    picture.add_patch(Polygon(corners, closed=True, fill=False, edgecolor=color, linewidth=2))
    prefix = f"face {number}: " if number is not None else ""
    if face.attention is not None:
        attention = np.asarray(face.attention, dtype=np.float32)
        rows, cols = attention.shape[-2:]
        coarse = is_coarse_map(attention)
        shown = picture.imshow(
            attention, cmap=ATTENTION_COLORMAP, vmin=0.0, vmax=1.0, alpha=alpha, extent=(0, width, height, 0),
            interpolation="nearest" if coarse else "bilinear",
        )
        shown.set_clip_path(Polygon(corners, closed=True, transform=picture.transData))
        if coarse:  # the cell boundaries (inside the face box): a 2x2 map is four numbers, not a gradient
            lines = [picture.axvline(i * width / cols) for i in range(1, cols)]
            lines += [picture.axhline(i * height / rows) for i in range(1, rows)]
            for line in lines:
                line.set(color="white", linewidth=0.8, alpha=0.8)
                line.set_clip_path(Polygon(corners, closed=True, transform=picture.transData))
        legend = figure.add_axes((0.39, 0.1, 0.02, 0.78))
        bar = figure.colorbar(shown, cax=legend, ticks=[0.0, 1.0])
        bar.solids.set_alpha(1.0)
        bar.ax.set_yticklabels(["0 least", "1 most"], fontsize=8)
        bar.set_label(f"attention, {rows}x{cols} map", fontsize=9)
        picture.set_title(f"{prefix}where it looked for '{face.label}'", fontsize=10)
    else:
        picture.set_title(f"{prefix}the crop it saw (no attention map)", fontsize=10)
    picture.set_xlim(0, width)
    picture.set_ylim(height, 0)
    _draw_probabilities(bars, face.probabilities, face.labels, color=color)
    bars.set_title(f"{face.label} {face.score:.0%}", fontsize=11, fontweight="bold")
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def annotate_image(
    image: Image.Image,
    faces: Sequence[FacePrediction],
    alpha: float = 0.35,
    panel: bool = True,
    min_side: int = 480,
    fixed_height: bool = False,
) -> Image.Image:
    """The image with, per face, the predicted class's attention map overlaid on the face crop area, a numbered box,
    the predicted label, and (on a side panel) a probability bar per class.

    Args:
        image: The RGB image the faces were found in.
        faces: Its predictions (:attr:`fer_mek.results.ImageResult.faces`).
        alpha: Weight of the attention heatmap (0 to leave faces as they are).
        panel: Add the side panel with probability bars (and :data:`~fer_mek.results.NO_FACE_MESSAGE` without faces).
        min_side: Small images are enlarged until their longer side is this long, so that text stays legible.
        fixed_height: Keep the image's height (video frames): panels that do not fit are summarised.
    """
    cv2 = import_cv2()
    image = image.convert("RGB")
    scale = max(1.0, min_side / max(image.size))
    if scale > 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    width, height = image.size
    canvas = np.asarray(image, dtype=np.float32).copy()
    drawn_maps = False
    for face in faces:
        if face.attention is None or alpha <= 0:
            continue
        crop_width, crop_height = face.crop.size
        heat = attention_heatmap(face.attention, (crop_width, crop_height)).astype(np.float32)
        matrix = face.transform.astype(np.float64).copy()
        matrix[:, :2] /= scale  # displayed image -> crop
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        warped = cv2.warpAffine(heat, matrix, (width, height), flags=flags, borderValue=(0, 0, 0))
        inside = _polygon_mask(face_box_in_crop(face), (crop_width, crop_height))  # the face box, not the margin
        mask = cv2.warpAffine(inside, matrix, (width, height), flags=flags)[..., None]
        canvas = canvas * (1.0 - alpha * mask) + warped * (alpha * mask)
        drawn_maps = True
    annotated = Image.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8))

    draw = ImageDraw.Draw(annotated)
    font = _font(max(12, round(min(width, height) / 32)))
    line = max(2, round(min(width, height) / 240))
    if drawn_maps:
        _draw_attention_legend(draw, (width, height), _font(max(11, round(min(width, height) / 40))))
    for number, face in enumerate(faces, start=1):
        color = face_color(number - 1)
        left, top, right, bottom = (round(v * scale) for v in face.box.xyxy)
        draw.rectangle((left, top, right - 1, bottom - 1), outline=color, width=line)
        text = f"{number} {face.label} {face.score:.0%}" if len(faces) > 1 else f"{face.label} {face.score:.0%}"
        text_box = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = text_box[2] - text_box[0], text_box[3] - text_box[1]
        y = top - text_h - 2 * line if top - text_h - 2 * line >= 0 else min(bottom, height - text_h - 2 * line)
        x = min(max(left, 0), max(width - text_w - 2 * line, 0))
        draw.rectangle((x, y, x + text_w + 2 * line, y + text_h + 2 * line), fill=color)
        draw.text((x + line - text_box[0], y + line - text_box[1]), text, fill=_text_color(color), font=font)
    if not panel:
        return annotated
    return _with_panel(annotated, faces, fixed_height)


def annotate_result(result: ImageResult, **kwargs: Any) -> Image.Image:
    """The result's image with boxes, labels, attention overlays and a probability panel per face.

    Args:
        result: A prediction that holds its image (any result without an error).
        **kwargs: Options of :func:`annotate_image` (``alpha``, ``panel``, ``min_side``, ``fixed_height``).

    Raises:
        ValueError: The result has no image (its input could not be read).
    """
    if result.image is None:
        raise ValueError(f"{result.source}: nothing to draw ({result.error})")
    return annotate_image(result.image, result.faces, **kwargs)


def face_attention_overlay(face: FacePrediction, alpha: float = 0.45) -> Image.Image:
    """The face crop with the predicted class's attention map overlaid on the face box (the crop alone without a
    map)."""
    return overlay_attention(face.crop, face.attention, alpha=alpha, region=face_box_in_crop(face))


def face_probability_chart(face: FacePrediction, **kwargs: Any) -> Image.Image:
    """A bar chart of a face's class probabilities (options of :func:`probability_chart`, e.g. ``title``)."""
    return probability_chart(face.probabilities, face.labels, **kwargs)


def analyze_result(result: ImageResult, **annotate_kwargs: Any) -> Analysis:
    """The result with its pictures: the annotated image, and per face its attention overlay and probability chart.

    Args:
        result: A prediction that holds its image.
        **annotate_kwargs: Options of :func:`annotate_image`.
    """
    return Analysis(
        result=result,
        annotated=annotate_result(result, **annotate_kwargs),
        overlays=[face_attention_overlay(face) for face in result.faces],
        charts=[face_probability_chart(face, title=f"face {i}") for i, face in enumerate(result.faces, start=1)],
    )


def _with_panel(annotated: Image.Image, faces: Sequence[FacePrediction], fixed_height: bool) -> Image.Image:
    width, height = annotated.size
    panel_width = max(240, round(height * 0.5))
    font_size = max(12, round(panel_width / 18))
    font, bold = _font(font_size), _font(round(font_size * 1.1))
    row = round(font_size * 1.45)
    pad = round(font_size * 0.8)
    blocks = [min(len(face.labels), _MAX_BARS) + 1 for face in faces]
    needed = pad + sum(rows * row + pad for rows in blocks) if faces else pad + 2 * row
    total_height = height if fixed_height else max(height, needed)
    out = Image.new("RGB", (width + panel_width, total_height), (255, 255, 255))
    out.paste(annotated, (0, 0))
    draw = ImageDraw.Draw(out)
    x0, y = width + pad, pad
    if not faces:
        draw.text((x0, y), NO_FACE_MESSAGE, fill=(0, 0, 0), font=bold)
        return out
    label_width = max(draw.textlength(name, font=font) for face in faces for name in face.labels[:_MAX_BARS])
    label_width = min(label_width, panel_width * 0.45)
    bar_left = x0 + label_width + pad / 2
    bar_right = width + panel_width - pad - draw.textlength("100%", font=font) - pad / 2
    for number, (face, rows) in enumerate(zip(faces, blocks, strict=True), start=1):
        if y + rows * row > total_height:
            draw.text((x0, y), f"+{len(faces) - number + 1} more faces", fill=(0, 0, 0), font=font)
            break
        color = face_color(number - 1)
        title = f"{face.label} {face.score:.0%}"
        title = f"face {number}: {title}" if len(faces) > 1 else title
        draw.rectangle((x0, y + row * 0.15, x0 + row * 0.7, y + row * 0.85), fill=color)
        draw.text((x0 + row, y), title, fill=(0, 0, 0), font=bold)
        y += row
        shown = [name for name, _ in face.top_k(_MAX_BARS)] if len(face.labels) > _MAX_BARS else list(face.labels)
        for name in shown:
            p = float(face.probabilities[face.labels.index(name)])
            draw.text((x0, y), _fit(draw, name, font, label_width), fill=(40, 40, 40), font=font)
            top, bottom = y + row * 0.2, y + row * 0.8
            draw.rectangle((bar_left, top, bar_right, bottom), outline=(200, 200, 200))
            fill = color if name == face.label else (150, 150, 150)
            draw.rectangle((bar_left, top, bar_left + (bar_right - bar_left) * p, bottom), fill=fill)
            draw.text((bar_right + pad / 2, y), f"{p:.0%}", fill=(40, 40, 40), font=font)
            y += row
        y += pad
    return out


def _draw_attention_legend(
    draw: ImageDraw.ImageDraw, size: tuple[int, int], font: ImageFont.FreeTypeFont | ImageFont.ImageFont
) -> None:
    """The colour bar of the attention maps in the picture's bottom-left corner, on a white box."""
    width, height = size
    label_low, label_high = "attention: least", "most"
    text_h = draw.textbbox((0, 0), label_low, font=font)[3]
    pad = max(3, text_h // 3)
    bar_w = max(40, min(width // 4, 8 * text_h))
    low_w, high_w = draw.textlength(label_low, font=font), draw.textlength(label_high, font=font)
    box_w = round(low_w + bar_w + high_w + 4 * pad)
    box_h = text_h + 2 * pad
    x0, y0 = pad, height - box_h - pad
    if box_w + 2 * pad > width or box_h + 2 * pad > height:
        return
    draw.rectangle((x0, y0, x0 + box_w, y0 + box_h), fill=(255, 255, 255), outline=(90, 90, 90))
    draw.text((x0 + pad, y0 + pad), label_low, fill=(0, 0, 0), font=font)
    bar_x = round(x0 + 2 * pad + low_w)
    colors = attention_colors(np.linspace(0.0, 1.0, bar_w)[None, :])[0]
    for i, rgb in enumerate(colors):
        draw.line((bar_x + i, y0 + pad, bar_x + i, y0 + box_h - pad), fill=tuple(int(c) for c in rgb))
    draw.text((bar_x + bar_w + pad, y0 + pad), label_high, fill=(0, 0, 0), font=font)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font (no system fonts needed; Pillow < 10.1 has only a small bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


__all__ = [
    "ATTENTION_COLORMAP",
    "PALETTE",
    "SMOOTH_MAP_CELLS",
    "analyze_result",
    "annotate_image",
    "annotate_result",
    "attention_colors",
    "attention_heatmap",
    "face_attention_overlay",
    "face_box_in_crop",
    "face_card",
    "face_color",
    "face_probability_chart",
    "is_coarse_map",
    "overlay_attention",
    "probability_chart",
]
