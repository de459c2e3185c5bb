"""The Streamlit app, page by page, driven through its widgets (streamlit.testing AppTest).

The real pipeline runs on small data: a tiny untrained TrajMoE checkpoint (the shipped one is
used by tests/test_browser.py and bench/app_speed.py), the embedded Helsinki sample and an
upload of 60 of its people.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py"
TIMEOUT = 240  # seconds per script run: the first run on a cold cache prepares the sample


@pytest.fixture(scope="module")
def env(tmp_path_factory, sample_trajectories, app_sandbox):
    """A tiny checkpoint, an app work folder of our own, a small upload."""
    root = tmp_path_factory.mktemp("app")
    frame = pd.read_csv(sample_trajectories)
    small = frame[frame["user_id"].isin(frame["user_id"].unique()[:60])]
    with app_sandbox(root, n_layers=2) as ckpt:
        yield {"checkpoint": ckpt, "csv": small.to_csv(index=False).encode(), "root": root}


def open_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def go(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def finetuned(at: AppTest):
    """The session's fine-tuned model (app/state/session.py: Finetuned), or None."""
    from state.session import KEY

    return at.session_state[KEY].finetuned


def decks(at: AppTest) -> list[dict]:
    return [json.loads(d.proto.json) for d in at.get("deck_gl_json_chart")]


def _cells(deck: dict) -> list[dict]:
    return next(layer["data"] for layer in deck["layers"] if layer.get("id") == "cells")


def layer_types(deck: dict) -> list[str]:
    return [layer["@@type"] for layer in deck["layers"]]


def text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    return "\n".join(parts + [w.value for w in at.warning] + [s.value for s in at.success])


def test_opens_ready_on_the_embedded_default(env):
    """Every page shows real content without the user doing anything."""
    at = open_app()
    assert "Helsinki city centre POIs" in text(at)
    (poi_deck,) = decks(at)
    # the offline street map under the POIs (sample_data/helsinki_basemap.geojson), then the POIs
    ids = [layer["id"] for layer in poi_deck["layers"]]
    assert layer_types(poi_deck).count("ScatterplotLayer") == 1 and "basemap-streets" in ids
    assert ids.index("basemap-streets") < layer_types(poi_deck).index("ScatterplotLayer")
    assert all(i.startswith("basemap") for i, t in zip(ids, layer_types(poi_deck)) if t != "ScatterplotLayer")
    # Offline: no basemap provider and no style (pydeck's placeholder, which Streamlit drops).
    assert poi_deck.get("mapProvider") is None and poi_deck.get("mapStyle") in (None, "__MAP_STYLE__")
    assert len(at.get("plotly_chart")) == 1

    go(at, "trajectories")
    assert "SYNTHETIC" in text(at)
    assert [m.label for m in at.metric][:2] == ["Rows read", "Rows used"]
    assert len(at.get("plotly_chart")) == 3 and len(decks(at)) == 1

    go(at, "flows")
    assert "zero-shot" in text(at) and "not the whole population" in text(at)
    (observed,) = decks(at)  # one map by default, the observed moves; the predicted numbers said beside it
    totals = re.findall(r"(Observed|Predicted): [\d,]+ of ([\d,]+) moves shown", text(at))
    assert [who for who, _ in totals] == ["Observed", "Predicted"] and len({n for _, n in totals}) == 1
    assert "choose **Predicted** above" in text(at)
    at.radio(key="fl_compare").set_value("Predicted").run()
    (predicted,) = decks(at)  # the same map, now the model's flows of the same moves
    assert not at.exception and "choose **Observed** above" in text(at)
    assert _arcs(predicted) != _arcs(observed)
    at.radio(key="fl_compare").set_value("Both, side by side").run()
    assert decks(at) == [observed, predicted] and "above to see it" not in text(at)
    for deck in (observed, predicted):
        ids = [layer.get("id") for layer in deck["layers"]]
        assert {"flow-arcs", "flow-places", "cells-context"} <= set(ids)
    assert len(at.main.get("download_button")) == 6  # GeoJSON, CSV and PNG of each map; the sidebar has the project file's

    go(at, "experts")
    (main,) = decks(at)  # one map: each place's main expert, in the experts' own colours
    assert len(at.get("plotly_chart")) == 2
    assert re.search(r"Expert 1 \(\d+% of routing\)", text(at))
    # app/ is on sys.path while the app runs (conftest's env)
    from maps.colours import EXPERT_COLOURS, rgb

    expert_rgb = {tuple(rgb(c)[:3]) for c in EXPERT_COLOURS}
    assert {tuple(row["colour"][:3]) for row in _cells(main)} <= expert_rgb
    at.selectbox(key="ex_show").set_value("Where expert 2 is used").run()
    (share,) = decks(at)  # the same places, now a ramp of expert 2's share
    assert not at.exception and "goes to expert 2" in text(at) and "Share of the place's routing" in text(at)
    assert [row["hex"] for row in _cells(share)] == [row["hex"] for row in _cells(main)]
    assert len({tuple(row["colour"]) for row in _cells(share)}) > len(expert_rgb) // 2

    go(at, "scenario")
    (change,) = decks(at)
    assert {"cells", "cells-edited"} <= {layer.get("id") for layer in change["layers"]}
    assert "Expected effect of adding 10 food & drink POIs" in text(at)
    whole = re.search(r"out of ([\d,]+) predicted moves \(", text(at))
    at.toggle(key="sc_timed").set_value(True).run()  # the same edit, for morning arrivals (at-time)
    assert not at.exception
    band = re.search(r"out of ([\d,]+) predicted moves arriving between 06:00 and 12:00", text(at))
    assert whole and band and int(band[1].replace(",", "")) < int(whole[1].replace(",", ""))
    at.toggle(key="sc_timed").set_value(False).run()

    go(at, "finetune")
    assert "Not fine-tuned yet" in text(at)


