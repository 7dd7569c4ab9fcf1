"""Pictures to judge restorations by: a self-contained HTML page and a PNG contact sheet.

Used by ``irc compare`` (images, with or without ground truth) and ``irc eval --report``
(benchmark samples). Each image becomes one row: the input, every output and the ground truth
where there is one, side by side, each with its whole-image scores and zoomed crops taken at the
same place in every panel. Crops are the user's ``--box`` regions plus the windows where the
outputs differ most (or, with a single output, where it differs most from the input), so the
crops go where a reader should look. Crops are enlarged with nearest-neighbour sampling: every
pixel shown is a pixel of the image, never an interpolated one.

The HTML embeds its images as data URIs (one file to mail or attach to an issue); the footer
carries the commands and the sha256 of every weights file, so a picture can be reproduced.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from irc.errors import UsageError

__all__ = ["Box", "Panel", "ReportImage", "choose_boxes", "parse_box", "to_common_size", "write_report"]

#: outline colours of the crop boxes, in order (also the crops' frames)
BOX_COLOURS = [(230, 25, 75), (0, 160, 230), (255, 200, 0), (60, 180, 75), (145, 30, 180), (245, 130, 48)]


@dataclass(frozen=True)
class Box:
    """A crop window in the panels' pixel coordinates (the outputs' size)."""

    x: int
    y: int
    w: int
    h: int
    origin: str = "auto"  # "auto" (outputs differ most here) or "user" (--box)


@dataclass
class Panel:
    """One picture of a row.

    Args:
        label: what it is ("input", a method label, "ground truth").
        pixels: ``(C, H, W)`` float in [0, 1], C = 1 or 3.
        scores: whole-image scores shown under it (e.g. ``{"PSNR": 31.2, "SSIM": 0.91}``).
        kind: ``input``, ``output`` or ``reference``.
        note: a short remark under the label (e.g. "bicubic x4 for display").
    """

    label: str
    pixels: np.ndarray
    scores: dict[str, float] = field(default_factory=dict)
    kind: str = "output"
    note: str = ""


@dataclass
class ReportImage:
    """One row of the report: ``panels`` of the same size, scored against ``scored_against``."""

    name: str
    panels: list[Panel]
    scored_against: str = "ground truth"


def parse_box(text: str) -> Box:
    """``"X,Y,W,H"`` (pixels of the output) -> :class:`Box`; anything else is a usage error."""
    try:
        x, y, w, h = (int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise UsageError(f"--box {text!r}: expected X,Y,WIDTH,HEIGHT in pixels of the output, e.g. 120,80,64,64") from None
    if x < 0 or y < 0 or w < 4 or h < 4:
        raise UsageError(f"--box {text!r}: X and Y must be >= 0 and the box at least 4 x 4 pixels")
    return Box(x, y, w, h, origin="user")


def to_common_size(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """``pixels`` ``(C, h, w)`` resized bicubically to ``(C, height, width)`` (display only: an
    SR input beside its outputs); returned unchanged when the size already matches."""
    if pixels.shape[1:] == (height, width):
        return pixels
    import torch

    from irc.operators.resize import imresize

    t = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]
    return imresize(t, size=(height, width))[0].clamp(0, 1).numpy()


def choose_boxes(panels: list[Panel], *, size: int, count: int, user: list[Box] = ()) -> list[Box]:
    """The crop windows of one row: the user's boxes (clipped to the image), then ``count``
    windows of ``size`` pixels where the outputs differ most, not overlapping each other or the
    user's boxes.

    "Differ most" is the largest mean over the window of the per-pixel spread (standard deviation
    across panels, averaged over channels) of the outputs, or of the output and the input when
    there is only one output.
    """
    height, width = panels[0].pixels.shape[1:]
    boxes: list[Box] = []
    for box in user:
        if box.x >= width or box.y >= height:
            raise UsageError(f"--box {box.x},{box.y},{box.w},{box.h} lies outside the {width} x {height} output")
        boxes.append(Box(box.x, box.y, min(box.w, width - box.x), min(box.h, height - box.y), "user"))
    size = max(4, min(size, height, width))
    outputs = [p.pixels for p in panels if p.kind == "output"]
    if len(outputs) < 2:
        outputs += [p.pixels for p in panels if p.kind == "input"]
    if count <= 0 or len(outputs) < 2:
        return boxes
    stack = np.stack([o.mean(axis=0) if o.shape[0] == 3 else o[0] for o in outputs]).astype(np.float64)
    spread = stack.std(axis=0)
    # mean spread of every size x size window, from an integral image
    integral = np.pad(spread.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    window = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    for _ in range(count):
        taken = window.copy()
        for b in boxes:  # a window overlapping a chosen box is not a candidate
            taken[max(0, b.y - size + 1) : b.y + b.h, max(0, b.x - size + 1) : b.x + b.w] = -np.inf
        if not np.isfinite(taken).any():
            break
        y, x = np.unravel_index(int(np.argmax(taken)), taken.shape)
        boxes.append(Box(int(x), int(y), size, size))
    return boxes


# ----------------------------------------------------------------------------- rendering
def _to_pil(pixels: np.ndarray) -> PILImage.Image:
    array = np.clip(np.round(np.asarray(pixels, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return PILImage.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0), "L" if array.shape[0] == 1 else "RGB")


def _thumbnail(panel: Panel, boxes: list[Box], width: int) -> PILImage.Image:
    """The whole panel scaled to ``width`` (never enlarged) with the crop boxes outlined."""
    image = _to_pil(panel.pixels).convert("RGB")
    factor = min(1.0, width / image.width)
    if factor < 1.0:
        image = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))), PILImage.Resampling.LANCZOS)
    draw = ImageDraw.Draw(image)
    line = max(1, round(2 * max(factor, 0.5)))
    for i, b in enumerate(boxes):
        draw.rectangle([b.x * factor, b.y * factor, (b.x + b.w) * factor - 1, (b.y + b.h) * factor - 1], outline=BOX_COLOURS[i % len(BOX_COLOURS)], width=line)
    return image


def _crop(panel: Panel, box: Box) -> PILImage.Image:
    return _to_pil(panel.pixels[:, box.y : box.y + box.h, box.x : box.x + box.w]).convert("RGB")


def _zoom(crop: PILImage.Image, width: int) -> PILImage.Image:
    factor = max(1, width // max(crop.width, 1))
    return crop.resize((crop.width * factor, crop.height * factor), PILImage.Resampling.NEAREST)


def _caption(panel: Panel) -> list[str]:
    lines = [panel.label + (f" ({panel.note})" if panel.note else "")]
    if panel.scores:
        lines.append("  ".join(_score_text(k, v) for k, v in panel.scores.items()))
    return lines


def _score_text(name: str, value: float) -> str:
    if value == float("inf"):
        return f"{name} identical"
    return f"{name} {value:.2f} dB" if name.upper() == "PSNR" else f"{name} {value:.4f}"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def contact_sheet(images: list[ReportImage], boxes: list[list[Box]], *, cell: int = 320, title: str = "") -> PILImage.Image:
    """One PNG: per image a row of cells (thumbnail, zoomed crops, caption) under its name."""
    font, bold = _font(13), _font(15)
    pad, line_h = 8, 17
    rows = []
    for image, row_boxes in zip(images, boxes):
        cells = []
        for panel in image.panels:
            thumb = _thumbnail(panel, row_boxes, cell)
            crop_w = (cell - pad * (max(len(row_boxes), 1) - 1)) // max(len(row_boxes), 1)
            crops = [_zoom(_crop(panel, b), crop_w) for b in row_boxes]
            captions = _caption(panel)
            crop_h = max((c.height for c in crops), default=0)
            height = thumb.height + (pad + min(crop_h, crop_w * 2) if crops else 0) + pad + line_h * len(captions)
            canvas = PILImage.new("RGB", (cell, height), "white")
            canvas.paste(thumb, ((cell - thumb.width) // 2, 0))
            x = 0
            for i, c in enumerate(crops):
                c = c.crop((0, 0, min(c.width, crop_w), min(c.height, crop_w * 2)))
                canvas.paste(c, (x, thumb.height + pad))
                ImageDraw.Draw(canvas).rectangle([x, thumb.height + pad, x + c.width - 1, thumb.height + pad + c.height - 1], outline=BOX_COLOURS[i % len(BOX_COLOURS)], width=2)
                x += crop_w + pad
            text_y = thumb.height + (pad + min(crop_h, crop_w * 2) if crops else 0) + pad
            for j, text in enumerate(captions):
                ImageDraw.Draw(canvas).text((0, text_y + j * line_h), text, fill=(0, 0, 0), font=font)
            cells.append(canvas)
        row_h = max(c.height for c in cells)
        row = PILImage.new("RGB", (len(cells) * (cell + pad) - pad, row_h + line_h + pad), "white")
        ImageDraw.Draw(row).text((0, 0), f"{image.name}   (scores against {image.scored_against})", fill=(0, 0, 0), font=bold)
        for i, c in enumerate(cells):
            row.paste(c, (i * (cell + pad), line_h + pad))
        rows.append(row)
    width = max(r.width for r in rows) + 2 * pad
    header = (line_h + pad) if title else 0
    sheet = PILImage.new("RGB", (width, header + sum(r.height + 2 * pad for r in rows) + pad), "white")
    if title:
        ImageDraw.Draw(sheet).text((pad, pad), title, fill=(0, 0, 0), font=bold)
    y = header + pad
    for r in rows:
        sheet.paste(r, (pad, y))
        y += r.height + 2 * pad
    return sheet


def _data_uri(image: PILImage.Image, fmt: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {"optimize": False}))
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #111; }
section { margin-bottom: 2.5em; }
.row { display: flex; gap: 14px; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 0; max-width: 520px; }
figure img.whole { max-width: 100%; display: block; }
.crops { display: flex; gap: 6px; margin-top: 6px; flex-wrap: wrap; }
.crops img { image-rendering: pixelated; border: 3px solid; width: 160px; height: auto; }
figcaption { font-size: 0.9em; margin-top: 4px; }
figcaption .scores { color: #333; font-variant-numeric: tabular-nums; }
footer pre { background: #f4f4f4; padding: 0.8em; overflow-x: auto; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; text-align: left; font-size: 0.9em; }
"""


