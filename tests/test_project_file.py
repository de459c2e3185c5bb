"""Hostile project files (issue 27, item 3): whatever a project file holds, the page stays up, says
what is wrong in one message, applies nothing, and shows nothing from the file as Markdown.

The cases are the ones a tester made: ``privacy_k: 1e999``, ``resolution: -1e999``, a 200,000-deep
nested JSON, a 1.5 MB file, ``"weekday_unreliable": "no"``, ``privacy_k: 19.99``,
``trajectories: {"none": true}``, a city or label holding a Markdown image, and a city that is an
object, a number or 2,000,000 characters. Each is loaded through the sidebar's uploader of a real
app session (Streamlit AppTest, tiny checkpoint) and read by ``state.project.read_project`` alone.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py"
TIMEOUT = 240
PAYLOAD = "![t](http://evil.example/track.png)"  # a Markdown image: the browser would fetch it
NAME = "![t](http:evil.example).csv"  # the same as a file name (no slash): browsers read http:host as http://host
BASE = {  # a good project whose every setting differs from a new session's
    "format": "trajmoe-app-project", "version": 1, "trajectories": None, "pois": None, "city": "Riverside",
    "resolution": 9, "weekday_unreliable": True, "privacy_k": 9,
    "finetune": {"share": 10, "epochs": 2, "max_steps": 3, "light": True},
}
READ_ERROR = "not a project file the app can read"


def with_field(name: str, raw: str) -> bytes:
    """BASE with one field's JSON text replaced by ``raw`` (text json.dumps cannot write: 1e999, NaN)."""
    text = json.dumps({**BASE, name: "@@"})
    return text.replace('"@@"', raw).encode()


HOSTILE = {  # case -> (file content, words the one message must hold)
    "k_1e999": (with_field("privacy_k", "1e999"), "privacy_k must be a whole number from 2 to 20, got Infinity"),
    "resolution_-1e999": (with_field("resolution", "-1e999"), "resolution must be a whole number from 5 to 12"),
    "k_19.99": (with_field("privacy_k", "19.99"), "privacy_k must be a whole number from 2 to 20, got 19.99"),
    "k_true": (with_field("privacy_k", "true"), "got true"),
    "k_NaN": (with_field("privacy_k", "NaN"), "NaN"),
    "k_10**5000": (with_field("privacy_k", "9" * 5000), "not valid JSON"),
    "weekday_no": (with_field("weekday_unreliable", '"no"'), 'weekday_unreliable must be true or false, got "no"'),
    "nested_200000": (with_field("city", "[" * 200_000 + "]" * 200_000), "nests lists or objects more than"),
    "file_1.5MB": (with_field("city", json.dumps("x" * 1_500_000)), "it is 1.5 MB"),
    "lists_300000": (with_field("city", "[" + "[]," * 300_000 + "[]]"), "lists or objects; a project file holds 4"),
    "trajectories_none": (with_field("trajectories", '{"none": true}'), "trajectories must be null"),
    "city_markdown": (with_field("city", json.dumps(PAYLOAD)), "city must be a plain name"),
    "city_object": (with_field("city", '{"name": "Riverside"}'), "city must be a name in quotes"),
    "city_number": (with_field("city", "42"), "city must be a name in quotes"),
    "city_2000000": (with_field("city", json.dumps("x" * 2_000_000)), "it is 2.0 MB"),
    "city_500": (with_field("city", json.dumps("x" * 500)), "got a text of 500 characters"),
    "city_newline": (with_field("city", json.dumps("River\nside")), "on one line"),
    "finetune_share_1e999": (with_field("finetune", '{"share": 1e999}'), "share must be a whole number"),
    "file_entry_path": (with_field("pois", '{"file": "/etc/passwd", "digest": "0123456789abcdef0123"}'),
                        "a file name (no folder)"),
    "unknown_field": (json.dumps({**BASE, "label": PAYLOAD}).encode(), 'the field "label"'),
    "pois_none_1": (with_field("pois", '{"none": 1}'), "pois must be null"),
    "version_1.0": (with_field("version", "1.0"), "its version is 1.0"),
    "not_json": (b"{not json", "not valid JSON"),
    "a_list": (b"[1, 2]", "has no \"format\""),
    "not_utf8": (b"\xff\xfe\x00{", "not UTF-8"),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory, small_upload, app_sandbox):
    root = tmp_path_factory.mktemp("project_file")
    with app_sandbox(root, n_layers=1) as ckpt:
        yield {"checkpoint": ckpt, "csv": small_upload, "root": root}