def _arcs(deck: dict) -> list[dict]:
    return next((layer["data"] for layer in deck["layers"] if layer.get("id") == "flow-arcs"), [])


def test_upload_finetune_and_flows(env):
    at = open_app()
    go(at, "trajectories")
    at.file_uploader(key="traj_upload").set_value(("my_city.csv", env["csv"], "text/csv")).run()
    assert not at.exception
    assert "my_city.csv (uploaded)" in text(at)
    n_rows = env["csv"].count(b"\n") - 1
    assert at.metric[0].value == f"{n_rows:,}"  # rows read = the upload's data rows
    # Every number on the page agrees (issue 12): read = used + merged + left out.
    assert [m.label for m in at.metric] == ["Rows read", "Rows used", "Rows merged", "Rows left out", "People"]
    read, used, merged, left_out, people = (int(m.value.replace(",", "")) for m in at.metric)
    assert read == used + merged + left_out
    assert f"{read:,} rows read: {used:,} used, {merged:,} merged into other rows, {left_out:,} left out." in text(at)
    assert re.search(rf"\b[\d,]+ people read: {people:,} kept, [\d,]+ dropped\.", text(at)), text(at)
    assert not re.search(r"(?<![\d,])1 (rows|users|people)\b", text(at))

    go(at, "finetune")
    at.number_input(key="ft_max_steps").set_value(2)
    at.button(key="ft_run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert re.search(r"Done: [12] training steps? in", text(at))
    table = at.dataframe[0].value
    assert list(table["Model"]) == ["Pretrained, no fine-tuning (zero-shot)", "Fine-tuned",
                                    "Markov baseline (same data)", "Return + gravity baseline (same data)"]
    assert table["First guess right"].between(0, 1).all()
    # The keep rule's verdict in words (trajmoe/train/keep.py), and a label that names the kept state.
    verdict = [i.value for i in at.info if i.value.startswith("**Which model was kept.**")]
    assert len(verdict) == 1 and "validation visits" in verdict[0], [i.value for i in at.info]
    kept = re.search(r"Kept (the fine-tuned model|the pretrained model|the simple baseline)", verdict[0])
    assert kept, verdict[0]
    assert ("the simple return + distance baseline inside it kept" in finetuned(at).label) == ("baseline" in kept[1])
    assert finetuned(at).verdict.startswith("Kept ")
    weights, sidecar = at.get("download_button")[:2]
    assert weights.proto.label.endswith("(.safetensors)") and sidecar.proto.label.endswith("(.json)")
    # The session trained its own copy: the shared cached model still equals the checkpoint file.
    from safetensors.torch import load_file

    from state import models

    shared, _ = models.load_model(str(env["checkpoint"]), env["checkpoint"].stat().st_mtime)
    on_disk = load_file(str(env["checkpoint"]))
    assert all(torch.equal(t, on_disk[name]) for name, t in shared.state_dict().items())
    assert finetuned(at).model is not shared

    go(at, "flows")
    assert "fine-tuned on 5% of My City" in text(at)
    at.radio(key="fl_compare").set_value("Both, side by side").run()
    assert len(decks(at)) == 2
    k = at.sidebar.slider(key="privacy_k").value
    assert k == 5
    for deck in decks(at):
        assert all(arc["n_users"] >= k for arc in _arcs(deck))
    hidden_at_5 = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) flows with fewer", text(at))]
    at.sidebar.slider(key="privacy_k").set_value(12).run()
    assert not at.exception
    for deck in decks(at):
        assert all(arc["n_users"] >= 12 for arc in _arcs(deck))
    hidden_at_12 = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) flows with fewer", text(at))]
    assert all(b > a for a, b in zip(hidden_at_5, hidden_at_12)), (hidden_at_5, hidden_at_12)

    at.slider(key="fl_hours").set_value((7, 10)).run()
    assert not at.exception

    go(at, "experts")
    assert "fine-tuned" in text(at)
    go(at, "scenario")
    at.radio(key="sc_action").set_value("Remove").run()
    at.selectbox(key="sc_category").set_value("retail").run()
    assert not at.exception


