"""Flows: observed and predicted moves between places, over the same moves: one map switched
between the two (same view), or both side by side."""

import map_png
import streamlit as st

import kept_map
import page_parts
from maps.colours import legend
from maps.deck import show, tiles_toggle
from maps.flows import FLOW_COLOUR, flow_map, flow_width_legend
from maps.visits import visits_map
from state import flows, inputs, summaries
from state.session import privacy_k
from state.text import error
from trajmoe.analysis.flows import DEFAULT_TOP_N, flows_csv, flows_geojson, snap_hours
from trajmoe.analysis.privacy import HOUR_BAND, counted_unit, hidden_note
from trajmoe.errors import TrajMoEError

st.title("Flows: where people move next")
prep, data = page_parts.require_city()
shown = page_parts.require_model(prep)
meta, k = prep.meta, privacy_k()
unit = counted_unit(meta["kind"])
days = summaries.days_covered(prep.folder)
sample = "synthetic Helsinki sample" if inputs.is_sample() else "uploaded sample"
st.caption(
    f"These flows describe the {sample} ({meta['n_users']:,} {unit} over {days} days), not the whole "
    "population. **Observed**: the moves they really made. **Predicted**: where the model expected each of "
    f"the same moves to go, from the same places at the same times (each move shared among its {DEFAULT_TOP_N} likeliest "
    "places): observed and predicted start from the same moves."
)

MOVES, ARRIVALS = "Moves between places", "Arrivals by hour"
v1, v2 = st.columns([1, 1])
showing = v1.radio("Map", [MOVES, ARRIVALS], horizontal=True, key="fl_view",
                   help="Moves: from where to where people go next. Arrivals: where people arrive in some hours of "
                        "the day, observed and as the model expects when told the time.")
# One map by default, switched between observed and predicted: it keeps where the planner zoomed,
# so both are read on the same view (two maps move each on their own), and a browser without a
# graphics card draws one map in about half the time of two (bench/app_speed.py).
COMPARE = {"Observed": ("observed",), "Predicted": ("predicted",), "Both, side by side": ("observed", "predicted")}
which = COMPARE[v2.radio("Show", list(COMPARE), horizontal=True, key="fl_compare",
                         help="Observed or predicted on one map: switching keeps where you zoomed, so the two are "
                              "compared on the same view. Side by side: two maps, each moved on its own (slower to "
                              "draw on a computer without a graphics card).")]
LABEL = {"observed": "Observed", "predicted": "Predicted"}


def map_columns():
    """Where the maps go: one full-width place, or two columns side by side."""
    return st.columns(2) if len(which) > 1 else [st.container()]


def draw(d, name: str, key: str) -> None:
    """The single map (observed or predicted, moves or arrivals) is the page's map, which the browser
    keeps and only redraws (kept_map.page_map); side by side, one map per column."""
    if len(which) > 1:
        show(d, key=f"{name}_{key}")
    else:
        kept_map.page_map(d)


def under_map(col):
    """Where a map's notes go: under the page's map, or in its column side by side."""
    return col if len(which) > 1 else kept_map.below_map()


def other_one(heading) -> None:
    """With one map, the numbers of the map not shown, so that both totals are always on the page."""
    if len(which) == 1:
        other = "predicted" if which[0] == "observed" else "observed"
        st.caption(f"{heading(other)} (choose **{LABEL[other]}** above to see it).")


c1, c2, c3 = st.columns([2, 3, 2])
if showing == MOVES:
    hours = c1.slider("Hours of the day (start of the move)", 0, 24, (0, 24), step=HOUR_BAND, key="fl_hours",
                      help=f"In {HOUR_BAND}-hour steps: the privacy rule protects each {HOUR_BAND}-hour slice of a flow, "
                           "so that comparing two settings never singles anyone out.")
else:
    hours = c1.slider("Arrival time (hour the visit starts)", 0, 24, (6, 12), step=HOUR_BAND, key="fl_arrive",
                      help=f"In {HOUR_BAND}-hour steps, for the same reason as for moves.")
hours = snap_hours(hours)
day_names = {"All days": "all", "Weekdays": "weekday", "Weekends": "weekend"}
day = c2.radio("Days", list(day_names), horizontal=True, key="fl_days", disabled=not data.weekday_reliable,
               help=None if data.weekday_reliable else "This data's weekdays are not reliable.")
# Fixed, not a control: two settings of "places per move" would differ by the model's 3rd, 4th...
# guesses for a few persons' moves, which the privacy rule's slices (place, hours, days) do not
# protect (app/README.md, Privacy). Researchers choose it in the library (trajmoe.analysis.flows,
# top_n=) over the rows of `trajmoe predict --top-k`.
top_n = DEFAULT_TOP_N
if showing == MOVES:
    n_arcs = c3.slider("Largest flows drawn", 20, 500, 80, step=10, key="fl_arcs",
                       help="Only the drawing is thinned out: totals, the table and the downloads use every flow shown.")


