"""Names from files never become Markdown in a real browser (issue 27, item 3): a trajectory file
and a project file that name a Markdown image and link pointing at a local recording server, and a
``www.`` name, are shown as typed: the browser asks that server for nothing, and the page holds no
image or link to it. (The tester's report: such an image was fetched four times, once per page.)
Servers, browser and helpers: tests/test_browser.py.
"""

from __future__ import annotations

import http.server
import json
import threading

import pandas as pd
import pytest
from test_browser import SLOW, browser, server, visit  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


@pytest.fixture
def recorder():
    """An HTTP server on 127.0.0.1 that answers every request with 404 and records its path."""
    seen: list[str] = []

    class Record(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            seen.append(self.path)
            self.send_error(404)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Record)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], seen
    httpd.shutdown()


def test_a_markdown_file_name_is_shown_as_typed(browser, server, recorder, sample_trajectories):  # noqa: F811
    port, seen = recorder
    host = f"127.0.0.1:{port}"
    # No slash (a browser sends only the file's name): "http:host" is still read as http://host/.
    name = f"![t](http:{host}) [a](http:{host}) www.evil.example.csv"
    frame = pd.read_csv(sample_trajectories)
    data = frame[frame["user_id"].isin(frame["user_id"].unique()[:60])].to_csv(index=False).encode()
    page = browser.new_page(viewport={"width": 1500, "height": 2200})
    page.goto(server)
    page.get_by_role("heading", level=1).first.wait_for(timeout=SLOW)
    visit(page, "Trajectories")
    page.get_by_text("Use your own file").click()
    page.locator("[data-testid=stMainBlockContainer] [data-testid=stFileUploaderDropzoneInput]").set_input_files(
        files=[{"name": name, "mimeType": "text/csv", "buffer": data}])
    sidebar = page.locator("[data-testid=stSidebar]")
    sidebar.get_by_text(f"![t](http:{host})", exact=False).first.wait_for(timeout=SLOW)  # shown as typed

    project = {"format": "trajmoe-app-project", "version": 1, "trajectories": None, "city": None,
               "pois": {"file": name, "digest": "0123456789abcdef0123"}}
    sidebar.get_by_text("Your work and this link").click()
    sidebar.locator("[data-testid=stFileUploaderDropzoneInput]").set_input_files(
        files=[{"name": "p.json", "mimeType": "application/json", "buffer": json.dumps(project).encode()}])
    sidebar.get_by_text("again on the City & POIs page").wait_for(timeout=SLOW)
    for title in ("City & POIs", "Fine-tune", "Trajectories"):
        visit(page, title)
        page.wait_for_selector("[data-testid=stStatusWidget]", state="detached", timeout=SLOW)
        found = page.locator(f"img[src*='{host}'], a[href*='{host}'], a[href*='evil.example']")
        assert found.count() == 0, (title, [found.nth(i).evaluate("e => e.parentElement.outerHTML")
                                            for i in range(found.count())])
    assert f"![t](http:{host})" in sidebar.inner_text()
    assert seen == []  # the browser never called the server the file named
