"""The app in a real browser: Streamlit served on 127.0.0.1, Debian's Chromium driven by Playwright.

Uploads a CSV, fine-tunes, waits until deck.gl has drawn the flow and expert maps, saves
screenshots under tests/screenshots/ (git-ignored) and checks that no request left the machine.
Skips when Chromium is missing, unless TRAJMOE_CI=1 (then it fails).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "tests" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAP = "[data-testid=stDeckGlJsonChart] canvas"
SLOW = 180_000  # ms: first page of a cold server prepares the sample and runs the model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        if os.environ.get("TRAJMOE_CI") == "1":
            pytest.fail("Chromium is missing: apt-get install -y chromium (TRAJMOE_CI=1 requires this test)")
        pytest.skip("Chromium not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


@contextlib.contextmanager
def streamlit_server(root: Path, env: dict | None = None):
    """`streamlit run` on a free local port with the work folder ``root/work`` (and ``env`` added);
    yields its URL and stops it on exit."""
    env = {**os.environ, "TRAJMOE_APP_DIR": str(root / "work"), **(env or {})}
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/streamlit_app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"streamlit did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def tiny_checkpoint(root: Path) -> Path:
    """A tiny random TrajMoE checkpoint under ``root`` (when the shipped one is missing)."""
    import torch

    from trajmoe.train.checkpoint import save_checkpoint
    from trajmoe.train.models import new_trajmoe

    torch.manual_seed(0)
    model, config = new_trajmoe(d_model=32, n_layers=2, n_heads=2, seed=0)
    return save_checkpoint(root / "tiny.safetensors", model, arch="trajmoe", config=config, info={"cities": ["nowhere"]})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run` on a free local port with its own work folder; stopped after the tests."""
    root = tmp_path_factory.mktemp("browser")
    env = {}
    shipped = REPO / "assets" / "trajmoe_pretrained.safetensors"
    if not shipped.is_file() and "TRAJMOE_CHECKPOINT" not in os.environ:
        env["TRAJMOE_CHECKPOINT"] = str(tiny_checkpoint(root))
    with streamlit_server(root, env) as url:
        yield url


@pytest.fixture
def upload(tmp_path, sample_trajectories) -> Path:
    frame = pd.read_csv(sample_trajectories)
    path = tmp_path / "my_city.csv"
    frame[frame["user_id"].isin(frame["user_id"].unique()[:80])].to_csv(path, index=False)
    return path


def maps_drawn(page, n: int) -> None:
    # Poll on a timer: the default (every animation frame) keeps Chromium repainting the maps.
    page.wait_for_function(f"document.querySelectorAll('{MAP}').length >= {n}", timeout=SLOW, polling=200)


def show_both(page) -> None:
    """Flows: both maps side by side (it opens on one map, the observed moves)."""
    page.locator(".st-key-fl_compare").get_by_text("Both, side by side", exact=True).click()
    maps_drawn(page, 2)


