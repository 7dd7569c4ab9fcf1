"""Pictures to judge results by: `irc compare`, `irc eval --report`, and the page in a real browser."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from irc.cli import main
from irc.errors import UsageError
from irc.report import Box, Panel, choose_boxes, parse_box

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- crops
def _panels(real_rgb, changed_at=(40, 24), size=16):
    """The input, an output equal to it, and one that differs only in a size x size patch."""
    same = real_rgb.copy()
    other = real_rgb.copy()
    x, y = changed_at
    other[:, y : y + size, x : x + size] = 1.0 - other[:, y : y + size, x : x + size]
    return [Panel("input", real_rgb, kind="input"), Panel("a", same), Panel("b", other)]


def test_the_automatic_crop_lands_where_the_outputs_differ(real_rgb):
    boxes = choose_boxes(_panels(real_rgb), size=16, count=1)
    assert boxes == [Box(40, 24, 16, 16)]


def test_a_single_output_is_compared_with_the_input(real_rgb):
    panels = _panels(real_rgb, changed_at=(8, 30))
    panels = [panels[0], panels[2]]  # input and the changed output only
    assert choose_boxes(panels, size=16, count=1) == [Box(8, 30, 16, 16)]


def test_crops_never_overlap_and_user_boxes_come_first(real_rgb):
    boxes = choose_boxes(_panels(real_rgb), size=16, count=3, user=[parse_box("70,50,40,40")])
    assert boxes[0] == Box(70, 50, 10, 14, "user")  # clipped to the 80 x 64 image
    assert boxes[1] == Box(40, 24, 16, 16)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y, (a, b)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "-1,0,8,8", "0,0,2,2"])
def test_a_malformed_box_is_a_usage_error(text):
    with pytest.raises(UsageError, match="--box"):
        parse_box(text)


def test_a_box_outside_the_image_is_a_usage_error(real_rgb):
    with pytest.raises(UsageError, match="outside"):
        choose_boxes(_panels(real_rgb), size=16, count=1, user=[parse_box("500,0,16,16")])


# ----------------------------------------------------------------------------- irc compare
@pytest.fixture(scope="module")
def photo_crops(tmp_path_factory) -> Path:
    """Two small crops of the bundled example photos (the README's sheet is made of these)."""
    folder = tmp_path_factory.mktemp("photos")
    for name, box in (("chelsea", (140, 60, 236, 140)), ("astronaut", (180, 60, 276, 140))):
        with Image.open(REPO / "examples" / f"{name}.png") as im:
            im.convert("RGB").crop(box).save(folder / f"{name}.png")
    return folder


def _sheet_and_page(folder: Path) -> tuple[Image.Image, str]:
    with Image.open(folder / "contact-sheet.png") as im:
        im.load()
        return im, (folder / "index.html").read_text()


def test_compare_two_weights_on_photos(capsys, tmp_path, photo_crops):
    out = tmp_path / "report"
    code, stdout, err = run(capsys, "compare", photo_crops, "-m", "tur", "-w", "default", "-w", "tur-nafnet-mio7", "-o", out, "--box", "10,10,20,20", "--crop-size", "24", "-q")
    assert code == 0, err
    assert stdout.strip() == str(out / "index.html")
    sheet, page = _sheet_and_page(out)
    assert sheet.width > 3 * 320  # input and two outputs side by side
    for name in ("astronaut.png", "chelsea.png", "tur:tur-nafnet-mio7", "(--box)", "Scores against the input"):
        assert name in page
    # the command as typed and the weights' hashes are in the footer
    assert "irc compare" in page and "-w tur-nafnet-mio7" in page
    shipped = REPO / "weights" / "tur" / "tur-nafnet-mio7.safetensors"
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() in page
    # input, two outputs, each with the whole image and three crops (one --box, two automatic), per image
    assert len(re.findall(r"<img ", page)) == 2 * 3 * (1 + 3)


def test_compare_scores_against_a_reference_as_eval_does(capsys, tmp_path, real_rgb):
    from irc.compare import image_scores
    from irc.io import read_image

    clean = tmp_path / "clean"
    noisy = tmp_path / "noisy"
    clean.mkdir(), noisy.mkdir()
    rng = np.random.default_rng(0)
    gt = np.round(real_rgb.transpose(1, 2, 0) * 255).astype(np.uint8)
    lq = np.clip(gt + rng.normal(0, 20, gt.shape), 0, 255).astype(np.uint8)
    Image.fromarray(gt).save(clean / "crop.png")
    Image.fromarray(lq).save(noisy / "crop.png")
    out = tmp_path / "report"
    code, _, err = run(capsys, "compare", noisy / "crop.png", "--reference", clean, "-m", "identity", "-m", "tur", "--task", "noise", "-o", out, "-q")
    assert code == 0, err
    page = (out / "index.html").read_text()
    expected = image_scores(read_image(noisy / "crop.png").pixels, read_image(clean / "crop.png").pixels)
    assert f"PSNR {expected['PSNR']:.2f} dB" in page  # the input's and identity's score
    assert "ground truth" in page and "Scores against ground truth" in page


def test_compare_refuses_what_it_cannot_do(capsys, tmp_path, photo_crops):
    code, _, err = run(capsys, "compare", photo_crops, "--reference", photo_crops / "chelsea.png", "-o", tmp_path / "r")
    assert code == 2 and "one file but 2 inputs" in err
    code, _, err = run(capsys, "compare", tmp_path / "nothing.png", "-o", tmp_path / "r")
    assert code == 2 and "nothing.png" in err
    code, _, err = run(capsys, "compare", photo_crops, "--sheet-format", "gif", "-o", tmp_path / "r")
    assert code == 2 and "--sheet-format" in err
    assert not (tmp_path / "r").exists()


def test_eval_report_shows_the_benchmark_images(capsys, tmp_path, data_root):
    out = tmp_path / "report"
    code, _, err = run(capsys, "eval", "--dataset", "set5", "--scale", "4", "-m", "bicubic", "--limit", "3", "--report", out, "--report-images", "2", "-o", tmp_path / "rows", "-q")
    assert code == 0, err
    page = (out / "index.html").read_text()
    assert "<h2>baby</h2>" in page and "<h2>bird</h2>" in page and "butterfly" not in page
    assert "bicubic to the output size" in page  # the x4 input shown at the output size
    rows = [line.split(",") for line in (tmp_path / "rows" / "rows.csv").read_text().splitlines()[1:]]
    assert f"PSNR {float(rows[0][2]):.2f} dB" in page  # the eval table's score, under its picture


# ----------------------------------------------------------------------------- in a browser
def _chromium() -> str:
    """Chromium from Debian's packages, installed here when missing and possible."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["sh", "-c", "apt-get update -qq && apt-get install -y -qq chromium"], capture_output=True, timeout=900, check=False)
        if shutil.which("chromium"):
            return shutil.which("chromium")
    pytest.skip("Chromium is not installed and cannot be installed here (needs root and apt-get): the report page was not checked in a browser")


# Run after the page has loaded: which images decoded, and every error the page raised.
_PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.target && e.target.src)), true);
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-probe', JSON.stringify({total: imgs.length, broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length, errors: window.__errors}));
});
</script>"""


def test_the_report_renders_in_a_headless_browser(capsys, tmp_path, photo_crops):
    import json

    browser = _chromium()
    out = tmp_path / "report"
    code, _, err = run(capsys, "compare", photo_crops, "-m", "tur", "-m", "identity", "--crop-size", "32", "-o", out, "-q")
    assert code == 0, err
    page = (out / "index.html").read_text()
    assert "<script" not in page  # the report itself runs nothing
    probe = out / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + _PROBE, 1))
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]
    done = subprocess.run([*args, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r"data-probe=\"([^\"]*)\"", done.stdout)
    assert found, "the page never finished loading"
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result == {"total": 2 * 3 * 3, "broken": 0, "errors": []}
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert console == []
    # the page as a user sees it: a screenshot that is not blank
    shot = tmp_path / "shot.png"
    subprocess.run([*args, "--window-size=1400,900", f"--screenshot={shot}", (out / "index.html").as_uri()], capture_output=True, timeout=120, check=True)
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float32)
    assert pixels.std() > 20
