"""One link in many tabs, on one server with bounded disk (issue 27, items 1, 2, 4, 5 and 7).

Saves never lose another tab's work (the save pattern under two threads x many saves; two AppTest
tabs of one link), deletion stays deleted (tombstone), quotas refuse uploads and fine-tunings
with a message and keep nothing, a damaged session record is said in words with a working
"Delete my data now", and a fine-tuning cut off by a restart is reported on reconnect.
tests/test_browser_saves.py does the two-tab case in a real browser.
"""

from __future__ import annotations

import calendar
import json
import os
import threading
import time

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest
from test_app import go
from test_app_session import APP, TIMEOUT, open_app, sess, sidebar, text

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def env(tmp_path_factory, sample_trajectories, app_sandbox):
    root = tmp_path_factory.mktemp("app_saves")
    frame = pd.read_csv(sample_trajectories)
    small = frame[frame["user_id"].isin(frame["user_id"].unique()[:60])]
    with app_sandbox(root) as ckpt:
        yield {"checkpoint": ckpt, "csv": small.to_csv(index=False).encode(), "work": root / "work"}


def sidebar_warnings(at: AppTest) -> str:
    return "\n".join(w.value for w in at.sidebar.warning)


def record(env, token: str) -> dict:
    return json.loads((env["work"] / "sessions" / token / "session.json").read_text())


def uploaded(env, name: str = "my_city.csv") -> AppTest:
    at = open_app()
    go(at, "trajectories")
    at.file_uploader(key="traj_upload").set_value((name, env["csv"], "text/csv")).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def finetune(at: AppTest) -> AppTest:
    go(at, "finetune")
    at.number_input(key="ft_max_steps").set_value(2)
    at.button(key="ft_run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def delete(at: AppTest) -> AppTest:
    at.sidebar.button(key="delete_my_data").click().run()
    assert not at.exception
    at.sidebar.button(key="delete_confirm").click().run()
    assert not at.exception
    return at


# --------------------------------------------------------------------------- the save pattern
def _saves(root, token: str, tab: str, n: int, start=None) -> None:
    """One tab's ``n`` saves: each sets a field no other save touches (a save that overwrote another
    tab's newer record would lose that tab's field for good) and the tab's last value of "city"."""
    from state import saved

    if start is not None:
        start.wait(30)
    mine, seen = {"privacy_k": 5}, {"privacy_k": 5}
    for i in range(n):
        mine[f"{tab}{i}"], mine[f"last_{tab}"] = i, i
        seen = saved.commit(root, token, mine, seen)


def _check_saved(path, n: int) -> None:
    final = json.loads(path.read_text())
    for tab in "ab":
        lost = [i for i in range(n) if final.get(f"{tab}{i}") != i]
        assert not lost and final[f"last_{tab}"] == n - 1, f"tab {tab} lost {len(lost)} of {n} saves"
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", "session.json"]  # no temporary file left


def test_two_threads_saving_one_link_lose_nothing_and_readers_never_see_half_a_record(env, tmp_path):
    """Two tabs (threads) x 300 saves and a reader: every read is a whole record, no save fails, no
    save is lost (the old pattern, one shared temporary name: 98 FileNotFoundError and 38 invalid
    reads in 2 x 3,000 saves)."""
    from state import storage

    token, n = "tok-" + "a" * 20, 300
    path = storage.session_folder(tmp_path, token) / "session.json"
    errors: list[BaseException] = []
    done = threading.Event()
    reads = []

    def tab(name: str) -> None:
        try:
            _saves(tmp_path, token, name, n)
        except BaseException as exc:  # reported on the test's thread
            errors.append(exc)

    def reader() -> None:
        while not done.is_set():
            try:
                reads.append(len(json.loads(path.read_text())))
            except FileNotFoundError:
                if reads:  # it existed before: a save made it vanish
                    errors.append(AssertionError("the record vanished during a save"))
            except ValueError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=tab, args=(name,)) for name in "ab"]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    done.set()
    watcher.join(30)
    assert not errors, errors[:3]
    assert len(reads) > 50
    _check_saved(path, n)


def test_two_server_processes_saving_one_link_lose_nothing(env, tmp_path):
    """The lock holds across processes too (a deployment may run several servers on one folder)."""
    import multiprocessing

    from state import storage

    token, n = "tok-" + "p" * 20, 300
    fork = multiprocessing.get_context("fork")
    start = fork.Barrier(2)  # both start saving at the same moment
    procs = [fork.Process(target=_saves, args=(tmp_path, token, name, n, start)) for name in "ab"]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(300)
    assert [proc.exitcode for proc in procs] == [0, 0]
    _check_saved(storage.session_folder(tmp_path, token) / "session.json", n)


