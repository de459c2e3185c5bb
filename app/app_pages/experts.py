"""Experts: which of the model's specialists each place and hour is routed to, and what they do."""

import streamlit as st

import state
import views

st.title("Experts: the model's specialists")
st.markdown(
    "Inside the model, every visit is handed to a few of its **experts**: small sub-networks that "
    "each specialise in one kind of movement. Seeing which expert a place goes to shows how the "
    "model reads the city: where it sees nightlife, commuting, errands..."
)
prep, data = state.require_city()
shown = state.require_model(prep)
routing = shown.outputs.routing
if routing is None:
    st.warning("This model has no experts to show (it is a dense model). Fine-tune a TrajMoE checkpoint.")
    st.stop()
meta, unit = prep.meta, state.unit(prep.meta["kind"])
layer = 0
if routing.n_layers > 1:
    labels = [f"Layer {i + 1}" + (" (closest to the places)" if i == 0 else "") for i in range(routing.n_layers)]
    layer = labels.index(st.selectbox("Model layer", labels, key="ex_layer",
                                      help="Each layer of the model has its own experts. Layer 1 is the most readable."))
view = state.expert_view(shown, layer=layer, k=state.privacy_k())
if view is None:
    st.warning("No cell has enough people to be shown under the privacy setting.")
    st.stop()
by_cell, hidden = view["by_cell"], view["hidden"]
names = state.cell_names(prep.folder, state.pois_source().key, state.pois())
context = state.context_cells(prep.folder, state.privacy_k())
experts = list(range(1, routing.n_experts + 1))

left, right = st.columns(2)
with left:
    st.markdown("#### Which expert each place goes to most")
    views.show(views.dominant_map(by_cell, names=names, context=context, unit=unit), key="map_dominant")
    views.legend([(f"Expert {e}", views.expert_colour(e)) for e in experts])
with right:
    busiest = int(by_cell["dominant"].value_counts().index[0])
    expert = st.selectbox("How much one expert is used in each place", experts, index=experts.index(busiest),
                          format_func=lambda e: f"Expert {e}", key="ex_expert")
    views.show(views.share_map(by_cell, expert, names=names, context=context, unit=unit), key="map_share")
st.caption(state.hidden_note("these maps and charts", hidden, None, meta["kind"]))

st.markdown("#### What each expert stands for")
st.markdown("\n".join(f"- {text}" for text in view["texts"]))

views.plotly(views.heatmap(view["categories"], title="Kinds of place each expert's visits are in (1 = city average)",
                           colour_label="× average", scale="RdBu_r", midpoint=1.0, height=360), key="heat_categories")
views.plotly(views.hour_heatmap(view["hours"], title="When each expert is used (1 = its usual share; blank: under 20 visits)"),
             key="heat_hours")
