"""A session's work survives a refresh under its link, and only under its link (issue 12, items 5 and 12);
POIs that miss the trajectories are noticed (defect 3); the project file loads back (build 4).

Streamlit AppTest sessions on a tiny checkpoint. A refresh in the browser is a new Streamlit
session that opens the same link: here a new AppTest with the first one's ``?s=`` token.
tests/test_browser_session.py does the same in a real browser.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from test_app import go

APP = Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py"
TIMEOUT = 240


@pytest.fixture(scope="module")
def env(tmp_path_factory, sample_trajectories, app_sandbox):
    root = tmp_path_factory.mktemp("app_session")
    frame = pd.read_csv(sample_trajectories)
    small = frame[frame["user_id"].isin(frame["user_id"].unique()[:60])]
    with app_sandbox(root, n_layers=2) as ckpt:
        yield {"checkpoint": ckpt, "csv": small.to_csv(index=False).encode(), "root": root, "work": root / "work"}


def open_app(token: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if token is not None:
        at.query_params["s"] = token
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def sess(at: AppTest):
    from state.session import KEY

    return at.session_state[KEY]


def sidebar(at: AppTest) -> str:
    return "\n".join([c.value for c in at.sidebar.caption] + [w.value for w in at.sidebar.warning])


def text(at: AppTest) -> str:
    parts = [*at.markdown, *at.caption, *at.info, *at.warning, *at.success, *at.error]
    return "\n".join(p.value for p in parts)


@pytest.fixture(scope="module")
def worked(env):
    """A session that uploaded a file, chose k = 7 and fine-tuned: (AppTest, token)."""
    at = open_app()
    go(at, "trajectories")
    at.file_uploader(key="traj_upload").set_value(("my_city.csv", env["csv"], "text/csv")).run()
    at.sidebar.slider(key="privacy_k").set_value(7).run()
    go(at, "finetune")
    at.number_input(key="ft_max_steps").set_value(2)
    at.button(key="ft_run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    return at, at.query_params["s"]


def test_the_sidebar_names_the_fine_tuned_model_at_once(worked):
    at, _ = worked
    assert "Done:" in text(at)
    assert "Fine-tuned in this session" in sidebar(at) and "Pretrained:" not in sidebar(at)  # defect 9


def test_a_refresh_with_the_same_link_keeps_the_upload_and_the_fine_tuned_model(env, worked):
    at, token = worked
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", token)
    again = open_app(token)  # a refresh: a new Streamlit session, the same link
    assert again.query_params["s"] == token
    assert "my_city.csv (uploaded)" in sidebar(again) and "Fine-tuned in this session" in sidebar(again)
    assert again.sidebar.slider(key="privacy_k").value == 7
    assert "kept on this server" in sidebar(again) and "7 days" in sidebar(again)
    go(again, "finetune")
    assert f"Done: {sess(at).finetuned.steps} training step" in text(again)
    before, after = sess(at).finetuned, sess(again).finetuned
    assert after.files == before.files and after.metrics == before.metrics
    # reloaded from the saved weights and predicting again: the same predictions as before the refresh
    assert after.model is not before.model
    assert (after.outputs.ranks == before.outputs.ranks).all()
    assert at.number_input(key="ft_max_steps").value == again.number_input(key="ft_max_steps").value == 2


@pytest.mark.parametrize("link", [None, "someone-elses-link-0123456789", "../../etc", ""])
def test_another_link_or_none_sees_nothing_of_it(env, worked, link):
    _, token = worked
    other = open_app(link)
    assert other.query_params["s"] != token
    assert sess(other).trajectories is None and sess(other).finetuned is None
    assert "my_city.csv" not in sidebar(other) and "Pretrained:" in sidebar(other)
    assert other.sidebar.slider(key="privacy_k").value == 5


def test_the_session_files_live_under_its_own_folder(env, worked):
    _, token = worked
    folder = env["work"] / "sessions" / token
    names = {p.relative_to(folder).parts[0] for p in folder.rglob("*") if p.is_file()}
    assert names == {"session.json", ".lock", "uploads", "cities", "finetuned"}  # .lock: saves of its tabs take turns
    assert not (env["work"] / "uploads").exists()  # nothing of the upload outside the session's folder


def test_nothing_the_app_writes_or_hands_out_carries_a_path(env, worked):
    """Build item 7: sidecars, prepared folders and downloads name files, never the server's paths."""
    at, token = worked
    folder = env["work"] / "sessions" / token
    root = str(env["root"])
    shared = [p for p in folder.rglob("*.json") if p.name != "session.json"]  # session.json: the server's own record
    assert any(p.name == "meta.json" for p in shared) and any(p.parent.name == "finetuned" for p in shared)
    for path in shared:
        assert root not in path.read_text() and "/tmp/" not in path.read_text(), path
    for name, data in sess(at).finetuned.files.items():
        assert root.encode() not in data, name
    assert json.loads(sess(at).finetuned.files["json"])["training"]["from"] == env["checkpoint"].name


