"""Experts: which of the model's specialists each place and hour is routed to, and what they do."""

import map_png
import streamlit as st

import charts
import kept_map
import page_parts
from maps.colours import expert_colour, legend
from maps.deck import tiles_toggle
from maps.experts import dominant_map, share_legend, share_map
from state import experts, summaries
from state.session import privacy_k
from trajmoe.analysis.privacy import counted_unit, hidden_note

st.title("Experts: the model's specialists")
st.markdown(
    "Inside the model, every visit is handed to a few of its **experts**: small sub-networks that "
    "each specialise in one kind of movement. Seeing which expert a place goes to shows how the "
    "model reads the city: where it sees nightlife, commuting, errands..."
)
prep, data = page_parts.require_city()
shown = page_parts.require_model(prep)
routing = shown.outputs.routing
if routing is None:
    st.warning("This model has no experts to show (it is a dense model). Fine-tune a TrajMoE checkpoint.")
    st.stop()
meta, unit, k = prep.meta, counted_unit(prep.meta["kind"]), privacy_k()
layer = 0
if routing.n_layers > 1:
    labels = experts.layer_labels(routing.n_layers)
    layer = labels.index(st.selectbox("Model layer", labels, key="ex_layer",
                                      help="Each layer of the model has its own experts. Layer 1 is the most readable."))
view = experts.expert_view(shown, layer=layer, k=k)
if view is None:
    st.warning("No cell has enough people to be shown under the privacy setting.")
    st.stop()
by_cell = view.by_cell
found = summaries.basemap_file()
names = summaries.cell_names(prep.folder, found)
context = summaries.context_cells(prep.folder, k)
base = summaries.basemap(found)
expert_ids = list(range(1, routing.n_experts + 1))
main = sorted(int(e) for e in by_cell["dominant"].unique())  # experts that are the main one somewhere
MAIN = "The main expert of each place"
shows = [MAIN] + [f"Where expert {e} is used" for e in expert_ids]
left, right = st.columns([3, 1])
# One map with a chooser, not two maps side by side: without a GPU every map costs the browser a
# drawing context of its own (app/shapes.py), and one map at a time reads as easily.
show = left.selectbox("What the map shows", shows, key="ex_show",
                      help="Each place's main expert, or how much of its routing goes to one expert.")
tiles = tiles_toggle(key="ex_tiles", where=right)
expert = None if show == MAIN else expert_ids[shows.index(show) - 1]


def draw(tiles: bool):
    if expert is None:
        return dominant_map(by_cell, names=names, context=context, unit=unit, base=base, tiles=tiles)
    return share_map(by_cell, expert, names=names, context=context, unit=unit, base=base, tiles=tiles)


title = "Main expert per place" if expert is None else f"Expert {expert}: share of routing"
st.markdown("#### Which expert each place goes to most" if expert is None else
            f"#### How much of each place's routing goes to expert {expert}")
offline = draw(tiles=False)
kept_map.page_map(draw(tiles=True) if tiles else offline)  # kept by the browser across pages
with kept_map.below_map():
    if expert is None:
        legend([(f"Expert {e}", expert_colour(e)) for e in main])
        never = [e for e in expert_ids if e not in main]
        if never:
            st.caption(f"{len(main)} of the {len(expert_ids)} experts are the main one somewhere; "
                       f"expert{'s' if len(never) > 1 else ''} {', '.join(map(str, never))} never "
                       "(choose one above to see how much it is used).")
    else:
        share_legend(by_cell[f"expert_{expert}"], expert)
    st.download_button("This map (PNG)", lambda: map_png.decks_png([(offline, title)]),
                       f"experts_{meta['city'].lower().replace(' ', '_')}.png", mime="image/png", key="dl_experts_png")
    st.caption(hidden_note("this map and the charts", places=view.hidden, flows=None, kind=meta["kind"], k=k))

    st.markdown("#### What each expert stands for")
    poi_known = data.poi_known and view.categories.shape[1] > 0
    if not poi_known:
        st.caption("This city has no POI data, so the experts are told apart by when they are used, not by kinds of "
                   "place. Load POIs on **City & POIs** to see which kinds of place each expert stands for.")
    st.markdown("\n".join(f"- {text}" for text in view.texts))

    if poi_known:
        charts.plotly(charts.heatmap(view.categories, title="Kinds of place each expert's visits are in (1 = city average)",
                                     colour_label="× average", scale="RdBu_r", midpoint=1.0, height=360), key="heat_categories")
    charts.plotly(charts.hour_heatmap(view.hours, title="When each expert is used (1 = its usual share; blank: under "
                                                      f"{experts.MIN_HOUR_VISITS} visits)"), key="heat_hours")