def show_arrivals(resolution) -> None:
    """The arrivals view: observed and predicted arrivals in the chosen hours, per place."""
    a_what = "cells" if resolution is None else "larger cells"  # as chosen above (districts group flows only)
    st.caption(f"Where people arrive between {hours[0]:02d}:00 and {hours[1]:02d}:00 ({day.lower()}), per {a_what[:-1]}. "
               "**Observed**: the visits that really began then. **Predicted**: for each of the same arrivals, the "
               "places the model expected when told the time of the visit (not its place).")
    arrivals = flows.arrival_summaries(shown, data, hours=hours, day=day_names[day], top_n=top_n, k=k,
                                         resolution=resolution)
    if arrivals is None:
        st.info("Arrivals by hour cannot be predicted with this model: it was trained to guess the next place "
                "without being told when the visit happens, not where people are at a given time. Observed and "
                "predicted arrivals are shown for models trained for both, such as the shipped pretrained one.")
        return
    a_obs, a_pred = arrivals
    st.markdown(f"**{a_obs.n_moves:,.0f} arrivals** between {hours[0]:02d}:00 and {hours[1]:02d}:00 "
                f"({day.lower()}): the same arrivals observed and predicted ({a_pred.n_moves:,.0f} predicted).")
    if page_parts.nothing_to_show(len(a_obs.places) + len(a_pred.places), hidden=a_obs.hidden_places, kind=meta["kind"],
                                 k=k, what="the arrival maps"):
        return
    summary_of = {"observed": a_obs, "predicted": a_pred}

    def heading(key: str) -> str:
        summary = summary_of[key]
        return (f"{LABEL[key]}: {summary.moves_shown:,.0f} of {summary.n_moves:,.0f} arrivals shown "
                f"at {len(summary.places):,} {a_what}")

    for col, key in zip(map_columns(), which):
        summary = summary_of[key]
        cells = summary.places.rename(columns={"place": "cell", "n_users": "people"})
        cells = cells.assign(visits=cells["arrivals"].round().astype(int) if key == "observed"
                             else cells["arrivals"].round(1))
        with col:
            st.markdown(f"#### {heading(key)}")
            draw(visits_map(cells, context=context, unit=unit, base=base, tiles=tiles), "map_arrivals", key)
        with under_map(col):
            st.caption(f"Not shown: {summary.moves_hidden:,.0f} arrivals at {a_what} where fewer than {k} {unit} "
                       f"arrive in a {HOUR_BAND}-hour band on weekdays or on weekends ({summary.hidden_places:,} "
                       f"{a_what} hidden): comparing two settings then never singles anyone out.")
    with kept_map.below_map():
        other_one(heading)
        st.caption("Darker: more arrivals (observed and predicted each on its own scale). Predicted arrivals are shares "
                   f"of the same moves spread over each move's {top_n} most likely places.")


res = int(meta["resolution"])
levels = {"Cells (finest)": None}
for r in range(res - 1, max(res - summaries.COARSER, 0) - 1, -1):
    levels[f"Larger cells ({res - r} level{'s' if res - r > 1 else ''} coarser)"] = r
g1, g2 = st.columns([3, 2])
# Default: one level coarser than the city's cells (where there is one): at the cells' own size most
# flows are too small for the privacy rule (the embedded default shows 12% of its moves, one level up 56%).
level = g1.radio("Group places into", list(levels), index=min(1, len(levels) - 1), horizontal=True, key="fl_level",
                 help="Grouping nearby places (their H3 parent cells) shows flows too small to show place by place.")
tiles = tiles_toggle(key="fl_tiles", where=g2)
resolution = levels[level]
context = summaries.context_cells(prep.folder, k)
found = summaries.basemap_file()
base = summaries.basemap(found)
if showing == ARRIVALS:
    show_arrivals(resolution)
    kept_map.end_page()  # not st.stop(): the page's map is drawn after the page
with st.expander("Add flows up to districts (optional)"):
    zone_file = st.file_uploader(f"A GeoJSON of district polygons (up to {inputs.max_upload_mb()} MB)",
                                 type=["geojson", "json"], key="fl_zones")
zones, zones_key = None, None
if zone_file is not None:
    src = inputs.save_upload(zone_file, zone_file.name)
    try:
        zones, zones_key = flows.zones(src.key, src.path, prep.folder), src.key
        st.caption(f"The flows of the **{level.lower()}** map (grouping above) added up to {len(zones.position):,} districts, "
                   "each place in the district its centre lies in. So that no drawing of districts can single anyone "
                   "out, a district flow shows only what that map shows.")
    except TrajMoEError as exc:
        inputs.discard_upload(zone_file, src)
        st.error(error(exc))

obs, pred = flows.flow_summaries(shown, data, hours=hours, day=day_names[day], top_n=top_n, k=k,
                                   zones=zones, zones_key=zones_key, resolution=resolution)
