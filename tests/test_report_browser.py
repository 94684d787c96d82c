"""A report as a person sees it: index.html rendered by headless Chromium (`make setup` installs Debian's
`chromium` when it may). Asserts the DOM after load has the leaderboard table and that every image
actually decoded (naturalWidth > 0), and that a screenshot is not blank."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from bench.cli import main
from tests import progress
from tests.conftest import needs_data
from tests.report_runs import shared_runs

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)
pytestmark = [needs_data, pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (`make setup` installs Debian's chromium when "
                             "running as root with apt-get; else `apt-get install chromium`)")]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000", "--window-size=1300,2400"]
# Runs after load inside the page: marks each image with whether it decoded, so --dump-dom can show it.
PROBE = """<script>window.addEventListener('load', () => { for (const img of document.images)
  img.setAttribute('data-decoded', img.complete && img.naturalWidth > 0 ? 'yes' : 'no'); });</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return progress.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], "headless chromium")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    runs = shared_runs(tmp_path_factory)
    out = tmp_path_factory.mktemp("browser") / "regression-tiny"
    assert main(["report", str(runs.protocol), "--out", str(out)]) == 0
    # The probe goes into a copy, so the report under test is byte-for-byte what `bench report` wrote.
    probe = out / "probe.html"
    probe.write_text((out / "index.html").read_text().replace("</body>", PROBE + "</body>"))
    return out, probe


def test_leaderboard_and_every_image_render_in_chromium(page):
    out, probe = page
    done = _chromium("--dump-dom", probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert '<table class="leaderboard"' in dom and "<td>trained</td>" in dom and "<td>untrained</td>" in dom
    n_images = dom.count("<img ")
    assert n_images >= 6  # bars for IS, FID, KID, FID_inf + two sample grids + curves
    assert dom.count('data-decoded="yes"') == n_images, dom.count('data-decoded="no"')


def test_screenshot_is_not_blank(page):
    out, _ = page
    shot = out.parent / "shot.png"
    done = _chromium(f"--screenshot={shot}", (out / "index.html").as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # text, tables and plots, not an empty page