def shoot(page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.wait_for_selector("[data-testid=stStatusWidget]", state="detached", timeout=SLOW)  # the run is over
    page.wait_for_timeout(800)  # let deck.gl finish its first frames
    page.locator("[data-testid=stMainBlockContainer]").screenshot(path=str(SHOTS / f"{name}.png"))


def visit(page, title: str) -> None:
    page.locator("[data-testid=stSidebarNav] a", has_text=title).first.click()
    page.get_by_role("heading", level=1).first.wait_for(timeout=SLOW)


def hover_tooltips(page, n_maps: int) -> list[str]:
    """Move the mouse over a grid of points of each drawn deck.gl canvas; the visible tooltip texts."""
    maps_drawn(page, n_maps)
    page.wait_for_selector("[data-testid=stStatusWidget]", state="detached", timeout=SLOW)  # the run is over
    page.wait_for_timeout(800)  # let deck.gl finish its first frames
    seen: list[str] = []
    canvases = page.locator(MAP)
    for k in range(canvases.count()):
        canvas = canvases.nth(k)
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        # Every drawn polygon answers a hover (streets and grey cells too): try the whole grid.
        for fy in (0.5, 0.35, 0.65, 0.2, 0.8):
            for fx in (0.5, 0.35, 0.65, 0.2, 0.8, 0.9):
                page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
                page.wait_for_timeout(120)
                tip = page.locator(".deck-tooltip:visible")
                if tip.count():
                    seen.append(tip.first.inner_text())
    page.mouse.move(0, 0)
    return seen


def test_map_tooltips_are_formatted_text(browser, server):
    """Hovered tooltips of the embedded default's maps show text, not escaped markup (runs before the upload)."""
    page = browser.new_page(viewport={"width": 1500, "height": 2200})
    page.goto(server)
    page.wait_for_selector(MAP, timeout=SLOW)
    tips = {"City & POIs": hover_tooltips(page, 1)}
    visit(page, "Flows")
    page.get_by_text("zero-shot").first.wait_for(timeout=SLOW)
    show_both(page)
    tips["Flows"] = hover_tooltips(page, 2)
    visit(page, "Experts")
    page.get_by_text("What each expert stands for").wait_for(timeout=SLOW)
    tips["Experts"] = hover_tooltips(page, 1)
    data_words = {"City & POIs": ("",), "Flows": ("moves by", "arrivals"), "Experts": ("expert",)}  # the data's, not the base map's
    for name, texts in tips.items():
        assert any(t.strip() and any(w in t for w in data_words[name]) for t in texts), f"{name}: no data tooltip: {texts}"
        for text in texts:
            assert not any(bad in text for bad in ("<b>", "<br", "</", "{tip")), f"{name}: raw markup in tooltip {text!r}"
    assert not page.locator("[data-testid=stException]").count()
    page.close()


def test_upload_finetune_and_maps_draw(browser, server, upload):
    page = browser.new_page(viewport={"width": 1500, "height": 2200})
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url)
            if urlparse(r.url).hostname not in (None, "127.0.0.1", "localhost") and urlparse(r.url).scheme in ("http", "https", "ws", "wss")
            else None)
    page.goto(server)
    page.wait_for_selector(MAP, timeout=SLOW)  # the POI map of the bundled Helsinki centre
    shoot(page, "1_city_pois")

    visit(page, "Flows")  # opens ready: the pretrained model's zero-shot flows of the embedded default
    page.get_by_text("zero-shot").first.wait_for(timeout=SLOW)
    maps_drawn(page, 1)
    shoot(page, "1b_flows_default")

    visit(page, "Trajectories")
    page.get_by_text("Use your own file").click()
    page.locator("[data-testid=stMainBlockContainer] [data-testid=stFileUploaderDropzoneInput]").set_input_files(str(upload))
    page.get_by_text("my_city.csv (uploaded)").first.wait_for(timeout=SLOW)
    page.wait_for_selector(MAP, timeout=SLOW)
    shoot(page, "2_trajectories")

    visit(page, "Fine-tune")
    page.get_by_role("button", name="Fine-tune on 5% of My City").click()
    page.get_by_text("Done:").first.wait_for(timeout=SLOW)
    page.wait_for_selector(".js-plotly-plot", timeout=SLOW)
    shoot(page, "3_finetune")

    visit(page, "Flows")
    page.get_by_text("fine-tuned on 5% of My City").first.wait_for(timeout=SLOW)
    show_both(page)
    shoot(page, "4_flows")

    visit(page, "Experts")
    page.get_by_text("What each expert stands for").wait_for(timeout=SLOW)
    maps_drawn(page, 1)
    shoot(page, "5_experts")

    visit(page, "Scenario")
    page.get_by_text("Expected effect of adding").first.wait_for(timeout=SLOW)
    page.wait_for_selector(MAP, timeout=SLOW)
    shoot(page, "6_scenario")

    assert not page.locator("[data-testid=stException]").count()
    assert not outside, f"requests left the machine: {outside[:5]}"
    page.close()