def test_a_deleted_link_refuses_every_later_save(env, tmp_path):
    from state import saved, storage

    token = "tok-" + "b" * 20
    saved.commit(tmp_path, token, {"city": "A"}, {})
    folder = storage.session_folder(tmp_path, token)
    assert folder.is_dir()
    storage.bury(tmp_path, token)
    assert not folder.exists()
    with pytest.raises(storage.LinkDeleted):
        saved.commit(tmp_path, token, {"city": "B"}, {"city": "A"})
    assert not folder.exists()
    stones = list((tmp_path / "deleted").iterdir())
    assert len(stones) == 1 and token not in stones[0].name and token not in stones[0].read_text()


def test_the_sweep_runs_at_most_hourly_and_removes_expired_links_and_crash_leftovers(env, tmp_path):
    from state import storage

    old = time.time() - (storage.KEEP_DAYS * 86400 + 60)
    for token, age in (("old-link-" + "c" * 16, old), ("new-link-" + "d" * 16, time.time())):
        folder = storage.session_folder(tmp_path, token)
        folder.mkdir(parents=True)
        (folder / "session.json").write_text("{}")
        os.utime(folder / "session.json", (age, age))
    scratch = tmp_path / "scratch" / "tmp123"
    scratch.mkdir(parents=True)
    os.utime(scratch, (old, old))
    assert storage.sweep_now(tmp_path) and not storage.sweep_now(tmp_path)  # once, then not for an hour
    assert not storage.session_folder(tmp_path, "old-link-" + "c" * 16).exists() and not scratch.exists()
    assert storage.session_folder(tmp_path, "new-link-" + "d" * 16).is_dir()
    assert storage.tombstone(tmp_path, "old-link-" + "c" * 16)["why"] == "expired"


# --------------------------------------------------------------------------- two tabs of one link
def test_a_tab_that_did_not_drop_the_model_never_deletes_it_and_is_told_its_view_is_stale(env):
    one = uploaded(env)
    token = one.query_params["s"]
    two = open_app(token)  # the same link in a second tab, before the fine-tuning
    finetune(one)
    weights = env["work"] / "sessions" / token / "finetuned" / "trajmoe_finetuned.safetensors"
    assert weights.is_file() and record(env, token)["finetuned"]
    two.sidebar.slider(key="privacy_k").set_value(8).run()  # tab 2 changes something else
    assert not two.exception
    assert weights.is_file() and record(env, token)["finetuned"]["key"] == sess(one).finetuned.key
    assert record(env, token)["privacy_k"] == 8
    assert "Another tab of this link has fine-tuned" in sidebar_warnings(two)
    two.sidebar.button(key="reload_saved").click().run()
    assert not two.exception
    assert "Fine-tuned in this session" in sidebar(two) and "Another tab" not in sidebar_warnings(two)
    assert two.sidebar.slider(key="privacy_k").value == 8
    go(two, "finetune")
    two.button(key="ft_forget").click().run()  # tab 2 now drops the model it shows: that one goes
    assert not weights.exists() and record(env, token)["finetuned"] is None

    delete(one)
    assert not (env["work"] / "sessions" / token).exists()
    assert "Your data was deleted" in sidebar_warnings(one) and one.query_params["s"] != token
    two.sidebar.slider(key="privacy_k").set_value(9).run()  # any click in tab 2 afterwards
    assert not two.exception
    assert not (env["work"] / "sessions" / token).exists()
    assert any("was deleted on" in w.value for w in two.main.warning)
    two.button(key="start_afresh").click().run()
    assert two.query_params["s"] not in (token, one.query_params["s"]) and sess(two).trajectories is None
    opened = open_app(token)  # the deleted link, opened again: says so, opens nothing
    assert "was deleted on" in sidebar_warnings(opened) and opened.query_params["s"] != token
    assert sess(opened).trajectories is None and sess(opened).finetuned is None


def test_an_expired_link_says_so(env):
    from state import saved

    at = uploaded(env, "old.csv")
    token = at.query_params["s"]
    path = env["work"] / "sessions" / token / "session.json"
    old = time.time() - (saved.KEEP_DAYS * 86400 + 60)
    os.utime(path, (old, old))
    late = open_app(token)
    assert f"nobody had opened the link for {saved.KEEP_DAYS} days" in sidebar_warnings(late)
    assert sess(late).trajectories is None and not path.parent.exists()