def open_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


@pytest.fixture(scope="module")
def app(env) -> AppTest:
    """One session on the embedded sample that every hostile file is loaded into in turn."""
    return open_app()


def sess(at: AppTest):
    from state.session import KEY

    return at.session_state[KEY]


def settings(at: AppTest) -> tuple:
    """Everything a project file may change."""
    s = sess(at)
    return (s.trajectories, s.pois, s.city, s.resolution, s.weekday_unreliable, s.finetune_settings,
            at.sidebar.slider(key="privacy_k").value)


def load(at: AppTest, name: str, data: bytes) -> AppTest:
    at.sidebar.file_uploader(key="project_upload").set_value((name, data, "application/json")).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def markdown_shown(at: AppTest) -> list[str]:
    """Every text the page draws as Markdown: bodies (markdown, captions, alerts, headings), widget
    and container labels, help tooltips."""
    found: list[str] = []

    def walk(value, key=None):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and key in ("body", "label", "help"):
            found.append(value)

    for node in [*at.main, *at.sidebar]:
        if getattr(node, "proto", None) is not None:
            walk(MessageToDict(node.proto))
    return found


def unescaped_link_or_image(text: str) -> str | None:
    """The part of ``text`` Markdown would draw as a link, an image or HTML. Links, images and HTML
    are syntax: an escaped character cannot start one, so escaped characters are taken out first.
    GFM autolinks (www., http://, user@host) are found in the text after the escapes are read (a
    real browser linked "www\\.x"), so they are looked for in that text."""
    syntax = re.search(r"!?\[[^\]]*\]\(|<[A-Za-z/!]", re.sub(r"\\.", "", text))
    autolink = re.search(r"https?://|www\.|[\w.+-]@[\w-]", re.sub(r"\\(.)", r"\1", text), re.IGNORECASE)
    found = syntax or autolink
    return found.group() if found else None


def assert_nothing_from_the_file_as_markdown(at: AppTest) -> None:
    shown = markdown_shown(at)
    assert not any(PAYLOAD in text or NAME in text for text in shown)
    risky = {text: unescaped_link_or_image(text) for text in shown if "evil" in text.lower()}
    assert not any(risky.values()), risky


# --------------------------------------------------------------------------- the loader alone
@pytest.mark.parametrize("case", list(HOSTILE))
def test_read_project_refuses_each_hostile_file_in_one_message(env, case):
    from state.project import read_project
    from trajmoe.errors import InputDataError

    data, words = HOSTILE[case]
    start = time.perf_counter()
    with pytest.raises(InputDataError) as caught:
        read_project(data)
    assert time.perf_counter() - start < 2.0  # no 26 s parse of a big file, no deep recursion
    message = str(caught.value)
    assert READ_ERROR in message and words in message, message
    assert "\n" not in message and len(message) < 400  # one message, the value quoted short
    assert "Download the project file" in message  # what to do


def test_read_project_takes_the_good_file_and_the_files_the_app_wrote_before(env):
    from state.project import read_project

    got = read_project(json.dumps(BASE).encode())
    assert (got["city"], got["resolution"], got["privacy_k"], got["weekday_unreliable"]) == ("Riverside", 9, 9, True)
    assert got["finetune"].share == 10 and got["finetune"].light is True
    older = {**BASE, "trajectories": {"file": "my_city.csv", "digest": "0123456789abcdef0123", "label": PAYLOAD}}
    assert read_project(json.dumps(older).encode())["trajectories"] == {"file": "my_city.csv",
                                                                        "digest": "0123456789abcdef0123"}


# --------------------------------------------------------------------------- in the app
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_project_file_gives_one_message_and_changes_nothing(app, case):
    data, words = HOSTILE[case]
    before = settings(app)
    load(app, f"{case}.json", data)
    assert settings(app) == before  # nothing applied, not even the good fields
    assert len(sess(app).project_todo) == 1
    shown = [c.value for c in app.sidebar.caption if READ_ERROR in c.value]
    assert len(shown) == 1, shown
    assert not app.error  # the page itself goes on
    assert_nothing_from_the_file_as_markdown(app)


