"""A refresh in a real browser keeps the session's work under its link, and only under it (issue 12).

Uploads a few thousand rows of real Los Angeles Gowalla check-ins, fine-tunes, reloads the page
with the same link (the upload and the fine-tuned model are still there), downloads the project
file, and opens the app with no link and with another link (neither sees the work). Saves
screenshots of the City & POIs, Trajectories and Fine-tune pages, embedded default and uploaded
city, under tests/screenshots/ (git-ignored). Servers, browser and helpers: tests/test_browser.py.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest
from test_browser import MAP, SHOTS, SLOW, browser, server, shoot, visit  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


@pytest.fixture
def la_upload(tmp_path, shared_data):
    """la_gowalla.csv: the ~120 busiest people of the first 60,000 rows (a few thousand rows)."""
    frame = pd.read_csv(shared_data / "cities" / "la_gowalla.csv.gz", nrows=60_000)
    users = frame["user_id"].value_counts().index[:120]
    path = tmp_path / "la_gowalla.csv"
    frame[frame["user_id"].isin(users)].to_csv(path, index=False)
    return path


def token_of(page) -> str:
    page.wait_for_function("new URLSearchParams(location.search).get('s')", timeout=SLOW, polling=200)
    return parse_qs(urlparse(page.url).query)["s"][0]


def sidebar(page) -> str:
    return page.locator("[data-testid=stSidebar]").inner_text()


def test_a_refresh_keeps_the_upload_and_the_fine_tuned_model(browser, server, la_upload):  # noqa: F811
    page = browser.new_page(viewport={"width": 1500, "height": 2800}, accept_downloads=True)
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if urlparse(r.url).hostname not in
            (None, "127.0.0.1", "localhost") and urlparse(r.url).scheme in ("http", "https", "ws", "wss") else None)
    page.goto(server)
    page.wait_for_selector(MAP, timeout=SLOW)
    token = token_of(page)
    shoot(page, "s1_city_default")
    visit(page, "Trajectories")
    page.wait_for_selector(MAP, timeout=SLOW)
    shoot(page, "s2_trajectories_default")
    visit(page, "Fine-tune")
    page.get_by_text("Not fine-tuned yet").wait_for(timeout=SLOW)
    shoot(page, "s3_finetune_default")

    visit(page, "Trajectories")
    page.get_by_text("Use your own file").click()
    page.locator("[data-testid=stMainBlockContainer] [data-testid=stFileUploaderDropzoneInput]").set_input_files(str(la_upload))
    page.get_by_text("la_gowalla.csv (uploaded)").first.wait_for(timeout=SLOW)
    page.get_by_text("do not cover these trajectories").first.wait_for(timeout=SLOW)
    page.wait_for_selector(MAP, timeout=SLOW)
    shoot(page, "s4_trajectories_la")
    visit(page, "City & POIs")
    page.get_by_text("do not cover these trajectories").first.wait_for(timeout=SLOW)
    shoot(page, "s5_city_la")

    visit(page, "Fine-tune")
    page.get_by_text("pretraining included").first.wait_for(timeout=SLOW)  # LA is in the checkpoint's data
    page.get_by_role("button", name="Fine-tune on 5% of La Gowalla").click()
    page.get_by_text("Done:").first.wait_for(timeout=SLOW)
    page.wait_for_selector(".js-plotly-plot", timeout=SLOW)
    shoot(page, "s6_finetune_la")
    assert "Fine-tuned in this session" in sidebar(page)
    assert token_of(page) == token

    page.reload()  # the same link: the work is back
    page.get_by_text("Done:").first.wait_for(timeout=SLOW)
    assert token_of(page) == token
    assert "la_gowalla.csv (uploaded)" in sidebar(page) and "Fine-tuned in this session" in sidebar(page)
    page.get_by_text("Your work and this link").click()
    page.get_by_role("button", name="Download the project file").wait_for(timeout=SLOW)
    page.wait_for_timeout(600)  # the expander's opening animation
    page.locator("[data-testid=stSidebar]").screenshot(path=str(SHOTS / "s7_sidebar_after_refresh.png"))
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the project file").click()
    project = json.loads(open(download.value.path()).read())
    assert project["trajectories"]["file"] == "la_gowalla.csv" and re.fullmatch(r"[0-9a-f]{20}",
                                                                                project["trajectories"]["digest"])
    assert "/" not in json.dumps(project)  # names and digests, no path of the server's or the user's machine
    assert not page.locator("[data-testid=stException]").count()
    assert not outside, f"requests left the machine: {outside[:5]}"

    for link in (server, f"{server}/?s=another-link-that-holds-nothing"):
        other = browser.new_page(viewport={"width": 1500, "height": 1200})
        other.goto(link)
        other.wait_for_selector(MAP, timeout=SLOW)
        assert token_of(other) != token
        assert "la_gowalla" not in sidebar(other) and "Fine-tuned in this session" not in sidebar(other)
        assert "Helsinki sample" in sidebar(other)
        other.close()
    page.close()
