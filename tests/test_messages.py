"""Every message the app shows for a bad file names the file by its file name, never a server path
or the session's link token (issue 27, item 6; the app's README promises no machine path is shown).

Each bad file of the issue is uploaded where a planner would upload it (Streamlit AppTest, tiny
checkpoint): a not-JSON ``.geojson`` of districts, a random-bytes ``.pbf`` and a CSV named
``.parquet`` as POIs, a POI table without lat/lon, a CSV named ``.parquet`` as trajectories, every
kind of refused checkpoint, and the hostile project files of tests/test_project_file.py. Then
every text the page draws is searched for an absolute path (``/tmp/...``, the work folder, the
repository) and the token.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from test_project_file import (  # noqa: F401 (env: fixture)
    HOSTILE,
    env,
    load,
    markdown_shown,
    open_app,
    sess,
)

REPO = Path(__file__).resolve().parent.parent
ABSOLUTE = re.compile(r"(?:^|[\s'\"(\[=:,])(/[\w.~-]+){2,}")  # /tmp/x, '/work/...', (/home/u/...)


def leaks(at, texts: list[str]) -> list[str]:
    """The texts that show a server path or this session's token."""
    from state import inputs

    token = sess(at).token
    marks = {str(inputs.WORK_DIR), str(REPO), tempfile.gettempdir() + "/", token, "sessions/"}
    return [t for t in texts if ABSOLUTE.search(t) or any(m in t for m in marks)]


def messages(at) -> list[str]:
    """What the page says about problems (alerts and the sidebar's project lines)."""
    return [e.value for e in [*at.error, *at.warning, *at.info]] + [c.value for c in at.sidebar.caption]


def check(at, expected_name: str) -> list[str]:
    """No exception, no path or token anywhere on the page, and a message naming the file."""
    assert not at.exception, [e.message for e in at.exception]
    shown = markdown_shown(at)
    assert not leaks(at, shown), leaks(at, shown)
    said = [m for m in messages(at) if expected_name in m.replace("\\", "")]
    assert said, messages(at)
    return said


@pytest.fixture(scope="module")
def app(env):  # noqa: F811
    return open_app()


# --------------------------------------------------------------------------- data files
BAD_POIS = {
    "random.osm.pbf": os.urandom(4096),
    "pois.parquet": b"lat,lon,category\n60.17,24.94,cafe\n",  # a CSV named .parquet
    "nolatlon.csv": b"name,category\nKahvila,cafe\n",
}


@pytest.mark.parametrize("name", list(BAD_POIS))
def test_a_bad_poi_file_is_named_by_its_file_name(app, name):
    app.switch_page("app_pages/city.py").run()
    app.file_uploader(key="poi_upload").set_value((name, BAD_POIS[name], "application/octet-stream")).run()
    said = check(app, name)
    assert any(m.startswith(name) or f" {name}" in m.replace("\\", "") for m in said)


def test_a_csv_named_parquet_as_trajectories_is_named_by_its_file_name(app):
    app.switch_page("app_pages/trajectories.py").run()
    app.file_uploader(key="traj_upload").set_value(("trips.parquet", b"a,b\n1,2\n", "application/octet-stream")).run()
    check(app, "trips.parquet")
    app.button(key="use_sample").click().run()  # back to the sample for the pages below
    assert not app.exception


def test_a_not_json_district_file_is_named_by_its_file_name(app):
    app.switch_page("app_pages/flows.py").run()
    assert not app.exception, [e.message for e in app.exception]
    app.file_uploader(key="fl_zones").set_value(("districts.geojson", b"not json {", "application/geo+json")).run()
    said = check(app, "districts.geojson")
    assert any("Cannot read districts.geojson as GeoJSON" in m.replace("\\", "") for m in said)