def test_delete_my_data_removes_all_of_it_and_gives_a_new_link(env, sample_trajectories):
    at = open_app()
    go(at, "trajectories")
    at.file_uploader(key="traj_upload").set_value(("delete_me.csv", env["csv"], "text/csv")).run()
    token = at.query_params["s"]
    folder = env["work"] / "sessions" / token
    assert any(folder.rglob("delete_me.csv"))
    at.sidebar.button(key="delete_my_data").click().run()  # asks first
    assert not at.exception and folder.exists()
    at.sidebar.button(key="delete_confirm").click().run()
    assert not at.exception
    assert not folder.exists()
    assert at.query_params["s"] != token
    assert sess(at).trajectories is None and "delete_me.csv" not in sidebar(at)
    go(at, "trajectories")  # the uploader still holds the file in the browser: it does not come back
    assert sess(at).trajectories is None
    assert sess(open_app(token)).trajectories is None


def test_a_link_expires_after_the_stated_days(env):
    from state import saved

    at = open_app()
    go(at, "trajectories")
    at.file_uploader(key="traj_upload").set_value(("old.csv", env["csv"], "text/csv")).run()
    token = at.query_params["s"]
    record = env["work"] / "sessions" / token / "session.json"
    assert sess(open_app(token)).trajectories is not None  # still there, and opened again now
    old = time.time() - (saved.KEEP_DAYS * 86400 + 60)
    os.utime(record, (old, old))
    late = open_app(token)
    assert sess(late).trajectories is None and late.query_params["s"] != token
    assert not record.parent.exists()


@pytest.fixture(scope="module")
def la_csv(shared_data) -> bytes:
    """A few thousand rows of real Los Angeles Gowalla check-ins (the 120 busiest people)."""
    frame = pd.read_csv(shared_data / "cities" / "la_gowalla.csv.gz", nrows=60_000)
    users = frame["user_id"].value_counts().index[:120]
    return frame[frame["user_id"].isin(users)].to_csv(index=False).encode()


def test_pois_that_miss_the_trajectories_are_noticed_and_the_area_offered(env, la_csv):
    at = open_app()
    go(at, "trajectories")
    at.file_uploader(key="traj_upload").set_value(("la_gowalla.csv", la_csv, "text/csv")).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "do not cover" in sidebar(at)
    warning = next(w.value for w in at.warning if "do not cover these trajectories" in w.value)
    assert "Helsinki city centre POIs" in warning and "none of the visits lies in the area" in warning
    fetch = at.button(key="fetch_area")
    west, south, east, north = map(float, re.findall(r"-?\d+\.\d+", fetch.help))
    assert -119 < west < east < -117.5 and 33.5 < south < north < 34.5  # the box is Los Angeles
    start = time.monotonic()
    fetch.click().run()  # offline here: fails fast, in words, with the offline options
    assert not at.exception
    if at.error:
        assert time.monotonic() - start < 60
        message = at.error[0].value
        assert "Could not fetch POIs online" in message and "download.geofabrik.de" in message
        assert "Traceback" not in message and "trajmoe." not in message
    at.button(key="no_pois").click().run()
    assert not at.exception
    assert "POIs: none" in sidebar(at) and "do not cover" not in sidebar(at)
    assert "Going on without POIs" in text(at), text(at)
    go(at, "city")  # no POIs, no streets: the trajectories' own streets are offered
    assert "no streets under them" in text(at)
    fetch = at.button(key="fetch_basemap")
    assert -119 < min(map(float, re.findall(r"-?\d+\.\d+", fetch.help))) < -117.5
    fetch.click().run()  # offline here: fails fast, in words
    assert not at.exception
    if at.error:
        message = at.error[0].value
        assert "Could not fetch the streets online" in message and "download.geofabrik.de" in message


