"""TrajMoE for urban planners: the entry file. It lists the pages (each with the widget keys it
keeps across page switches), draws the sidebar, runs the chosen page and, after Flows, Experts or
Scenario, draws the map they share (kept_map.py).

Thin pages live in app_pages/; what they show alike in page_parts.py; data in state/ (session.py:
the session's one object, inputs.py: files, city and models, summaries.py: what the data pages
show, predictions.py: the shown model, one module per analysis page, saved.py: what survives a
refresh, project.py: the project file, text.py: text from files made safe to show, storage.py:
locks, tombstones and quotas); maps in maps/, charts in charts.py; the work in trajmoe/.
app/README.md has the table.

    make app    # or: streamlit run app/streamlit_app.py
"""

import contextlib

import streamlit as st

import kept_map
from state import inputs, models, project, saved, storage
from state.session import PRIVACY_K, session
from state.text import error, plain
from trajmoe.analysis.privacy import K_CHOICES
from trajmoe.errors import TrajMoEError

# No icons anywhere: a ":material/...:" page icon becomes a favicon fetched from fonts.gstatic.com,
# and the app must make no request outside the machine (tests/test_browser.py checks).
st.set_page_config(page_title="TrajMoE · where people go next", layout="wide")
sess = saved.restore()  # before anything reads the session: a refreshed page gets its work back

# Each page, with the widget keys it keeps across page switches. Streamlit forgets a page's widget
# values when another page runs; assigning them back keeps a planner's choices (hours, days, which
# map, the scenario's edit) for when they come back. Only widgets whose options never change: a kept
# value that is no longer an option would be refused. tests/test_app_layout.py checks that every key
# here is a widget key of its page.
PAGES = (
    (st.Page("app_pages/city.py", title="City & POIs", default=True), ("place",)),
    (st.Page("app_pages/trajectories.py", title="Trajectories"), ()),
    (st.Page("app_pages/finetune.py", title="Fine-tune"), ()),
    (st.Page("app_pages/flows.py", title="Flows"),
     ("fl_view", "fl_compare", "fl_hours", "fl_arrive", "fl_days", "fl_arcs", "fl_tiles")),
    (st.Page("app_pages/experts.py", title="Experts"), ("ex_tiles",)),
    (st.Page("app_pages/scenario.py", title="Scenario"),
     ("sc_action", "sc_count", "sc_category", "sc_timed", "sc_hours", "sc_tiles")),
)
nav = st.navigation([page for page, _ in PAGES])
if sess.gone:  # another tab deleted this link's work (or it expired): show none of it, save nothing
    st.warning(sess.gone)
    st.button("Start afresh under a new link", key="start_afresh", type="primary", on_click=saved.start_afresh)
    st.stop()

for _key in (key for _, kept in PAGES for key in kept):
    if _key in st.session_state:
        st.session_state[_key] = st.session_state[_key]


def _load_project() -> None:
    """The project uploader's callback (runs before the script, so it may set the slider's value)."""
    upload = st.session_state.get("project_upload")
    if upload is None:
        return
    try:
        session().project_todo = project.load_project(upload.getvalue()) or ["Project loaded."]
    except TrajMoEError as exc:
        session().project_todo = [str(exc)]


try:
    cov = inputs.coverage()  # the page prepares this city anyway; outside the sidebar so its progress shows there
except TrajMoEError:
    cov = None


def _ask_to_delete(asked: bool) -> None:
    """The "Delete my data now" button asks first: the question and its two buttons show while this is set."""
    st.session_state["delete_asked"] = asked


def _delete() -> None:
    _ask_to_delete(False)
    saved.delete_my_data()


with st.sidebar:
    for notice in sess.notices:  # a deleted or expired link, a damaged record, a fine-tuning cut off by a restart
        st.warning(notice)
    if sess.notices:
        st.button("OK", key="notices_ok", on_click=sess.notices.clear)
    if sess.stale:
        st.warning("Another tab of this link has fine-tuned a model or changed the data since this page read it: "
                   "what this page shows may be out of date. Your changes here are saved without undoing theirs.")
        st.button("Reload this link's saved work", key="reload_saved", on_click=saved.reload)
    st.caption("**Data**")
    st.caption(plain(inputs.trajectories().label))  # labels hold file and place names: never Markdown
    st.caption(f"POIs: {plain(inputs.pois_source().label)}")
    if cov is not None and not cov.covered:
        st.warning(f"These POIs do not cover the trajectories ({cov.where()} in their area): see the "
                   "**Trajectories** page for what to do.")
    st.caption("**Model**")
    ft = sess.finetuned
    if ft:
        st.caption(f"Fine-tuned in this session ({plain(ft.label)})")
    elif models.base_checkpoint() is None:
        st.caption("No shipped checkpoint found: data pages only, or upload one on Fine-tune.")
    else:
        st.caption(f"Pretrained: {plain(models.base_checkpoint().name)}")
    k = st.slider(  # its value is set by saved.restore() (default, or the link's saved k)
        "Privacy: hide places and flows with fewer than this many people", min_value=K_CHOICES[0],
        max_value=K_CHOICES[1], key=PRIVACY_K,
        help="A cell, district or flow is shown, and exported, only when at least this many different "
             "people (trips for trip data, bikes for bike-share) contribute to it.",
    )
    with st.expander("Your work and this link"):
        st.caption(saved.link_note())
        if not st.session_state.get("delete_asked"):
            st.button("Delete my data now", key="delete_my_data", on_click=_ask_to_delete, args=(True,),
                      help="Removes your uploads, prepared cities and fine-tuned model from the server at once "
                           "and starts afresh under a new link.")
        else:
            st.warning("Delete everything this link keeps on the server (uploads, prepared cities, fine-tuned "
                       "model, settings)? This cannot be undone, and the link will open nothing afterwards.")
            yes, no = st.columns(2)
            yes.button("Yes, delete it all", key="delete_confirm", type="primary",
                       on_click=_delete)
            no.button("Cancel", key="delete_cancel", on_click=_ask_to_delete, args=(False,))
        st.download_button("Download the project file", project.project_file(), file_name="trajmoe_project.json",
                           mime="application/json", key="project_download",
                           help="Which POIs and trajectory file (by name and content digest, no paths), the city "
                                "name, map detail, privacy k and the fine-tuning settings.")
        st.file_uploader("Load a project file", type=["json"], key="project_upload", on_change=_load_project,
                         max_upload_size=1)  # MB: the browser refuses more; project.MAX_BYTES checks again here
        for line in sess.project_todo:
            st.caption(error(line))  # it quotes the file: no Markdown from it, no path

layout = kept_map.MapLayout.start(nav.title)  # Flows, Experts, Scenario: their map is kept across them
try:
    with layout.above if layout is not None else contextlib.nullcontext():
        nav.run()
except kept_map.PageDone:  # the page ended early after its map (kept_map.end_page)
    pass
except storage.QuotaExceeded as exc:  # an upload the link or the server has no room for
    st.error(str(exc))
finally:  # also after st.stop() and st.rerun(): the page's map, and what the page changed is kept for the link
    try:
        if layout is not None:
            layout.draw()
    finally:  # after st.stop() any Streamlit call raises again: save() is given what it writes
        saved.save(sess, k)