# --------------------------------------------------------------------------- checkpoints
def _checkpoints(env) -> dict[str, list[tuple[str, bytes, str]]]:  # noqa: F811
    weights = Path(env["checkpoint"]).read_bytes()
    sidecar = json.loads(Path(env["checkpoint"]).with_suffix(".json").read_text())

    def pair(stem: str, w: bytes, meta) -> list[tuple[str, bytes, str]]:
        side = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
        return [(f"{stem}.safetensors", w, "application/octet-stream"), (f"{stem}.json", side, "application/json")]

    no_config = {k: v for k, v in sidecar.items() if k != "config"}
    huge = {**sidecar, "config": {**sidecar.get("config", {}), "max_len": 10**12}}
    return {
        "only_weights": pair("lonely", weights, sidecar)[:1],
        "random_weights": pair("random", os.urandom(4096), sidecar),
        "truncated": pair("cut", weights[: len(weights) // 2], sidecar),
        "empty": pair("empty", b"", sidecar),
        "sidecar_not_json": pair("nojson", weights, b"{nope"),
        "sidecar_foreign": pair("foreign", weights, {"format": "something-else"}),
        "sidecar_no_config": pair("noconfig", weights, no_config),
        "sidecar_max_len_1e12": pair("huge", weights, huge),
        "checksum_differs": pair("mixed", weights, {**sidecar, "sha256": "0" * 64}),
    }


CHECKPOINT_CASES = ["only_weights", "random_weights", "truncated", "empty", "sidecar_not_json", "sidecar_foreign",
                    "sidecar_no_config", "sidecar_max_len_1e12", "checksum_differs"]


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_a_refused_checkpoint_shows_no_path_or_token(app, env, case):  # noqa: F811
    files = _checkpoints(env)[case]
    app.switch_page("app_pages/finetune.py").run()
    app.radio(key="ckpt_choice").set_value("A checkpoint I upload").run()
    app.file_uploader(key="ckpt_upload").set_value(files).run()
    assert not app.exception, [e.message for e in app.exception]
    shown = markdown_shown(app)
    assert not leaks(app, shown), leaks(app, shown)
    refused = [e.value for e in app.error if "cannot be used" in e.value]
    assert refused, messages(app)
    app.file_uploader(key="ckpt_upload").set_value(None)
    app.radio(key="ckpt_choice").set_value("The shipped pretrained model").run()


# --------------------------------------------------------------------------- project files
def test_no_message_about_a_hostile_project_file_shows_a_path_or_token(app):
    for case, (data, _) in HOSTILE.items():
        load(app, f"{case}.json", data)
        (line,) = sess(app).project_todo
        shown = markdown_shown(app)
        assert not leaks(app, shown), (case, leaks(app, shown))
        assert any(line[:40].replace("\\", "") in text.replace("\\", "") for text in shown), case  # it is shown
        if case == "file_entry_path":  # the file names a path: the message quotes it, the page shows its name
            assert "/etc/passwd" in line and not any("/etc/passwd" in text for text in shown)


# --------------------------------------------------------------------------- the CLI's timezone
@pytest.mark.parametrize("verb", ["validate", "prepare"])
def test_an_unknown_timezone_is_refused_in_one_line_before_the_file_is_read(tmp_path, capsys, verb):
    """The file does not exist: had it been opened first, the message would say so."""
    from trajmoe import cli

    missing = str(tmp_path / "not_there.csv")
    argv = ([verb, missing] if verb == "validate" else
            [verb, "--trajectories", missing, "--city", "X", "--out", str(tmp_path / "out")])
    assert cli.main([*argv, "--timezone", "Mars/Olympus"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'Mars/Olympus'" in err and "'America/New_York'" in err, err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the library alone
LIBRARY_CASES = {  # file name -> (content, reader)
    "random.osm.pbf": (os.urandom(4096), "pois"),
    "random.osm": (b"<osm><node id='1' lat='x'", "pois"),
    "pois.parquet": (b"lat,lon,category\n60.17,24.94,cafe\n", "pois"),
    "nolatlon.csv": (b"name,category\nKahvila,cafe\n", "pois"),
    "nocategory.csv": (b"lat,lon,name\n60.17,24.94,Kahvila\n", "pois"),
    "trips.parquet": (b"PAR1" + os.urandom(64), "trajectories"),
    "trips.csv": (b"\x00\x01binary" * 100, "trajectories"),
    "districts.geojson": (b"not json {", "zones"),
    "streets.osm.pbf": (os.urandom(4096), "basemap"),
}


@pytest.mark.parametrize("name", list(LIBRARY_CASES))
def test_library_messages_name_the_file_not_its_folders(tmp_path, name):
    """The library's own words for a bad file, wherever the file lies (here in a folder named like a
    session's): the file's name, never the folders above it."""
    from trajmoe.analysis.zones import read_zones
    from trajmoe.errors import TrajMoEError
    from trajmoe.pois.basemap import read_basemap
    from trajmoe.pois.offline import read_pois
    from trajmoe.trajectories.reader import read_trajectories

    folder = tmp_path / "sessions" / "Secret_Token_0123456789" / "uploads"
    folder.mkdir(parents=True)
    path = folder / name
    content, reader = LIBRARY_CASES[name]
    path.write_bytes(content)
    if reader == "trajectories":
        _, report = read_trajectories(path)
        said = report.to_text()
        assert not report.ok
    else:
        read = {"pois": read_pois, "basemap": read_basemap,
                "zones": lambda p: read_zones(str(p), cells=[], name=p.name)}[reader]
        with pytest.raises(TrajMoEError) as caught:
            read(path)
        said = str(caught.value)
    assert name in said and "Secret_Token" not in said and str(tmp_path) not in said, said
