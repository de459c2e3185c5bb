"""What several pages show alike: the stops with their reason, the coverage warning with its
choices, the empty state. The widgets and messages of ``state/`` data live here, so that ``state/``
holds data only (tests/test_app_layout.py checks).

* :func:`require_city`, :func:`require_model`: the prepared city and the shown model, or stop the
  page saying why in plain words;
* :func:`finetuned_for`: the session's fine-tuned model, or None, saying so when its kept files
  no longer load;
* :func:`offer_pois_for_area`, :func:`offer_basemap_for_area`: POIs that miss the trajectories,
  with what to do, and a fetch of the trajectories' own streets;
* :func:`nothing_to_show`: why nothing may be shown and what to do (pages then draw no blank map).
"""

from __future__ import annotations

import streamlit as st

from state import inputs, predictions
from state.inputs import Coverage, Prepared
from state.predictions import Shown
from state.session import Finetuned
from state.text import error, plain
from trajmoe.analysis.privacy import counted_unit
from trajmoe.errors import TrajMoEError


def require_city() -> tuple[Prepared, object]:
    """The prepared city and its CityData, or stop the page with the reason in plain words."""
    prep = inputs.prepared()
    if prep.folder is None:
        st.error(f"The trajectories could not be used: {error(prep.error)}")
        st.page_link("app_pages/trajectories.py", label="See what was wrong on the Trajectories page")
        st.stop()
    return prep, inputs.city_data(prep.folder)


def finetuned_for(folder: str) -> Finetuned | None:
    """:func:`state.predictions.finetuned_for`, with a warning (and None) when the session's kept
    fine-tuned files no longer load: the pretrained model is shown instead."""
    try:
        return predictions.finetuned_for(folder)
    except TrajMoEError as exc:
        st.warning(error(exc))
        return None


def require_model(prep: Prepared) -> Shown:
    """The shown model, said in an info line, or stop the page with the reason in plain words."""
    finetuned_for(prep.folder)  # a fine-tuned model that no longer loads is said here, then forgotten
    try:
        shown = predictions.shown_model(prep)
    except TrajMoEError as exc:  # a broken or foreign checkpoint: say so, keep the app running
        st.error(f"The pretrained model cannot be used: {error(exc)} Upload a checkpoint on the **Fine-tune** page.")
        st.stop()
    if shown is None:
        st.warning(
            "No model to show: the shipped checkpoint `assets/trajmoe_pretrained.safetensors` (with its "
            ".json) is not in this copy of the app. Upload a checkpoint on the **Fine-tune** page, "
            "or put the shipped one back. The City & POIs and Trajectories pages work without it."
        )
        st.stop()
    st.info(f"Showing **{plain(shown.label)}**.")
    return shown


def offer_pois_for_area(cov: Coverage, *, link_to_city: bool = True) -> None:
    """The warning that the POIs miss the trajectories, with what to do: fetch POIs for their area,
    upload an extract, or go on without POIs."""
    st.warning(cov.sentence(inputs.pois_source().label, inputs.trajectories().label) + " Choose one:")
    w, s, e, n = cov.bbox
    a, b, c = st.columns(3)
    if a.button("Fetch POIs for this area from OpenStreetMap (online)", key="fetch_area",
                help=f"The box the visits are in: west {w}, south {s}, east {e}, north {n}. The streets, "
                     "water and parks under the maps come with them."):
        with st.spinner("Asking OpenStreetMap for the POIs and streets of the trajectories' area..."):
            frame, base, problems = inputs.fetch_area(bbox=cov.bbox)
        for problem in problems:
            st.error(error(problem))
        if frame is not None:
            if base is not None:
                inputs.keep_area_basemap(base)
            inputs.use_pois(inputs.pois_from_frame(frame, f"the trajectories' area {w:.3f}, {s:.3f}, {e:.3f}, {n:.3f} (OpenStreetMap)"))
            if not problems:
                st.rerun()
    if link_to_city:
        b.page_link("app_pages/city.py", label="Upload POIs of the area (City & POIs page)")
    else:
        b.write("Or upload an OpenStreetMap extract or a POI table of the area on the **Upload a file** tab.")
    if c.button("Go on without POIs", key="no_pois"):
        inputs.use_no_pois()
        st.rerun()


def offer_basemap_for_area(cov: Coverage) -> None:
    """A button that fetches the streets, water, parks and place names of the trajectories' area."""
    from trajmoe.errors import POIError
    from trajmoe.pois.online import fetch_basemap

    w, s, e, n = cov.bbox
    if st.button("Fetch the streets of the trajectories' area from OpenStreetMap (online)", key="fetch_basemap",
                 help=f"The box the visits are in: west {w}, south {s}, east {e}, north {n}. Over 50 km² no residential "
                      "streets are fetched, over 500 km² only motorways and main roads."):
        try:
            with st.spinner("Asking OpenStreetMap for the streets of the trajectories' area..."):
                inputs.keep_area_basemap(fetch_basemap(bbox=cov.bbox, timeout=15))
            st.rerun()
        except POIError as exc:
            st.error(f"Could not fetch the streets online. {error(exc)}")


def nothing_to_show(n_shown: int, *, hidden: int, kind: str, k: int, what: str) -> bool:
    """True when nothing may be shown (no cell, place or flow passes the privacy rule), after saying
    why and what to do, so that a page draws no blank map, empty chart or empty download; False
    (and nothing said) otherwise. ``what``: the maps or tables left out, e.g. "the flow maps"."""
    if n_shown:
        return False
    unit = counted_unit(kind)
    if hidden:
        why = f"each of the {hidden:,} places has fewer than {k} {unit} (the privacy rule in the sidebar)"
        todo = (f"lower the privacy slider (now {k}), choose a coarser **Map detail** on the Trajectories page "
                f"(bigger cells hold more {unit}), or upload a file with more {unit}")
    else:
        why = "the data has nothing of this kind (too few visits or moves)"
        todo = f"upload a file with more {unit} or more visits each"
    st.info(f"Nothing to show in {what}: {why}. To see it, {todo}.")
    return True
