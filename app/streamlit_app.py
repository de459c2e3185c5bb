"""TrajMoE for urban planners: the entry file. Thin pages live in app_pages/; what they share in
state/ (session.py: the session's one object, inputs.py: files, city and models, outputs.py and
summaries.py: what is shown), maps and charts in views.py, the work in trajmoe/.

    make app    # or: streamlit run app/streamlit_app.py
"""

import streamlit as st

from state import inputs
from state.session import PRIVACY_K, session
from trajmoe.analysis.privacy import DEFAULT_K, K_CHOICES

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
    st.caption(inputs.trajectories().label)
    st.caption(f"POIs: {inputs.pois_source().label}")
    st.caption("**Model**")
    ft = session().finetuned
    if ft:
        st.caption(f"Fine-tuned in this session ({ft.label})")
    elif inputs.base_checkpoint() is None:
        st.caption("No shipped checkpoint found: data pages only, or upload one on Fine-tune.")
    else:
        st.caption(f"Pretrained: {inputs.base_checkpoint().name}")
    st.slider(
        "Privacy: hide places and flows with fewer than this many people", min_value=K_CHOICES[0],
        max_value=K_CHOICES[1], value=DEFAULT_K, key=PRIVACY_K,
        help="A cell, district or flow is shown, and exported, only when at least this many different "
             "people (trips for trip data, bikes for bike-share) contribute to it.",
    )

nav.run()