def test_page_settings_are_kept_when_coming_back(env):
    at = open_app()
    go(at, "flows")
    at.slider(key="fl_hours").set_value((6, 12)).run()
    at.radio(key="fl_days").set_value("Weekdays").run()
    at.radio(key="fl_compare").set_value("Predicted").run()
    shown = text(at)
    go(at, "scenario")
    at.radio(key="sc_action").set_value("Remove").run()
    go(at, "experts")
    go(at, "flows")
    assert at.slider(key="fl_hours").value == (6, 12) and at.radio(key="fl_days").value == "Weekdays"
    assert at.radio(key="fl_compare").value == "Predicted" and text(at) == shown
    go(at, "scenario")
    assert at.radio(key="sc_action").value == "Remove" and "Expected effect of removing" in text(at)


def test_districts_upload(env):
    at = open_app()
    go(at, "flows")
    at.radio(key="fl_compare").set_value("Both, side by side").run()
    geojson = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": name}, "geometry": {"type": "Polygon", "coordinates": [[
            [w, 60.15], [e, 60.15], [e, 60.19], [w, 60.19], [w, 60.15]]]}}
        for name, w, e in (("West", 24.90, 24.943), ("East", 24.943, 24.99))]}
    at.file_uploader(key="fl_zones").set_value(("districts.geojson", json.dumps(geojson).encode(),
                                                "application/geo+json")).run()
    assert not at.exception
    assert "added up to 2 districts" in text(at)
    assert len(decks(at)) == 2
    for deck in decks(at):
        assert {"districts", "districts-outline"} <= {layer.get("id") for layer in deck["layers"]}
        assert {arc["origin"] for arc in _arcs(deck)} <= {"West", "East"}


def test_bad_file_is_explained_not_crashed(env):
    at = open_app()
    go(at, "trajectories")
    bad = b"person,when,latitude\nA,2024-01-01T10:00:00,60.1\n"
    at.file_uploader(key="traj_upload").set_value(("bad.csv", bad, "text/csv")).run()
    assert not at.exception
    assert any("cannot be used" in e.value for e in at.error)
    assert "Every row could be used" not in text(at)
    binary = b"\x00\xff\xfe\x00 not text at all \x00"
    at.file_uploader(key="traj_upload").set_value(("binary.csv", binary, "text/csv")).run()
    assert not at.exception
    assert at.error and "Every row could be used" not in text(at)
    go(at, "flows")  # the model pages say why instead of failing
    assert any("could not be used" in e.value for e in at.error)


def test_pois_upload_and_offline_search(env, tmp_path):
    at = open_app()
    table = pd.DataFrame({"lat": [60.170, 60.171, 60.172], "lon": [24.94, 24.941, 24.942],
                          "category": ["cafe", "supermarket", "school"], "name": ["A", "B", "C"]})
    at.file_uploader(key="poi_upload").set_value(("pois.csv", table.to_csv(index=False).encode(), "text/csv")).run()
    assert not at.exception
    assert "pois.csv (uploaded)" in text(at)
    assert [m.value for m in at.metric][0] == "3"
    at.text_input(key="place").set_value("Kallio, Helsinki").run()
    at.button(key="fetch_place").click().run()
    assert not at.exception
    # Offline, the search fails with the offline options; online it would load the place.
    assert any("offline" in e.value.lower() for e in [*at.error, *at.info]) or "Kallio" in text(at)
    for jargon in ("trajmoe.", "()", "fclass"):  # plain words for planners (issue 12, item 7)
        assert not any(jargon in e.value for e in at.error), [e.value for e in at.error]
    at.button(key="use_bundled").click().run()
    assert "Helsinki city centre POIs" in text(at)