def report_html(images: list[ReportImage], boxes: list[list[Box]], *, title: str, commands: list[str], weights: list[dict[str, str]], notes: list[str] = ()) -> str:
    """The self-contained page (images as data URIs, no script, no external resource)."""
    esc = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title><style>{_STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    for note in notes:
        parts.append(f"<p>{esc(note)}</p>")
    for image, row_boxes in zip(images, boxes):
        parts.append(f"<section><h2>{esc(image.name)}</h2><p>Scores against {esc(image.scored_against)}. Crops: " + ", ".join(
            f"<span style='color:rgb{BOX_COLOURS[i % len(BOX_COLOURS)]}'>&#9632;</span> {b.w}x{b.h} at ({b.x}, {b.y}){' (--box)' if b.origin == 'user' else ''}" for i, b in enumerate(row_boxes)
        ) + "</p><div class='row'>")  # fmt: skip
        for panel in image.panels:
            thumb = _data_uri(_thumbnail(panel, row_boxes, 768), "JPEG")
            crops = "".join(
                f"<img src='{_data_uri(_crop(panel, b), 'PNG')}' style='border-color:rgb{BOX_COLOURS[i % len(BOX_COLOURS)]}' alt='{esc(panel.label)} crop {i + 1}'>"
                for i, b in enumerate(row_boxes)
            )
            caption = _caption(panel)
            scores = f"<br><span class='scores'>{esc(caption[1])}</span>" if len(caption) > 1 else ""
            parts.append(f"<figure><img class='whole' src='{thumb}' alt='{esc(panel.label)}'><div class='crops'>{crops}</div><figcaption><b>{esc(caption[0])}</b>{scores}</figcaption></figure>")
        parts.append("</div></section>")
    parts.append("<footer><h2>How this was made</h2><pre>" + esc("\n".join(commands)) + "</pre>")
    if weights:
        parts.append("<table><tr><th>column</th><th>weights</th><th>sha256</th></tr>")
        parts.extend(f"<tr><td>{esc(w['label'])}</td><td>{esc(w['weights'])}</td><td><code>{esc(w['sha256'])}</code></td></tr>" for w in weights)
        parts.append("</table>")
    parts.append("</footer></body></html>\n")
    return "".join(parts)


def write_report(
    images: list[ReportImage], out_dir: Path, *, title: str, commands: list[str], weights: list[dict[str, str]], boxes: list[list[Box]],
    notes: list[str] = (), sheet_format: str = "png",
) -> list[Path]:
    """Write ``index.html`` and ``contact-sheet.<png|jpg>`` into ``out_dir`` (atomically)."""
    from irc.atomic import atomic_write_bytes, atomic_write_text

    if not images:
        raise UsageError("nothing to compare: no images")
    out_dir.mkdir(parents=True, exist_ok=True)
    page = atomic_write_text(out_dir / "index.html", report_html(images, boxes, title=title, commands=commands, weights=weights, notes=notes))
    sheet = contact_sheet(images, boxes, title=title)
    buffer = io.BytesIO()
    fmt = "JPEG" if sheet_format in ("jpg", "jpeg") else "PNG"
    sheet.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"optimize": True}))
    sheet_path = atomic_write_bytes(out_dir / f"contact-sheet.{'jpg' if fmt == 'JPEG' else 'png'}", buffer.getvalue())
    return [page, sheet_path]