def test_a_good_project_file_still_loads_everything(env):
    at = open_app()
    load(at, "good.json", json.dumps(BASE).encode())
    assert sess(at).project_todo == ["Project loaded."]
    s = sess(at)
    assert (s.city, s.resolution, s.weekday_unreliable, s.finetune_settings.share) == ("Riverside", 9, True, 10)
    assert at.sidebar.slider(key="privacy_k").value == 9


def test_labels_come_from_this_link_never_from_the_file(env):
    """A label (older files wrote one) is not read; a file name that holds Markdown is shown as typed."""
    from state import inputs

    at = open_app()
    at.switch_page("app_pages/trajectories.py").run()
    at.file_uploader(key="traj_upload").set_value(("my_city.csv", env["csv"], "text/csv")).run()
    assert not at.exception
    digest = inputs.digest(env["csv"])
    project = {**BASE, "trajectories": {"file": "my_city.csv", "digest": digest, "label": PAYLOAD},
               "pois": {"file": NAME, "digest": "0123456789abcdef0123", "label": PAYLOAD}}
    load(at, "labels.json", json.dumps(project).encode())
    assert sess(at).trajectories.label == "my_city.csv (uploaded)"  # this link's own label
    assert len(sess(at).project_todo) == 1 and "again" in sess(at).project_todo[0]  # the POI file is not here
    assert any("evil" in c.value for c in at.sidebar.caption)  # the file name is shown...
    assert_nothing_from_the_file_as_markdown(at)  # ...as typed


def test_names_typed_or_uploaded_are_never_drawn_as_markdown(env):
    """A trajectory file whose name holds a Markdown image: its label and the city named after it
    are shown on the sidebar, the Trajectories and the Fine-tune pages as typed; so is a typed city."""
    at = open_app()
    at.switch_page("app_pages/trajectories.py").run()
    at.file_uploader(key="traj_upload").set_value((NAME, env["csv"], "text/csv")).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "evil" in sess(at).trajectories.label
    assert_nothing_from_the_file_as_markdown(at)
    at.switch_page("app_pages/finetune.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("evil" in text.lower() for text in markdown_shown(at))  # the city, in the button's label
    assert_nothing_from_the_file_as_markdown(at)

    sess(at).city = f"www.evil.example {PAYLOAD}"  # as typed into the City name box
    at.switch_page("app_pages/trajectories.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("evil" in text for text in markdown_shown(at))
    assert_nothing_from_the_file_as_markdown(at)


def test_a_checkpoint_named_with_markdown_is_never_drawn_as_markdown(env):
    """Its file name names the model on every analysis page ("Showing the pretrained model ...")."""
    weights = Path(env["checkpoint"]).read_bytes()
    sidecar = Path(env["checkpoint"]).with_suffix(".json").read_bytes()
    at = open_app()
    at.switch_page("app_pages/finetune.py").run()
    at.radio(key="ckpt_choice").set_value("A checkpoint I upload").run()
    stem = NAME.removesuffix(".csv")
    at.file_uploader(key="ckpt_upload").set_value([(f"{stem}.safetensors", weights, "application/octet-stream"),
                                                   (f"{stem}.json", sidecar, "application/json")]).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "evil" in sess(at).base_checkpoint  # it was taken...
    assert_nothing_from_the_file_as_markdown(at)
    at.switch_page("app_pages/experts.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("evil" in text for text in markdown_shown(at))
    assert_nothing_from_the_file_as_markdown(at)  # ...and named in words only


def test_city_names_keep_the_characters_of_place_names_only(env):
    from state.inputs import MAX_CITY, plain_city

    assert plain_city("My City") == "My City" and plain_city("Saint-Étienne (Loire)") == "Saint-Étienne (Loire)"
    assert plain_city("Minneapolis/St. Paul, MN") == "Minneapolis/St. Paul, MN" and plain_city("北京") == "北京"
    assert plain_city(PAYLOAD) == "t (http //evil.example/track.png)"  # no image, no link, no scheme
    assert plain_city("www.evil.example") == "evil.example" and plain_city("a@b.example") == "a b.example"
    assert plain_city("_x_ *y* `z` $w$") == "x y z w" and len(plain_city("x" * 1000)) == MAX_CITY