def test_pois_fetched_online_bring_their_streets(env, server, west_oakland):
    """The online path through the app, against the recorded OSM service (real West Oakland data):
    the box's POIs and its base map come together, and the City page's map draws the fetched streets."""
    from trajmoe.pois.basemap import read_basemap

    at = open_app()
    for key, value in zip(("bbox_w", "bbox_s", "bbox_e", "bbox_n"), west_oakland[2]):
        at.number_input(key=key).set_value(round(value, 4)).run()
    at.button(key="fetch_bbox").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "(OpenStreetMap)" in text(at) and "come from OpenStreetMap (fetched with the POIs of box" in text(at)
    (poi_map,) = decks(at)
    layers = {layer["id"]: layer for layer in poi_map["layers"]}
    offline = read_basemap(west_oakland[0])
    assert 0 < len(layers["basemap-streets"]["data"]) and f"{len(offline.streets):,} streets" in text(at)
    # The Helsinki sample is not in the box: its trajectories' own streets are offered, and fetching
    # them from a service that has only West Oakland says so in words.
    at.button(key="fetch_basemap").click().run()
    assert not at.exception
    assert any("Could not fetch the streets online" in e.value and "no streets, water, parks or place names" in e.value
               for e in at.error), [e.value for e in at.error]
    (poi_map,) = decks(at)  # the fetched box's streets are still drawn
    assert any(layer["id"] == "basemap-streets" for layer in poi_map["layers"])


def test_streets_fetched_for_the_trajectories_area_draw_under_every_map(env, server, west_oakland):
    """Trajectories in West Oakland with the bundled Helsinki POIs: the City page offers the
    trajectories' own streets, fetches them (recorded OSM service, real data) and every map draws them."""
    import numpy as np

    from trajmoe.pois.offline import read_pois

    places = read_pois(west_oakland[0])[["lat", "lon"]].to_numpy()  # real places of West Oakland
    rng = np.random.default_rng(0)
    rows = [(f"p{u}", pd.Timestamp("2024-03-01 07:00") + pd.Timedelta(hours=int(h)), *places[i])
            for u in range(40) for h, i in zip(np.sort(rng.choice(24 * 20, 30, replace=False)),
                                               rng.integers(0, len(places), 30))]
    csv = pd.DataFrame(rows, columns=["user_id", "timestamp", "lat", "lon"]).to_csv(index=False).encode()
    at = open_app()
    go(at, "trajectories")
    at.file_uploader(key="traj_upload").set_value(("west_oakland.csv", csv, "text/csv")).run()
    assert not at.exception, [e.message for e in at.exception]
    go(at, "city")
    assert "come from the bundled Helsinki centre extract" in text(at)
    at.button(key="fetch_basemap").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "come from OpenStreetMap (fetched for the trajectories' area)" in text(at)
    assert "fetch_basemap" not in [b.key for b in at.button]  # the area has its streets now
    go(at, "flows")
    w, s, e, n = west_oakland[2]
    for deck in decks(at):
        streets = next(layer for layer in deck["layers"] if layer["id"] == "basemap-streets")["data"]
        assert any(w <= x <= e and s <= y <= n for row in streets for x, y in row["polygon"][0])


def test_without_a_checkpoint_the_data_pages_still_work(env, monkeypatch):
    monkeypatch.setenv("TRAJMOE_CHECKPOINT", str(env["root"] / "missing.safetensors"))
    at = open_app()
    go(at, "trajectories")
    assert len(decks(at)) == 1
    for page in ("flows", "experts", "scenario", "finetune"):
        go(at, page)
        assert "not in this copy of the app" in text(at)


def test_a_broken_checkpoint_is_explained(env, monkeypatch):
    broken = env["root"] / "broken.safetensors"
    broken.write_bytes(env["checkpoint"].read_bytes()[:1000])  # cut short, next to an intact sidecar
    broken.with_suffix(".json").write_bytes(env["checkpoint"].with_suffix(".json").read_bytes())
    monkeypatch.setenv("TRAJMOE_CHECKPOINT", str(broken))
    at = open_app()
    for page in ("flows", "experts", "scenario", "finetune"):
        go(at, page)
        assert any("cannot be" in e.value for e in at.error), page


def test_downloaded_checkpoint_loads_and_can_be_uploaded_again(env, tmp_path):
    from trajmoe.train.checkpoint import load_checkpoint

    at = open_app()
    go(at, "trajectories")
    at.file_uploader(key="traj_upload").set_value(("my_city.csv", env["csv"], "text/csv")).run()
    go(at, "finetune")
    at.button(key="ft_run").click().run()
    files = finetuned(at).files
    (tmp_path / "ft.safetensors").write_bytes(files["safetensors"])
    (tmp_path / "ft.json").write_bytes(files["json"])
    model, meta = load_checkpoint(tmp_path / "ft.safetensors")
    assert "My City" in meta["cities"] and meta["training"]["fraction"] == 0.05

    at.radio(key="ckpt_choice").set_value("A checkpoint I upload").run()
    at.file_uploader(key="ckpt_upload").set_value([
        ("ft.safetensors", files["safetensors"], "application/octet-stream"),
        ("ft.json", files["json"], "application/json")]).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "Starting from the uploaded checkpoint" in text(at)
    assert "Not fine-tuned yet" in text(at)  # a new starting point: the earlier fine-tuning is dropped
    go(at, "flows")
    assert "the pretrained model ft.safetensors" in text(at)
