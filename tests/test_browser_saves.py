"""One link open in two browser tabs (two Playwright contexts, issue 27 items 1 and 2), in real Chromium.

Tab 1 fine-tunes (2 steps of a tiny checkpoint); tab 2, opened on the same link before that, moves
the privacy slider: the weights stay on disk, session.json still lists the model, and tab 2 is
told its view is stale and reloads it. Tab 1 deletes the link's data (with its confirmation);
a click in tab 2 afterwards brings nothing back and says the data was deleted; opening the
deleted link says so too. Servers, browser and helpers: tests/test_browser.py.
"""

from __future__ import annotations

import json
import time

import pytest
from test_browser import (  # noqa: F401  (fixtures)
    REPO,
    SLOW,
    browser,
    streamlit_server,
    tiny_checkpoint,
)
from test_browser_session import sidebar, token_of

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A server of its own (its work folder is inspected) on a tiny checkpoint: fine-tuning takes a second."""
    root = tmp_path_factory.mktemp("browser_saves")
    with streamlit_server(root, {"TRAJMOE_CHECKPOINT": str(tiny_checkpoint(root))}) as url:
        yield url, root / "work"


def idle(page) -> None:
    """The page's run is over (Streamlit's running indicator gone)."""
    page.wait_for_timeout(300)
    page.wait_for_selector("[data-testid=stStatusWidget]", state="detached", timeout=SLOW)


SLIDER = "[data-testid=stSidebar] [data-testid=stSlider] input[type=range]"  # react-aria's hidden input


def slider_at(page, value: int) -> None:
    page.wait_for_function(f"document.querySelector('{SLIDER}')?.value == '{value}'", timeout=SLOW, polling=200)


def slide(page, to: int) -> None:
    """Move the sidebar's privacy slider to ``to`` with the keyboard, as a planner would."""
    thumb = page.locator(SLIDER).first
    thumb.wait_for(state="attached", timeout=SLOW)
    idle(page)
    now = int(thumb.input_value())
    thumb.focus()
    for _ in range(abs(to - now)):
        page.keyboard.press("ArrowRight" if to > now else "ArrowLeft")
    slider_at(page, to)
    idle(page)


def wait_until(check, what: str, timeout: float = 60):
    """Poll ``check()`` until it is truthy (the server saves at the end of a run the page already shows)."""
    deadline = time.time() + timeout
    while not (found := check()):
        assert time.time() < deadline, what
        time.sleep(0.2)
    return found


def saved_record(folder, **expect) -> dict:
    """session.json once it holds ``expect``."""
    def check():
        try:
            record = json.loads((folder / "session.json").read_text())
        except FileNotFoundError:
            return None
        return record if all(record.get(k) == v for k, v in expect.items()) else None

    return wait_until(check, f"session.json never held {expect}")