def test_a_visit_that_stores_nothing_makes_no_folder(env):
    before = set((env["work"] / "sessions").iterdir()) if (env["work"] / "sessions").is_dir() else set()
    at = open_app()
    go(at, "trajectories")
    go(at, "flows")
    after = set((env["work"] / "sessions").iterdir()) if (env["work"] / "sessions").is_dir() else set()
    assert after == before
    at.sidebar.slider(key="privacy_k").set_value(6).run()  # a choice is kept: now it has a folder
    assert record(env, at.query_params["s"])["privacy_k"] == 6


def test_a_change_on_a_page_that_stops_early_is_kept(env):
    """The Fine-tune page ends with st.stop() until a model is tuned; after st.stop() every read of
    st.session_state raises again, and the slider's new k was never saved."""
    at = open_app()
    go(at, "finetune")
    assert any(i.value.startswith("Not fine-tuned yet") for i in at.info)
    at.sidebar.slider(key="privacy_k").set_value(7).run()
    assert record(env, at.query_params["s"])["privacy_k"] == 7
    assert open_app(at.query_params["s"]).sidebar.slider(key="privacy_k").value == 7


def test_a_city_named_by_a_project_file_is_prepared_in_the_sessions_own_folder(env):
    at = open_app()
    project = {"format": "trajmoe-app-project", "version": 1, "trajectories": None, "pois": None,
               "city": "Atlantis", "resolution": None, "weekday_unreliable": False, "privacy_k": 5,
               "finetune": {"share": 5, "epochs": 1, "max_steps": 0, "light": False}}
    data = json.dumps(project).encode()
    shared = set((env["work"] / "cities").glob("*")) if (env["work"] / "cities").is_dir() else set()
    at.sidebar.file_uploader(key="project_upload").set_value(("p.json", data, "application/json")).run()
    go(at, "trajectories")
    assert not at.exception
    assert (set((env["work"] / "cities").glob("*")) if (env["work"] / "cities").is_dir() else set()) == shared
    mine = env["work"] / "sessions" / at.query_params["s"] / "cities"
    assert any(mine.glob("*/meta.json"))
    delete(at)
    assert not mine.exists()


# --------------------------------------------------------------------------- quotas
def test_quotas_refuse_an_upload_and_a_fine_tuning_in_words_and_keep_nothing(env, monkeypatch):
    from state import storage

    at = open_app()
    monkeypatch.setattr(storage, "SESSION_MB", 0.05)  # 50 kB a link: the upload (~200 kB) is too big
    go(at, "trajectories")
    at.file_uploader(key="traj_upload").set_value(("big.csv", env["csv"], "text/csv")).run()
    assert not at.exception, [e.message for e in at.exception]
    message = " ".join(e.value for e in at.error)
    assert "No room for big.csv" in message and "MB one link may keep on this server" in message
    assert "/" not in message and at.query_params["s"] not in message
    assert not list(env["work"].glob(f"sessions/{at.query_params['s']}/uploads/*/*"))
    assert sess(at).trajectories is None

    monkeypatch.setattr(storage, "SESSION_MB", 1_000)
    monkeypatch.setattr(storage, "TOTAL_MB", storage.usage(env["work"]) / 1e6 + 0.001)  # the server is full
    go(at, "finetune")
    at.number_input(key="ft_max_steps").set_value(2)
    at.button(key="ft_run").click().run()
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "No room for the fine-tuned model" in message and "space for planners' work" in message
    assert sess(at).finetuned is None
    assert not (env["work"] / "sessions" / at.query_params["s"] / "finetuned").exists()


def test_a_refused_upload_is_deleted_at_once(env):
    at = open_app()
    go(at, "trajectories")
    at.file_uploader(key="traj_upload").set_value(("broken.csv", b"a,b\n1,2\n", "text/csv")).run()
    assert not at.exception
    assert at.error  # the check says why
    assert not list(env["work"].glob(f"sessions/{at.query_params['s']}/uploads/*/broken.csv"))


def test_a_refused_poi_or_district_file_is_deleted_at_once(env):
    at = uploaded(env, "refused_pois.csv")  # the link keeps something: its folder exists
    uploads = env["work"] / "sessions" / at.query_params["s"] / "uploads"
    go(at, "city")
    at.file_uploader(key="poi_upload").set_value(("pois.csv", b"name\nno coordinates\n", "text/csv")).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.error  # it says why
    assert not list(uploads.glob("*/pois.csv"))
    go(at, "flows")
    at.file_uploader(key="fl_zones").set_value(("districts.geojson", b"not json", "application/json")).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("districts.geojson" in e.value for e in at.error)
    assert not list(uploads.glob("*/districts.geojson"))
    assert list(uploads.glob("*/refused_pois.csv"))  # the trajectories in use stay