def test_the_pretrained_result_on_a_city_it_was_trained_on_is_not_called_zero_shot(env):
    from state.finetuning import metrics_table
    from state.predictions import pretrained_on

    # what assets/regenerate.py writes: one city per pretraining dataset, in the same order
    meta = {"cities": ["New York", "New York", "Los Angeles"], "domain_experts": ["New York", "Los Angeles"],
            "training": {"kind": "pretrain", "datasets": ["nyc_foursquare", "nyc_gowalla", "la_gowalla"]}}

    class Prep:  # what pretrained_on reads of a prepared city
        def __init__(self, city: str, source: str):
            self.meta, self.report = {"city": city}, {"source": source}

    assert pretrained_on(meta, Prep("La Gowalla", "la_gowalla.csv")) == "Los Angeles (la_gowalla)"
    assert pretrained_on(meta, Prep("Los Angeles", "my_checkins.csv")) == "Los Angeles"
    assert pretrained_on(meta, Prep("Helsinki", "helsinki_synthetic_trajectories.csv.gz")) is None
    shipped = Path(__file__).resolve().parent.parent / "assets" / "trajmoe_pretrained.json"
    if shipped.is_file():  # the shipped checkpoint was pretrained on Los Angeles Gowalla
        assert pretrained_on(json.loads(shipped.read_text()), Prep("La Gowalla", "la_gowalla.csv.gz")).startswith(
            "Los Angeles")
    scores = {"acc@1": 0.4612, "acc@5": 0.7, "acc@10": 0.8, "mrr": 0.55, "n": 10}
    table = metrics_table(dict.fromkeys(["zero-shot", "fine-tuned", "markov", "epr"], scores),
                          seen="Los Angeles (la_gowalla)")
    assert "zero-shot" not in " ".join(table["Model"]) and "saw Los Angeles (la_gowalla)" in table["Model"][0]


def test_a_project_file_loads_back(env):
    from state import inputs

    at = open_app()
    digest = inputs.digest(env["csv"])
    project = {"format": "trajmoe-app-project", "version": 1,
               "trajectories": {"file": "my_city.csv", "digest": digest, "label": "my_city.csv (uploaded)"},
               "pois": None, "city": "Riverside", "resolution": 9, "weekday_unreliable": True, "privacy_k": 9,
               "finetune": {"share": 10, "epochs": 2, "max_steps": 3, "light": True}}
    data = json.dumps(project).encode()
    at.sidebar.file_uploader(key="project_upload").set_value(("p.json", data, "application/json")).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Upload my_city.csv again" in line for line in sess(at).project_todo)  # not held by this link
    assert at.sidebar.slider(key="privacy_k").value == 9 and sess(at).resolution == 9
    go(at, "finetune")
    assert at.slider(key="ft_share").value == 10 and at.number_input(key="ft_epochs").value == 2
    assert at.toggle(key="ft_light").value is True

    go(at, "trajectories")  # once the file is uploaded under this link, the project finds it by digest
    at.file_uploader(key="traj_upload").set_value(("my_city.csv", env["csv"], "text/csv")).run()
    at.sidebar.file_uploader(key="project_upload").set_value(("p2.json", data, "application/json")).run()
    assert sess(at).trajectories.key == digest and sess(at).city == "Riverside"
    assert sess(at).project_todo == ["Project loaded."]

    bad = json.dumps({**project, "privacy_k": 500}).encode()
    at.sidebar.file_uploader(key="project_upload").set_value(("bad.json", bad, "application/json")).run()
    assert not at.exception
    assert "not a project file the app can read" in sess(at).project_todo[0]


