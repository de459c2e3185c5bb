"""Flows: observed and predicted moves between places, side by side."""

import streamlit as st

import views
from state import inputs, outputs, summaries
from state.session import privacy_k
from trajmoe.analysis.flows import DEFAULT_TOP_N, flows_csv, flows_geojson
from trajmoe.analysis.privacy import counted_unit, hidden_note
from trajmoe.errors import TrajMoEError

st.title("Flows: where people move next")
prep, data = inputs.require_city()
shown = outputs.require_model(prep)
meta, k = prep.meta, privacy_k()
unit = counted_unit(meta["kind"])
days = summaries.days_covered(prep.folder)
sample = "synthetic Helsinki sample" if inputs.is_sample() else "uploaded sample"
st.caption(
    f"These flows describe the {sample} ({meta['n_users']:,} {unit} over {days} days), not the whole "
    "population. **Observed**: the moves they really made. **Predicted**: where the model expected each of "
    "them to go next, from the same places at the same times."
)

c1, c2, c3, c4 = st.columns([2, 3, 2, 2])
hours = c1.slider("Hours of the day (start of the move)", 0, 24, (0, 24), key="fl_hours")
day_names = {"All days": "all", "Weekdays": "weekday", "Weekends": "weekend"}
day = c2.radio("Days", list(day_names), horizontal=True, key="fl_days", disabled=not data.weekday_reliable,
               help=None if data.weekday_reliable else "This data's weekdays are not reliable.")
top_n = c3.slider("Predicted places per move", 1, outputs.TOP_K, DEFAULT_TOP_N, key="fl_topn",
                  help="Each move's most likely next places, their chances rescaled to add up to one.")
n_arcs = c4.slider("Largest flows drawn", 20, 500, 150, step=10, key="fl_arcs",
                   help="Only the drawing is thinned out: totals, the table and the downloads use every flow shown.")
with st.expander("Add flows up to districts (optional)"):
    zone_file = st.file_uploader(f"A GeoJSON of district polygons (up to {inputs.max_upload_mb()} MB)",
                                 type=["geojson", "json"], key="fl_zones")
zones, zones_key = None, None
if zone_file is not None:
    src = inputs.save_upload(zone_file, zone_file.name)
    try:
        zones, zones_key = outputs.zones(src.key, src.path, prep.folder), src.key
        st.caption(f"Flows added up to {len(zones.position):,} districts; {len(zones.of_cell):,} cells lie inside them.")
    except TrajMoEError as exc:
        st.error(str(exc))

obs, pred = outputs.flow_summaries(shown, data, hours=hours, day=day_names[day], top_n=top_n, k=k,
                                   zones=zones, zones_key=zones_key)
names = None if zones is not None else summaries.cell_names(prep.folder)
context = summaries.context_cells(prep.folder, k)

left, right = st.columns(2)
for col, what, summary, key in ((left, "Observed", obs, "observed"), (right, "Predicted", pred, "predicted")):
    with col:
        st.markdown(f"#### {what}: {summary.flows['flow'].sum():,.0f} moves shown in {len(summary.flows):,} flows")
        views.show(views.flow_map(summary, context=context, names=names, unit=unit, zones=zones, max_arcs=n_arcs),
                   key=f"map_{key}")
        st.caption(hidden_note(f"the {key} map", places=summary.hidden_places, flows=summary.hidden_flows,
                               kind=meta["kind"], k=k))
views.legend([("arc starts (origin)", "#e67814"), ("arc ends (destination)", "#5a28a0"),
              ("more arrivals than departures", "#2166ac"), ("more departures than arrivals", "#d6604d")])

st.markdown("#### Arrivals and departures per place")
per_place = outputs.per_place_table(obs, pred, names)
st.dataframe(per_place, hide_index=True,
             column_config={c: st.column_config.NumberColumn(format="%.1f") for c in per_place.columns if "(" in c})

st.markdown("#### Download the flows shown")
d = st.columns(4)
tag = f"{meta['city'].lower().replace(' ', '_')}_{'districts' if zones is not None else 'cells'}"
d[0].download_button("Observed (GeoJSON)", flows_geojson(obs, label="observed"), f"flows_observed_{tag}.geojson",
                     mime="application/geo+json", key="dl_obs_geojson")
d[1].download_button("Observed (CSV)", flows_csv(obs), f"flows_observed_{tag}.csv", mime="text/csv", key="dl_obs_csv")
d[2].download_button("Predicted (GeoJSON)", flows_geojson(pred, label=f"predicted ({shown.label})"),
                     f"flows_predicted_{tag}.geojson", mime="application/geo+json", key="dl_pred_geojson")
d[3].download_button("Predicted (CSV)", flows_csv(pred), f"flows_predicted_{tag}.csv", mime="text/csv", key="dl_pred_csv")
st.caption(f"Downloads contain only the flows on the maps: places and flows with fewer than {k} {unit} are left out.")