names = None if zones is not None else summaries.cell_names(prep.folder, found)
top = max([float(s.flows["flow"].max()) for s in (obs, pred) if len(s.flows)] or [0.0])
what = "cells" if zones is None and resolution is None else ("districts" if zones is not None else "larger cells")


def not_shown(summary) -> str:
    parts = [f"{summary.moves_within:,.0f} stay inside one of the {what}"]
    parts.append(f"{summary.moves_hidden:,.0f} are in flows, hours or days with fewer than {k} {unit}")
    if summary.moves_outside:
        parts.append(f"{summary.moves_outside:,.0f} start or end outside every district")
    return "Not shown: " + "; ".join(parts) + "."


st.markdown(f"**{obs.n_moves:,.0f} moves** start between {hours[0]:02d}:00 and {hours[1]:02d}:00 "
            f"({day.lower()}): the same moves observed and predicted.")
summary_of = {"observed": obs, "predicted": pred}


def heading(key: str) -> str:
    summary = summary_of[key]
    return f"{LABEL[key]}: {summary.moves_shown:,.0f} of {summary.n_moves:,.0f} moves shown in {len(summary.flows):,} flows"


def flows_deck(key: str, tiles: bool = False):
    return flow_map(summary_of[key], context=context, names=names, unit=unit, zones=zones, max_arcs=n_arcs,
                          base=base, tiles=tiles, top=top)


for col, key in zip(map_columns(), which):
    summary = summary_of[key]
    with col:
        st.markdown(f"#### {heading(key)}")
        draw(flows_deck(key, tiles=tiles), "map", key)
    with under_map(col):
        st.caption(not_shown(summary))
        st.caption(hidden_note(f"the {key} map", places=summary.hidden_places, flows=summary.hidden_flows,
                               kind=meta["kind"], k=k).replace(" cells ", f" {what} ").replace(" cell ", f" {what[:-1]} "))
# Everything after the maps goes under the page's map (kept_map.page_map).
with kept_map.below_map():
    other_one(heading)
    legend([("flow: narrow where it leaves, an arrow head where it arrives", FLOW_COLOUR),
            ("place with more arrivals than departures", "#2166ac"), ("more departures than arrivals", "#d6604d")])
    flow_width_legend(top)
    st.caption("Circles: places, as large as the moves through them. Arrows bend to the right of their direction, "
               "so the two directions between two places lie side by side." +
               ("" if base is not None else " No streets under the maps: no OpenStreetMap data of this area is loaded. "
                "On **City & POIs**, fetch the streets of the trajectories' area (online) or upload an OSM extract."))
    hidden_share = max(s.moves_hidden / s.n_moves for s in (obs, pred) if s.n_moves) if obs.n_moves else 0.0
    coarser = [lv for lv, r in levels.items() if r is not None and (resolution is None or r < resolution)]
    if hidden_share > 0.5 and zones is None and coarser:
        st.info(f"The privacy rule hides {hidden_share:.0%} of the moves on one of these maps. Group places into "
                f"**{coarser[0]}** (above) or upload districts: more moves then share a flow, and more can be shown.")
    elif obs.n_moves == 0:
        st.info("No move starts in these hours on these days: choose more hours or all days.")

    st.markdown("#### Arrivals and departures per place")
    per_place = flows.per_place_table(obs, pred, names)
    # observed moves are whole counts; predicted ones are expected numbers (shares of moves)
    st.dataframe(per_place, hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%d" if "observed" in c else "%.1f")
                                for c in per_place.columns if "(" in c})

    st.markdown("#### Download the flows shown")
    d = st.columns(6)
    grain = {"cells": "cells", "larger cells": f"cells_res{resolution}", "districts": "districts"}[what]
    tag = f"{meta['city'].lower().replace(' ', '_')}_{grain}"
    d[0].download_button("Observed (GeoJSON)", flows_geojson(obs, label="observed"), f"flows_observed_{tag}.geojson",
                         mime="application/geo+json", key="dl_obs_geojson")
    d[1].download_button("Observed (CSV)", flows_csv(obs), f"flows_observed_{tag}.csv", mime="text/csv", key="dl_obs_csv")
    d[2].download_button("Predicted (GeoJSON)", flows_geojson(pred, label=f"predicted ({shown.label})"),
                         f"flows_predicted_{tag}.geojson", mime="application/geo+json", key="dl_pred_geojson")
    d[3].download_button("Predicted (CSV)", flows_csv(pred), f"flows_predicted_{tag}.csv", mime="text/csv", key="dl_pred_csv")
    for col, key in ((d[4], "observed"), (d[5], "predicted")):
        col.download_button(f"{key.title()} map (PNG)", lambda key=key: map_png.deck_png(flows_deck(key), title=f"{key.title()} flows"),
                            f"flows_{key}_{tag}.png", mime="image/png", key=f"dl_{key}_png")
    st.caption(f"Downloads contain only the flows on the maps (places by H3 id, to join with other data): flows with "
               f"fewer than {k} {unit} are left out.")
