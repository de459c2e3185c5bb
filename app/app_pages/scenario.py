"""Scenario: add or remove POIs and see where the model expects people to go instead."""

import pandas as pd
import streamlit as st

import state
import views
from trajmoe.analysis.flows import CATEGORY_LABELS
from trajmoe.errors import TrajMoEError
from trajmoe.pois.categories import CATEGORIES

st.title("Scenario: what if this place changed?")
st.markdown(
    "Add or remove points of interest in chosen places. The app recomputes those places' features, "
    "asks the model again about the same held-out moves, and maps how the expected number of "
    "arrivals in each place changes."
)
prep, data = state.require_city()
shown = state.require_model(prep)
meta, k = prep.meta, state.privacy_k()
if not bool(data.cells["poi_known"].iloc[0]):
    st.warning("This city has no POI data, so there are no POIs to add or remove. Load POIs on the "
               "**City & POIs** page (the city is prepared again automatically).")
    st.stop()

names = state.cell_names(prep.folder, state.pois_source().key, state.pois())
people = data.visits.groupby("cell")["user_id"].nunique()
visits = data.visits["cell"].value_counts()
cells = data.cells[["cell"]].assign(people=lambda f: f["cell"].map(people).fillna(0),
                                    visits=lambda f: f["cell"].map(visits).fillna(0))
cells = cells[cells["people"] >= k].sort_values("visits", ascending=False)
if cells.empty:
    st.warning("No place has enough people to be shown under the privacy setting.")
    st.stop()
label = {c: f"{names.get(c, c)} ({int(v):,} visits)" for c, v in cells[["cell", "visits"]].itertuples(index=False)}

c1, c2, c3 = st.columns([1, 1, 2])
action = c1.radio("Change", ["Add", "Remove"], horizontal=True, key="sc_action")
count = c1.number_input("How many POIs", min_value=1, max_value=200, value=10, key="sc_count")
category = c2.selectbox("Of which kind", list(CATEGORIES), format_func=CATEGORY_LABELS.get, key="sc_category")
chosen = c3.multiselect("In which places", list(label), default=list(label)[:1], format_func=label.get, key="sc_cells",
                        help="Places are listed busiest first, named after a nearby POI.")
if not chosen:
    st.info("Choose at least one place.")
    st.stop()

change = int(count) if action == "Add" else -int(count)
edits = tuple((c, category, change) for c in chosen)
try:
    result = state.scenario(shown, data, edits)
except TrajMoEError as exc:
    st.warning(str(exc))
    st.stop()
if not result.applied:
    st.info(f"Nothing to remove: the chosen places have no {CATEGORY_LABELS[category]} POIs.")
    st.stop()
table, hidden = result.private(k)
edited = table[table["edited"]]
total = table["change"].sum()
here = edited["change"].sum()
verb = "adding" if change > 0 else "removing"
st.markdown(
    f"**Expected effect of {verb} {abs(change)} {CATEGORY_LABELS[category]} POIs in {len(chosen)} place"
    f"{'s' if len(chosen) > 1 else ''}**: {here:+,.2f} arrivals there out of {result.n_targets:,} predicted "
    f"moves ({here / max(edited['inflow_before'].sum(), 1e-9):+.2%}); the other shown places change by "
    f"{total - here:+,.2f} in total."
)
left, right = st.columns([5, 4])
with left:
    views.show(views.change_map(table, edited=chosen, names=names, context=state.context_cells(prep.folder, k)), key="map_change")
    views.legend([("more arrivals", "#2166ac"), ("fewer arrivals", "#d6604d"), ("changed place (outlined)", "#141414")])
with right:
    top = table.reindex(table["change"].abs().sort_values(ascending=False).index).head(12)
    st.dataframe(pd.DataFrame({
        "place": top["cell"].map(names), "before": top["inflow_before"], "after": top["inflow_after"],
        "change": top["change"], "change %": top["change_pct"],
    }), hide_index=True, column_config={"before": st.column_config.NumberColumn(format="%.1f"),
                                   "after": st.column_config.NumberColumn(format="%.1f"),
                                   "change": st.column_config.NumberColumn(format="%+.3f"),
                                   "change %": st.column_config.NumberColumn(format="%+.2f%%")})
st.caption(state.hidden_note("this map", hidden, None, meta["kind"]) +
           f" Showing {shown.label}; arrivals are the model's expected counts on the held-out moves.")