def test_the_hour_of_week_heatmap_has_hour_ticks_and_no_nan_on_hover(env):
    """Defect 10: hour ticks on the expert x hour-of-week heatmap; a blank square says why on hover."""
    import numpy as np

    import charts

    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    columns = [f"{d} {h:02d}h" for d in days for h in range(24)]
    z = np.linspace(0.5, 1.5, 2 * 168).reshape(2, 168)
    z[1, 3] = np.nan
    matrix = pd.DataFrame(z, index=["Expert 1", "Expert 2"], columns=columns)
    fig = charts.hour_heatmap(matrix, title="t")
    ticks = list(fig.layout.xaxis.ticktext)
    assert list(fig.layout.xaxis.tickvals) == list(range(0, 168, 6))
    assert ticks[:4] == ["0h", "6h", "12h<br><b>Mon</b>", "18h"] and "Sun" in ticks[-2]
    for figure in (fig, charts.heatmap(matrix, title="t", colour_label="× average")):
        text = np.asarray(figure.data[0].text)
        assert text[1, 3] == "too few visits to say" and "nan" not in " ".join(text.ravel()).lower()


def test_the_check_adds_up_on_real_data(env, shared_data):
    """Rows read = used + merged + left out; people read = kept + dropped (LA check-ins, some people dropped)."""
    head = pd.read_csv(shared_data / "cities" / "la_gowalla.csv.gz", nrows=3000)
    at = open_app()
    go(at, "trajectories")
    at.file_uploader(key="traj_upload").set_value(("la_head.csv", head.to_csv(index=False).encode(), "text/csv")).run()
    assert not at.exception
    read, used, merged, left_out, people = (int(m.value.replace(",", "")) for m in at.metric)
    assert read == len(head) == used + merged + left_out
    found = re.search(r"([\d,]+) people read: ([\d,]+) kept, ([\d,]+) dropped\.", text(at))
    n_read, kept, dropped = (int(g.replace(",", "")) for g in found.groups())
    assert n_read == head["user_id"].nunique() == kept + dropped and kept == people and dropped > 0
    assert f"{read:,} rows read: {used:,} used, {merged:,} merged into other rows, {left_out:,} left out." in text(at)


def test_a_tiny_file_says_why_nothing_is_drawn(env, sample_trajectories):
    """Defect 6: a 12-row file draws no blank map or empty chart; it says why and what to do."""
    frame = pd.read_csv(sample_trajectories)
    tiny = frame[frame["user_id"].isin(frame["user_id"].unique()[:3])].groupby("user_id").head(4)
    assert len(tiny) == 12
    at = open_app()
    go(at, "trajectories")
    at.file_uploader(key="traj_upload").set_value(("tiny.csv", tiny.to_csv(index=False).encode(), "text/csv")).run()
    assert not at.exception
    note = next(i.value for i in at.info if i.value.startswith("Nothing to show"))
    assert "fewer than 5 people" in note and "lower the privacy slider" in note
    assert not at.get("plotly_chart") and not at.get("deck_gl_json_chart")
    go(at, "finetune")
    assert "Too little data to fine-tune" in text(at) and at.button(key="ft_run").disabled
    assert not at.main.get("download_button")


def test_damaged_kept_weights_are_said_not_crashed(env, worked):
    """Runs last on ``worked``: its kept weights are cut short; the refreshed page says so."""
    _, token = worked
    weights = env["work"] / "sessions" / token / "finetuned" / "trajmoe_finetuned.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    at = open_app(token)
    go(at, "finetune")
    assert any("could not be loaded again" in w.value for w in at.warning)
    assert "Not fine-tuned yet" in text(at) and sess(at).finetuned is None
