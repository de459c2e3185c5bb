"""Scenario: add or remove POIs and see where the model expects people to go instead."""

import map_png
import streamlit as st

import kept_map
import page_parts
from maps.deck import tiles_toggle
from maps.scenario import change_legend, change_map, change_scale
from state import scenario, summaries
from state.session import privacy_k
from state.text import error, plain
from trajmoe.analysis.privacy import HOUR_BAND, hidden_note
from trajmoe.errors import TrajMoEError
from trajmoe.pois.categories import CATEGORIES, CATEGORY_LABELS

st.title("Scenario: what if this place changed?")
st.markdown(
    "Add or remove points of interest in chosen places. The app recomputes those places' features, "
    "asks the model again about the same held-out moves, and maps how the expected number of "
    "arrivals in each place changes."
)
prep, data = page_parts.require_city()
shown = page_parts.require_model(prep)
meta, k = prep.meta, privacy_k()
if not data.poi_known:
    st.warning("This city has no POI data, so there are no POIs to add or remove. Load POIs on the "
               "**City & POIs** page (the city is prepared again automatically).")
    st.stop()

found = summaries.basemap_file()
names = summaries.cell_names(prep.folder, found)
label = summaries.scenario_places(prep.folder, k, names)  # cell -> "<name> (N visits)", busiest first
if not label:
    st.warning("No place has enough people to be shown under the privacy setting.")
    st.stop()

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
have = data.cells.set_index("cell")[f"poi_n_{category}"].reindex(chosen, fill_value=0).astype(int)
kind = CATEGORY_LABELS[category]
st.caption("Now: " + "; ".join(f"{plain(names.get(c, c))} has {n:,} {kind} POI{'s' if n != 1 else ''}" for c, n in have.items()) +
           ("." if change > 0 else ". Removing takes away at most what a place has."))
timed = st.toggle("Only arrivals at a time of day", value=False, key="sc_timed",
                  help="Ask the model where people arrive in these hours (it is told when each visit happens), "
                       "instead of over the whole day. Hours move in whole 6-hour bands (the privacy rule).")
hours = None
if timed:
    hours = st.slider("Arrival time (hour the visit starts)", 0, 24, (6, 12), step=HOUR_BAND, key="sc_hours")
try:
    result = scenario.scenario(shown, data, edits, hours=hours)
except TrajMoEError as exc:
    st.warning(error(exc))
    st.stop()
if not result.applied:
    st.info(f"Nothing to remove: the chosen places have no {CATEGORY_LABELS[category]} POIs.")
    st.stop()
view = scenario.scenario_view(result, k)
verb = "adding" if change > 0 else "removing"
when = (f" arriving between {result.arrival_hours[0]:02d}:00 and {result.arrival_hours[1]:02d}:00"
        if result.arrival_hours else "")
done = sum(abs(e.change) for e in result.applied)
asked = abs(change) * len(chosen)
capped = "" if done == asked else f" (asked {asked:,}: the places had only {done:,} to remove)"
st.markdown(
    f"**Expected effect of {verb} {abs(change)} {kind} POIs in {len(chosen)} place"
    f"{'s' if len(chosen) > 1 else ''}**{capped}: {view.here:+,.2f} arrivals there out of {result.n_targets:,} predicted "
    f"moves{when} ({view.share:+.2%}); the other shown places change by {view.elsewhere:+,.2f} in total."
)
tiles = tiles_toggle(key="sc_tiles")
context, base = summaries.context_cells(prep.folder, k), summaries.basemap(found)
changed = change_map(view.cells, edited=chosen, names=names, context=context, base=base)
kept_map.page_map(change_map(view.cells, edited=chosen, names=names, context=context, base=base, tiles=True)
                  if tiles else changed)  # kept across pages
below = kept_map.below_map()
left, right = below.columns([5, 4])
with left:
    change_legend(change_scale(view.cells["change_pct"]))
    st.download_button("Map (PNG)", lambda: map_png.deck_png(changed, title=f"Expected effect of {verb} {abs(change)} "
                                                                          f"{kind} POIs"),
                       f"scenario_{meta['city'].lower().replace(' ', '_')}.png", mime="image/png", key="dl_scenario_png")
with right:
    st.dataframe(view.top(names), hide_index=True, column_config={
        "before": st.column_config.NumberColumn(format="%.1f"), "after": st.column_config.NumberColumn(format="%.1f"),
        "change": st.column_config.NumberColumn(format="%+.3f"),
        "change %": st.column_config.NumberColumn(format="%+.2f%%")})
below.caption(hidden_note("this map", places=view.hidden, flows=None, kind=meta["kind"], k=k) +
              f" Showing {plain(shown.label)}; arrivals are the model's expected counts on the held-out moves.")
