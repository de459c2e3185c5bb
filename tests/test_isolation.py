"""Two planners at once: app sessions that upload and fine-tune at the same time keep their own data,
models and downloads, and the pretrained model they share (st.cache_resource) is never changed.

Two streamlit AppTest sessions run in one process, as sessions do on one server: the caches are
shared, the session state is not. Both fine-tune concurrently (two threads); a third session
opened afterwards must see neither.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load, load_file
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py"
UPLOADS = {"north_side.csv": "North Side", "south_side.csv": "South Side"}


@pytest.fixture(scope="module")
def env(tmp_path_factory, sample_trajectories, app_sandbox):
    """A tiny checkpoint, a work folder of our own, two uploads with different people."""
    root = tmp_path_factory.mktemp("isolation")
    frame = pd.read_csv(sample_trajectories)
    users = frame["user_id"].unique()
    files = {name: frame[frame["user_id"].isin(users[i * 50:(i + 1) * 50])].to_csv(index=False).encode()
             for i, name in enumerate(UPLOADS)}
    with app_sandbox(root) as ckpt:
        yield {"checkpoint": ckpt, "files": files, "work": root / "work"}


def session_of(at: AppTest):
    """The session's one object (app/state/session.py: Session)."""
    from state.session import KEY

    return at.session_state[KEY]


def texts(at: AppTest) -> str:
    return "\n".join(e.value for e in (*at.markdown, *at.caption, *at.info, *at.success, *at.warning))


def session_with_upload(name: str, data: bytes) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    at.switch_page("app_pages/trajectories.py").run()
    at.file_uploader(key="traj_upload").set_value((name, data, "text/csv")).run()
    at.switch_page("app_pages/finetune.py").run()
    assert not at.exception, [e.message for e in at.exception]
    at.number_input(key="ft_max_steps").set_value(3)
    return at


def folder_digest(folder: str) -> str:
    h = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def sessions(env):
    """Sessions A and B, uploaded, then fine-tuned at the same time in two threads."""
    a, b = (session_with_upload(name, data) for name, data in env["files"].items())
    errors: list[BaseException] = []
    spans: list[tuple[float, float]] = []

    def click(at: AppTest) -> None:
        start = time.monotonic()
        try:
            at.button(key="ft_run").click().run()
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)
        spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=click, args=(at,)) for at in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert not errors, errors
    (s1, e1), (s2, e2) = spans
    assert max(s1, s2) < min(e1, e2)  # the two fine-tunings really ran at the same time
    for at in (a, b):
        assert not at.exception, [e.message for e in at.exception]
    return a, b


def test_each_session_keeps_its_own_data_and_model(sessions):
    a, b = sessions
    fa, fb = session_of(a).finetuned, session_of(b).finetuned
    assert UPLOADS["north_side.csv"] in fa.label and UPLOADS["south_side.csv"] in fb.label
    assert fa.folder != fb.folder and fa.key != fb.key
    assert fa.model is not fb.model
    wa, wb = fa.model.state_dict(), fb.model.state_dict()
    assert any(not torch.equal(wa[n], wb[n]) for n in wa if n in wb)  # trained on different people
    assert not set(map(id, wa.values())) & set(map(id, wb.values()))  # no tensor shared
    # each download is its own model: weights equal the session's model, sidecar names its city
    for ft, city in zip((fa, fb), UPLOADS.values()):
        weights = load(ft.files["safetensors"])
        assert all(torch.equal(weights[n], t) for n, t in ft.model.state_dict().items())
        assert json.loads(ft.files["json"])["training"]["city"] == city
    assert fa.files["safetensors"] != fb.files["safetensors"]
    for at, mine, other in ((a, *UPLOADS.values()), (b, *reversed(UPLOADS.values()))):
        assert f"of {mine}" in texts(at) and other not in texts(at)


def test_the_shared_model_is_unchanged_and_not_in_training_mode(env, sessions):
    from state import models

    shared, _ = models.load_model(str(env["checkpoint"]), env["checkpoint"].stat().st_mtime)
    on_disk = load_file(str(env["checkpoint"]))
    assert set(shared.state_dict()) == set(on_disk)
    assert all(torch.equal(t, on_disk[name]) for name, t in shared.state_dict().items())
    assert not shared.training
    assert all(session_of(at).finetuned.model is not shared for at in sessions)


def test_pages_show_each_session_its_own_model(sessions):
    a, b = sessions
    for at, mine, other in ((a, *UPLOADS.values()), (b, *reversed(UPLOADS.values()))):
        at.switch_page("app_pages/flows.py").run()
        assert not at.exception, [e.message for e in at.exception]
        shown = texts(at)
        assert f"fine-tuned on 5% of {mine}" in shown and other not in shown


def test_a_new_session_sees_neither_upload_nor_fine_tuned_model(sessions):
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    assert not at.exception
    assert session_of(at).finetuned is None and session_of(at).trajectories is None
    sidebar = "\n".join(c.value for c in at.sidebar.caption)
    assert "Fine-tuned in this session" not in sidebar and "Pretrained" in sidebar
    assert not any(name in sidebar for name in UPLOADS)


def test_one_session_working_does_not_touch_the_others_files(sessions):
    a, b = sessions
    folder_a = session_of(a).finetuned.folder
    before = folder_digest(folder_a)
    b.switch_page("app_pages/scenario.py").run()  # B keeps working: scenario, flows on its data
    b.switch_page("app_pages/flows.py").run()
    b.slider(key="fl_hours").set_value((6, 12)).run()
    assert not b.exception
    assert folder_digest(folder_a) == before
    assert "North Side" in session_of(a).finetuned.label