def _fetch_pois_script():  # an AppTest script: keep two "fetched" POIs, or say why not
    import pandas as pd
    import streamlit as st

    from state import inputs, storage

    frame = pd.DataFrame({"lat": [60.17, 60.18], "lon": [24.94, 24.95], "category": ["food_drink", "retail"],
                          "name": ["a", "b"], "source": ["osm", "osm"]})
    try:
        src = inputs.pois_from_frame(frame, 'fetched')
        st.write(f"kept {len(inputs.read_poi_file(src.key, src.path))} POIs")
    except storage.QuotaExceeded as exc:
        st.error(str(exc))


def test_osm_data_fetched_online_is_kept_only_within_the_quota(env, monkeypatch):
    from state import storage

    kept = lambda: sorted(env["work"].glob("sessions/*/pois/*/pois.parquet"))  # noqa: E731
    before = kept()
    at = AppTest.from_function(_fetch_pois_script, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.message for e in at.exception]
    assert [m.value for m in at.markdown] == ["kept 2 POIs"] and len(kept()) == len(before) + 1

    monkeypatch.setattr(storage, "SESSION_MB", 1e-9)  # no room left for this link
    at = AppTest.from_function(_fetch_pois_script, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "No room for the POIs and streets fetched from OpenStreetMap" in at.error[0].value
    assert len(kept()) == len(before) + 1  # nothing of the refused fetch was kept
    assert not [p for p in (env["work"] / "scratch").rglob("*") if p.is_file()]


def test_a_refused_checkpoint_is_deleted_at_once(env):
    at = uploaded(env, "ckpt_city.csv")  # the link keeps something: its folder exists
    go(at, "finetune")
    at.radio(key="ckpt_choice").set_value("A checkpoint I upload").run()
    at.file_uploader(key="ckpt_upload").set_value([("bad.safetensors", b"not weights", "application/octet-stream"),
                                                   ("bad.json", b"{}", "application/json")]).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("This checkpoint cannot be used" in e.value for e in at.error)
    assert not list(env["work"].glob(f"sessions/{at.query_params['s']}/checkpoints/*/*"))


# --------------------------------------------------------------------------- damaged record, restart
@pytest.mark.parametrize("damage", ["truncated", "not json", "a list", "wrong types", "huge number", "endless run"])
def test_a_damaged_record_is_said_in_words_and_delete_still_works(env, damage):
    at = uploaded(env, "damaged.csv")
    token = at.query_params["s"]
    path = env["work"] / "sessions" / token / "session.json"
    good = path.read_text()
    path.write_text({"truncated": good[: len(good) // 2], "not json": "<html>oops</html>", "a list": "[1, 2]",
                     "wrong types": json.dumps({**json.loads(good), "trajectories": "a string", "city": 5}),
                     "huge number": good.replace('"privacy_k": 5', '"privacy_k": 1e999'),
                     "endless run": good.replace('"privacy_k": 5', '"running": {"started": 1e999, "server": "x"}, '
                                                                   '"privacy_k": 5')}[damage])
    again = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    again.query_params["s"] = token
    again.run()
    assert not again.exception, [e.message for e in again.exception]
    assert "could not be read (its record on the server is damaged)" in sidebar_warnings(again)
    assert again.query_params["s"] == token  # the same link: its data can still be deleted
    assert any(path.parent.rglob("damaged.csv"))
    delete(again)
    assert not path.parent.exists() and again.query_params["s"] != token


def test_a_fine_tuning_cut_off_by_a_restart_is_reported_on_reconnect(env):
    from state import saved

    at = uploaded(env, "restart.csv")
    token = at.query_params["s"]
    path = env["work"] / "sessions" / token / "session.json"
    started = calendar.timegm((2026, 12, 8, 14, 5, 0))  # 14:05 UTC
    path.write_text(json.dumps({**json.loads(path.read_text()), "running": {"started": started, "server": "gone"}}))
    again = open_app(token)  # a new server process would have another SERVER id than the record's
    assert ("Your fine-tuning started at 14:05 UTC did not finish: the server restarted. Start it again on "
            "**Fine-tune**.") in sidebar_warnings(again)
    assert record(env, token)["running"] is None  # said once
    assert "did not finish" not in sidebar_warnings(open_app(token))
    assert saved.SERVER != "gone"
    finetune(again)  # a run of this process records itself and clears its mark when done
    assert record(env, token)["running"] is None and record(env, token)["finetuned"]
    assert "Done:" in text(again)