def test_two_tabs_of_one_link_keep_each_others_work_and_deletion_stays_deleted(browser, app):  # noqa: F811
    url, work = app
    one = browser.new_context(viewport={"width": 1400, "height": 1400}).new_page()
    one.goto(f"{url}/finetune")  # the lightest page: no map
    slide(one, 6)  # a choice: the link now keeps something
    token = token_of(one)
    folder = work / "sessions" / token
    saved_record(folder, privacy_k=6)

    two = browser.new_context(viewport={"width": 1400, "height": 1400}).new_page()
    two.goto(f"{url}/finetune?s={token}")
    slider_at(two, 6)
    assert token_of(two) == token
    idle(two)

    one.get_by_text("Advanced").click()
    steps = one.locator(".st-key-ft_max_steps input")
    steps.fill("2")
    steps.press("Enter")
    idle(one)
    one.get_by_role("button", name="Fine-tune on 5% of Helsinki").click()
    one.get_by_text("Done:").first.wait_for(timeout=SLOW)
    weights = folder / "finetuned" / "trajmoe_finetuned.safetensors"
    assert weights.is_file()
    key = wait_until(lambda: (saved_record(folder).get("finetuned") or {}).get("key"), "no model in session.json")

    slide(two, 8)  # tab 2 never saw the model: it moves the slider
    two.get_by_text("Another tab of this link has fine-tuned").wait_for(timeout=SLOW)
    record = saved_record(folder, privacy_k=8)  # tab 2's change is kept...
    assert weights.is_file() and record["finetuned"]["key"] == key  # ...and so is tab 1's model
    assert "Fine-tuned in this session" not in sidebar(two)  # what it shows is old: it says so
    two.get_by_role("button", name="Reload this link's saved work").click()
    two.get_by_text("Fine-tuned in this session").wait_for(timeout=SLOW)
    assert "Another tab of this link" not in sidebar(two)

    one.get_by_text("Your work and this link").click()
    one.get_by_role("button", name="Delete my data now").click()
    one.get_by_role("button", name="Yes, delete it all").click()
    one.get_by_text("Your data was deleted from this server").wait_for(timeout=SLOW)
    assert not folder.exists() and token_of(one) != token

    two.locator("[data-testid=stSidebarNav] a", has_text="Trajectories").first.click()  # any click in tab 2
    two.get_by_text("The work kept under this link was deleted on").wait_for(timeout=SLOW)
    idle(two)
    assert not folder.exists() and not weights.exists()
    assert not two.locator("[data-testid=stException]").count()

    three = browser.new_context().new_page()  # the deleted link, opened again
    three.goto(f"{url}/finetune?s={token}")
    three.get_by_text("The work kept under this link was deleted on").wait_for(timeout=SLOW)
    assert token_of(three) != token and "Fine-tuned in this session" not in sidebar(three)
    assert not folder.exists()

    two.get_by_role("button", name="Start afresh under a new link").click()
    two.get_by_role("heading", level=1).first.wait_for(timeout=SLOW)
    assert token_of(two) not in (token, token_of(one))
    for page in (one, two, three):
        page.context.close()


def test_a_fine_tuning_cut_off_by_a_server_restart_is_said_on_reconnect(browser, tmp_path):  # noqa: F811
    """The server is stopped while a long fine-tuning runs (the shipped model, all the data, 10 epochs)
    and started again on the same work folder: the link says the run did not finish, and why."""
    shipped = REPO / "assets" / "trajmoe_pretrained.safetensors"
    env = {} if shipped.is_file() else {"TRAJMOE_CHECKPOINT": str(tiny_checkpoint(tmp_path))}
    page = browser.new_context(viewport={"width": 1400, "height": 1400}).new_page()
    with streamlit_server(tmp_path, env) as url:
        page.goto(f"{url}/finetune")
        page.get_by_text("Not fine-tuned yet").wait_for(timeout=SLOW)
        idle(page)
        epochs = page.locator(".st-key-ft_epochs input")
        epochs.fill("10")
        epochs.press("Enter")
        idle(page)
        page.locator(".st-key-ft_share input[type=range]").focus()
        page.keyboard.press("End")  # 100% of the data
        idle(page)
        page.get_by_role("button", name="Fine-tune on 100% of Helsinki").click()
        page.get_by_text("Fine-tuning: step").first.wait_for(timeout=SLOW)
        token = token_of(page)
        record = tmp_path / "work" / "sessions" / token / "session.json"
        started = json.loads(record.read_text())["running"]["started"]
    assert json.loads(record.read_text())["running"]["started"] == started  # stopped mid-run: still says so
    with streamlit_server(tmp_path, env) as url:  # the restarted server, the same work folder
        page.goto(f"{url}/finetune?s={token}")
        hhmm = time.strftime("%H:%M", time.gmtime(started))
        page.get_by_text(f"Your fine-tuning started at {hhmm} UTC did not finish: the server restarted. "
                         "Start it again on Fine-tune.").wait_for(timeout=SLOW)
        assert token_of(page) == token
        assert json.loads(record.read_text())["running"] is None  # said once
    page.context.close()
