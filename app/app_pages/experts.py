"""Experts: which of the model's specialists each place and hour is routed to, and what they do."""

import map_png
import streamlit as st

import views
from state import inputs, outputs, summaries
from state.session import privacy_k
from trajmoe.analysis.privacy import counted_unit, hidden_note

st.title("Experts: the model's specialists")
st.markdown(
    "Inside the model, every visit is handed to a few of its **experts**: small sub-networks that "
    "each specialise in one kind of movement. Seeing which expert a place goes to shows how the "
    "model reads the city: where it sees nightlife, commuting, errands..."
)
prep, data = inputs.require_city()
shown = outputs.require_model(prep)
routing = shown.outputs.routing
if routing is None:
    st.warning("This model has no experts to show (it is a dense model). Fine-tune a TrajMoE checkpoint.")
    st.stop()
meta, unit, k = prep.meta, counted_unit(prep.meta["kind"]), privacy_k()
layer = 0
if routing.n_layers > 1:
    labels = outputs.layer_labels(routing.n_layers)
    layer = labels.index(st.selectbox("Model layer", labels, key="ex_layer",
                                      help="Each layer of the model has its own experts. Layer 1 is the most readable."))
view = outputs.expert_view(shown, layer=layer, k=k)
if view is None:
    st.warning("No cell has enough people to be shown under the privacy setting.")
    st.stop()
by_cell = view.by_cell
names = summaries.cell_names(prep.folder)
context = summaries.context_cells(prep.folder, k)
base = summaries.basemap()
experts = list(range(1, routing.n_experts + 1))
main = sorted(int(e) for e in by_cell["dominant"].unique())  # experts that are the main one somewhere
tiles = views.tiles_toggle("ex_tiles")

left, right = st.columns(2)
with left:
    st.markdown("#### Which expert each place goes to most")
    dominant = views.dominant_map(by_cell, names=names, context=context, unit=unit, base=base)
    views.show(views.dominant_map(by_cell, names=names, context=context, unit=unit, base=base, tiles=True)
               if tiles else dominant, key="map_dominant")
    views.legend([(f"Expert {e}", views.expert_colour(e)) for e in main])
    never = [e for e in experts if e not in main]
    if never:
        st.caption(f"{len(main)} of the {len(experts)} experts are the main one somewhere; "
                   f"expert{'s' if len(never) > 1 else ''} {', '.join(map(str, never))} never "
                   "(see the map on the right for how much each is used).")
with right:
    expert = st.selectbox("How much one expert is used in each place", experts, index=experts.index(view.busiest),
                          format_func=lambda e: f"Expert {e}", key="ex_expert")
    share = views.share_map(by_cell, expert, names=names, context=context, unit=unit, base=base)
    views.show(views.share_map(by_cell, expert, names=names, context=context, unit=unit, base=base, tiles=True)
               if tiles else share, key="map_share")
    st.download_button("Both maps (PNG)", lambda: map_png.decks_png(
        [(dominant, "Main expert per place"), (share, f"Expert {expert}: share of routing")]),
        f"experts_{meta['city'].lower().replace(' ', '_')}.png", mime="image/png", key="dl_experts_png")
st.caption(hidden_note("these maps and charts", places=view.hidden, flows=None, kind=meta["kind"], k=k))

st.markdown("#### What each expert stands for")
poi_known = bool(data.cells["poi_known"].iloc[0]) and view.categories.shape[1] > 0
if not poi_known:
    st.caption("This city has no POI data, so the experts are told apart by when they are used, not by kinds of "
               "place. Load POIs on **City & POIs** to see which kinds of place each expert stands for.")
st.markdown("\n".join(f"- {text}" for text in view.texts))

if poi_known:
    views.plotly(views.heatmap(view.categories, title="Kinds of place each expert's visits are in (1 = city average)",
                               colour_label="× average", scale="RdBu_r", midpoint=1.0, height=360), key="heat_categories")
views.plotly(views.hour_heatmap(view.hours, title="When each expert is used (1 = its usual share; blank: under "
                                                f"{outputs.MIN_HOUR_VISITS} visits)"), key="heat_hours")
