"""Arrivals by hour: observed next to the at-time task's guesses for the same moves, the privacy
rule's differencing defence, and the Flows page's section (trajmoe/analysis/flows.py, app)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trajmoe.analysis.flows import (
    _day_type,
    filter_transitions,
    model_arrivals,
    observed_arrivals,
    parent_cells,
    summarize_arrivals,
)
from trajmoe.analysis.predict import predict
from trajmoe.analysis.privacy import HOUR_BAND, persons_per


@pytest.fixture(scope="module")
def at_time(tiny_model, helsinki):
    """One at-time pass of the tiny model over every visit of the embedded default."""
    return predict(tiny_model, helsinki, top_k=5, split="all", task="at-time")


@pytest.mark.parametrize("hours, day", [((0, 24), "all"), ((6, 12), "weekday"), ((18, 24), "weekend")])
def test_observed_and_predicted_arrivals_count_the_same_moves(tiny_model, helsinki, at_time, hours, day):
    observed = observed_arrivals(helsinki, split="all")
    predicted = model_arrivals(helsinki, at_time, top_n=3)
    # timed at the arrival: the target visit's own local hour and weekday, on both sides
    np.testing.assert_array_equal(observed["hour"].to_numpy(), helsinki.hour[at_time.targets])
    per_move = predicted.iloc[::3]
    for col in ("user_id", "hour", "weekday"):
        np.testing.assert_array_equal(per_move[col].to_numpy(), observed[col].to_numpy())
    if hours == (0, 24):  # the at-time pass is not the next-task one: the target's time changed the guesses
        nxt = predict(tiny_model, helsinki, top_k=5, split="all")
        assert not np.allclose(nxt.table["prob"].to_numpy(), at_time.table["prob"].to_numpy())
    obs = summarize_arrivals(filter_transitions(observed, hours=hours, day=day), k=5)
    pred = summarize_arrivals(filter_transitions(predicted, hours=hours, day=day), k=5)
    assert obs.n_moves == pytest.approx(pred.n_moves) and obs.n_moves > 0
    for s in (obs, pred):
        assert s.n_moves == pytest.approx(s.moves_shown + s.moves_hidden)
        assert (s.places["n_users"] >= 5).all()
    assert obs.moves_shown > 0


def _pieces(arrivals: pd.DataFrame) -> pd.DataFrame:
    """Raw (place, band, day type) pieces: weight and distinct persons, no rule applied."""
    key = pd.DataFrame({"destination": arrivals["destination"].to_numpy(),
                        "band": arrivals["hour"].to_numpy() // HOUR_BAND,
                        "day": _day_type(arrivals["weekday"].to_numpy())})
    weight = key.assign(w=arrivals["weight"].to_numpy()).groupby(list(key.columns))["w"].sum()
    return pd.DataFrame({"weight": weight, "persons": persons_per(key, arrivals["user_id"]).reindex(weight.index)})


def _per_place(summary) -> pd.Series:
    return summary.places.set_index("place")["arrivals"]


@pytest.mark.parametrize("k", [3, 5, 10])
@pytest.mark.parametrize("which", ["observed", "predicted"])
def test_differencing_two_settings_reveals_nobody(helsinki, at_time, which, k):
    """Arrivals 0-24 minus 0-18, and all days minus weekdays: every place's difference is a sum of
    whole pieces of >= k persons, never a piece of fewer."""
    arrivals = observed_arrivals(helsinki, split="all") if which == "observed" else model_arrivals(helsinki, at_time)
    pieces = _pieces(arrivals)
    big = pieces[pieces["persons"] >= k]
    revealed = 0
    for (a, b), piece_of in ((({"hours": (0, 24)}, {"hours": (0, 18)}), lambda p: p["band"] == 3),
                             (({"day": "all"}, {"day": "weekday"}), lambda p: p["day"] != 0)):
        diff = _per_place(summarize_arrivals(filter_transitions(arrivals, **a), k=k)).sub(
            _per_place(summarize_arrivals(filter_transitions(arrivals, **b), k=k)), fill_value=0.0)
        diff = diff[diff.abs() > 1e-9]
        assert (diff > 0).all()  # the larger setting only adds pieces
        sel = big.reset_index()
        allowed = sel[piece_of(sel)].groupby("destination")["weight"].sum()
        # the difference is exactly the difference's pieces of >= k persons
        pd.testing.assert_series_equal(diff.sort_index(), allowed.reindex(diff.index).sort_index(),
                                       check_names=False, atol=1e-6)
        small = pieces.reset_index()
        small = small[piece_of(small) & (small["persons"] < k)]
        assert len(small) > 0  # the attack has something to find: it must not find it
        revealed += len(diff)
    assert revealed > 0


def test_larger_cells_minus_cells_reveals_nobody(helsinki):
    """One band on one kind of day (a single piece per place): a larger cell's shown arrivals
    minus those of its shown cells come from none or >= k persons."""
    k, res = 5, int(helsinki.meta["resolution"]) - 1
    arrivals = observed_arrivals(helsinki, split="all")
    pieces = _pieces(arrivals)
    shown_on_cells = pieces[pieces["persons"] >= k].index
    key = pd.MultiIndex.from_arrays([arrivals["destination"], arrivals["hour"] // HOUR_BAND,
                                     _day_type(arrivals["weekday"].to_numpy())])
    left = arrivals[~key.isin(shown_on_cells)]
    left = pd.DataFrame({"parent": parent_cells(left["destination"], res), "band": left["hour"] // HOUR_BAND,
                         "day": _day_type(left["weekday"].to_numpy())})
    left_persons = persons_per(left, arrivals.loc[~key.isin(shown_on_cells), "user_id"])
    checked = 0
    for band in range(24 // HOUR_BAND):
        for d, day in enumerate(("weekday", "weekend")):
            one = filter_transitions(arrivals, hours=(band * HOUR_BAND, (band + 1) * HOUR_BAND), day=day)
            fine = summarize_arrivals(one, k=k)
            coarse = _per_place(summarize_arrivals(one, k=k, resolution=res))
            on_cells = fine.places.assign(parent=parent_cells(fine.places["place"], res)).groupby("parent")["arrivals"].sum()
            rest = coarse.sub(on_cells.reindex(coarse.index, fill_value=0.0))
            assert (rest > -1e-9).all()  # a shown larger cell holds all its shown cells
            for place in rest[rest > 1e-9].index:
                assert left_persons.loc[(place, band, d)] >= k, (place, band, day)
                checked += 1
    assert checked > 0 and (left_persons < k).any()  # small remainders exist, and none is revealed


# --------------------------------------------------------------------------- the Flows page
@pytest.fixture(scope="module")
def app_env(tmp_path_factory, app_sandbox):
    root = tmp_path_factory.mktemp("arrivals_app")
    with app_sandbox(root, n_layers=1) as ckpt:
        yield {"checkpoint": ckpt, "root": root}


def _flows_page():
    from streamlit.testing.v1 import AppTest

    from tools.realdata import REPO_ROOT

    at = AppTest.from_file(str(REPO_ROOT / "app" / "streamlit_app.py"), default_timeout=240).run()
    assert not at.exception, at.exception
    at.switch_page("app_pages/flows.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _text(at) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info])


def test_flows_page_shows_arrivals_by_hour(app_env):
    import json

    at = _flows_page()
    assert len(at.get("deck_gl_json_chart")) == 1  # the observed moves first; arrivals drawn when chosen
    at.radio(key="fl_view").set_value("Arrivals by hour").run()
    assert not at.exception, [e.message for e in at.exception]
    text = _text(at)
    assert "Where people arrive between 06:00 and 12:00" in text
    assert len(at.get("deck_gl_json_chart")) == 1 and "choose **Predicted** above" in text
    at.radio(key="fl_compare").set_value("Both, side by side").run()
    arrival_decks = [json.loads(d.proto.json) for d in at.get("deck_gl_json_chart")]
    assert len(arrival_decks) == 2  # observed and predicted arrivals, no flow map
    for deck in arrival_decks:
        ids = [layer.get("id", "") for layer in deck["layers"]]
        assert "basemap-streets" in ids and {"cells", "cells-context"} <= set(ids) and "flow-arcs" not in ids
    shown = [m.value for m in at.markdown if "arrivals shown at" in m.value]
    totals = {line.split(" of ")[1].split(" arrivals")[0] for line in shown}
    assert len(shown) == 2 and len(totals) == 1  # the same arrivals on both maps
    at.slider(key="fl_arrive").set_range(18, 24).run()
    assert not at.exception and "Where people arrive between 18:00 and 24:00" in _text(at)


def test_a_model_not_trained_for_at_time_says_so(app_env, monkeypatch, new_tiny):
    from trajmoe.train.checkpoint import save_checkpoint

    model, config = new_tiny(n_layers=1)
    config.tasks = ("next",)
    path = save_checkpoint(app_env["root"] / "next_only.safetensors", model, arch="trajmoe", config=config,
                           info={"cities": ["nowhere"], "domain_experts": []})
    monkeypatch.setenv("TRAJMOE_CHECKPOINT", str(path))
    at = _flows_page()
    at.radio(key="fl_view").set_value("Arrivals by hour").run()
    assert "cannot be predicted with this model" in _text(at)
    assert len(at.get("deck_gl_json_chart")) == 0
