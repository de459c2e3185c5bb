"""TrajMoE for urban planners: the entry file. Thin pages live in app_pages/; what they share
(inputs, caches, the model) in state.py, maps and charts in views.py, the work in trajmoe/.

    make app    # or: streamlit run app/streamlit_app.py
"""

import streamlit as st

import state

# No icons anywhere: a ":material/...:" page icon becomes a favicon fetched from fonts.gstatic.com,
# and the app must make no request outside the machine (tests/test_browser.py checks).
st.set_page_config(page_title="TrajMoE · where people go next", layout="wide")

pages = [
    st.Page("app_pages/city.py", title="City & POIs", default=True),
    st.Page("app_pages/trajectories.py", title="Trajectories"),
    st.Page("app_pages/finetune.py", title="Fine-tune"),
    st.Page("app_pages/flows.py", title="Flows"),
    st.Page("app_pages/experts.py", title="Experts"),
    st.Page("app_pages/scenario.py", title="Scenario"),
]
nav = st.navigation(pages)

with st.sidebar:
    st.caption("**Data**")
    st.caption(state.trajectories().label if not state.is_sample() else state.SAMPLE_LABEL)
    st.caption(f"POIs: {state.pois_source().label}")
    st.caption("**Model**")
    ft = st.session_state.get("finetuned")
    if ft:
        st.caption(f"Fine-tuned in this session ({ft['label']})")
    elif state.base_checkpoint() is None:
        st.caption("No shipped checkpoint found: data pages only, or upload one on Fine-tune.")
    else:
        st.caption(f"Pretrained: {state.base_checkpoint().name}")
    st.slider(
        "Privacy: hide places and flows with fewer than this many people", min_value=2, max_value=20,
        value=5, key="privacy_k",
        help="A cell, district or flow is shown, and exported, only when at least this many different "
             "people (trips for trip data, bikes for bike-share) contribute to it.",
    )

nav.run()
