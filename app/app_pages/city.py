"""City & POIs: where the points of interest come from, a map of them and their counts."""

import streamlit as st

import charts
import page_parts
from maps.deck import show
from maps.pois import poi_legend, poi_map
from state import inputs, summaries
from state.session import Source
from state.text import error, plain
from trajmoe.errors import TrajMoEError

st.title("City & points of interest")
st.markdown(
    "The model describes every place by what is there: cafés, shops, offices, schools, stops... "
    "(**points of interest**, POIs, from OpenStreetMap). Pick where they come from; the bundled "
    "Helsinki centre works without internet."
)


def use(source: Source | None) -> None:
    inputs.use_pois(source)
    st.rerun()


def fetched(result, label: str) -> None:
    """Use POIs fetched online (and the base map that came with them); say what failed."""
    frame, base, problems = result
    for problem in problems:
        st.error(error(problem))
    if frame is None:
        st.info("No internet? Use the bundled Helsinki POIs, or upload an OpenStreetMap extract "
                "(.osm.pbf from download.geofabrik.de) on the **Upload a file** tab.")
        return
    source = inputs.pois_from_frame(frame, label, basemap=base)
    if problems:  # the POIs are used; the page stays to show why the maps have no streets
        inputs.use_pois(source)
    else:
        use(source)


bundled, search, bbox, upload = st.tabs(["Bundled Helsinki", "Search a place", "Draw a box", "Upload a file"])
with bundled:
    st.write("Real OpenStreetMap POIs of central Helsinki (about 1 × 1.7 km), shipped with the app.")
    if st.button("Use the bundled Helsinki POIs", key="use_bundled"):
        use(None)
with search:
    place = st.text_input("Place name", placeholder="e.g. Kallio, Helsinki, Finland", key="place")
    if st.button("Fetch POIs from OpenStreetMap", key="fetch_place", disabled=not place,
                 help="The POIs of the place and its streets, water and parks for the maps."):
        with st.spinner(f"Asking OpenStreetMap for the POIs and streets of {plain(place)}..."):
            result = inputs.fetch_area(place=place)
        fetched(result, f"{place} (OpenStreetMap)")
with bbox:
    st.write("The corners of the area in degrees (west, south, east, north).")
    c = st.columns(4)
    west = c[0].number_input("West", value=24.930, format="%.4f", key="bbox_w")
    south = c[1].number_input("South", value=60.163, format="%.4f", key="bbox_s")
    east = c[2].number_input("East", value=24.955, format="%.4f", key="bbox_e")
    north = c[3].number_input("North", value=60.180, format="%.4f", key="bbox_n")
    if st.button("Fetch POIs in this box", key="fetch_bbox",
                 help="The POIs in the box and its streets, water and parks for the maps."):
        with st.spinner("Asking OpenStreetMap for the POIs and streets in the box..."):
            result = inputs.fetch_area(bbox=(west, south, east, north))
        fetched(result, f"box {west:.3f}, {south:.3f}, {east:.3f}, {north:.3f} (OpenStreetMap)")
with upload:
    st.write(
        f"An OpenStreetMap extract (**.osm**, **.osm.bz2**, **.osm.pbf**) or a table (**.csv**, "
        f"**.parquet**) with `lat`, `lon` and a category column. Up to {inputs.max_upload_mb()} MB."
    )
    file = st.file_uploader("POI file", type=["osm", "bz2", "pbf", "csv", "gz", "parquet"], key="poi_upload")
    if file is not None and inputs.new_upload("pois", file):  # a new file, not the one already applied
        src = inputs.save_upload(file, f"{file.name} (uploaded)")
        try:
            with st.spinner(f"Reading {plain(file.name)}..."):
                inputs.read_poi_file(src.key, src.path)
            use(src)
        except TrajMoEError as exc:
            inputs.discard_upload(file, src)
            st.error(error(exc))

try:
    pois = inputs.pois()
except TrajMoEError as exc:
    st.error(f"The chosen POIs cannot be read: {error(exc)}")
    st.stop()

st.subheader(plain(inputs.pois_source().label))
try:
    cov = inputs.coverage()
except TrajMoEError:
    cov = None
if cov is not None and not cov.covered:
    page_parts.offer_pois_for_area(cov, link_to_city=False)
counts = inputs.poi_summary(pois)
a, b, c = st.columns(3)
a.metric("POIs", f"{counts['n']:,}")
b.metric("Kinds of place", counts["kinds"])
c.metric("Named", f"{counts['named']:.0%}")
found = summaries.basemap_file()
base = summaries.basemap(found)
if counts["n"] == 0:
    st.warning("No POIs: the model will work from visits alone (its POI features are switched off). Fetch or "
               "upload POIs of your area with the tabs above, or use the bundled Helsinki POIs.")
else:
    left, right = st.columns([3, 2])
    with left:
        show(poi_map(pois, base=base), key="poi_map")
        poi_legend(pois)
    with right:
        charts.plotly(charts.category_bar(pois), key="poi_counts")

st.markdown("#### Streets under the maps")
WORLD = ("shorelines, lakes and town names of the whole area come from an offline world layer (GSHHG shorelines, "
         "LGPL; GeoNames places of 1,000 people or more, CC BY 4.0)")
if found is not None and base is not None:
    st.caption(f"Streets, water, parks and place names come from {plain(found.where)}; {WORLD}. In all: "
               f"{len(base.streets):,} streets, {len(base.areas):,} areas of water or park, {len(base.labels):,} place "
               "names. Map data © OpenStreetMap contributors (ODbL). No map tiles are loaded: the maps work offline.")
else:
    st.caption(f"The maps have no streets under them: these POIs come from a table (or there are none), and a table "
               f"has no streets; {WORLD}. For streets, upload an OpenStreetMap extract of the area on the **Upload a "
               "file** tab, or fetch the streets online.")
# The POIs' own base map misses trajectories the POIs do not cover: offer the trajectories' area.
if cov is not None and not inputs.area_basemap_path().is_file() and (found is None or not cov.covered):
    page_parts.offer_basemap_for_area(cov)
