"""From labelled features or rows to the POI frame: the one pipeline online and offline share.

Every input feeds one of two paths that end in the same frame:

* OSM features (OSMnx online: place / polygon / bbox; ``.osm`` and ``.osm.bz2`` through
  ``osmnx.features_from_xml``; ``.osm.pbf`` through pyrosm) are a GeoDataFrame of tagged
  features. :func:`trajmoe.pois.categories.match_osm_tags` picks each feature's category
  (:func:`_pois_from_features`); polygons and ways are reduced to a representative point (always
  inside the shape, unlike a centroid).
* POI tables (CSV or Parquet) carry ``lat``/``lon`` and a category-like column: our own
  categories pass through, Geofabrik ``fclass`` values and Foursquare venue categories are mapped
  (:func:`_pois_from_table`).

Both end in :func:`_finish`, which fixes dtypes, attaches the
:class:`~trajmoe.pois.report.POIReport` and refuses an empty result.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

import geopandas as gpd
import numpy as np
import pandas as pd

from trajmoe.errors import POIError
from trajmoe.pois.categories import (
    CATEGORIES,
    OSM_KEYS,
    category_from_fclass,
    category_from_foursquare,
    match_osm_tags,
    not_a_destination,
)
from trajmoe.pois.report import REPORT_ATTR, POIReport

log = logging.getLogger(__name__)

_SKIP_NOT_DESTINATION = "not a destination (street furniture, infrastructure)"
_SKIP_UNKNOWN = "no functional category recognised"
_SKIP_BLANK = "blank category"
_SKIP_COORDS = "no usable coordinates"
_SKIP_GEOMETRY = "no geometry"

# Table columns, matched case-insensitively, in order of preference.
_LAT_COLUMNS = ("lat", "latitude")
_LON_COLUMNS = ("lon", "lng", "long", "longitude")
_NAME_COLUMNS = ("name", "poi_name", "venue_name")
_LABEL_COLUMNS = (
    "category", "poi_category", "fclass", "poicategoryname", "venuecategory", "venue_category",
    "category_name",
)  # fmt: skip


# --------------------------------------------------------------------------- OSM features
def _pois_from_features(features: gpd.GeoDataFrame, report: POIReport) -> pd.DataFrame:
    """Categorise tagged OSM features and reduce each to one point."""
    report.n_read += len(features)
    keys = [k for k in OSM_KEYS if k in features.columns]
    rows = features[keys].astype(object).itertuples(index=False, name=None)
    matches = [match_osm_tags(dict(zip(keys, row, strict=True))) for row in rows]
    category = np.array([m[0] for m in matches], dtype=object)
    source = np.array([f"osm:{m[1]}" if m[1] else "osm:(no POI tag)" for m in matches], dtype=object)

    geometry = features.geometry
    has_geometry = geometry.notna().to_numpy() & ~geometry.is_empty.to_numpy()
    report.skip(_SKIP_GEOMETRY, int((~has_geometry).sum()))
    mapped = pd.notna(category)
    _count_unmapped(report, source[has_geometry & ~mapped])
    keep = has_geometry & mapped

    points = geometry[keep].representative_point()
    names = features["name"][keep] if "name" in features.columns else pd.Series("", index=points.index)
    return pd.DataFrame(
        {
            "lat": points.y.to_numpy(dtype="float64"),
            "lon": points.x.to_numpy(dtype="float64"),
            "category": category[keep],
            "name": names.to_numpy(dtype=object),
            "source": source[keep],
        }
    )


# --------------------------------------------------------------------------- POI tables
def _find(table: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    lower = {str(c).lower(): c for c in table.columns}
    return next((lower[n] for n in names if n in lower), None)


def _pois_from_table(table: pd.DataFrame, report: POIReport) -> pd.DataFrame:
    """Categorise a POI table's rows from their category-like column (or OSM tag columns)."""
    lat_col, lon_col = _find(table, _LAT_COLUMNS), _find(table, _LON_COLUMNS)
    if lat_col is None or lon_col is None:
        hint = " Is the file comma-separated?" if len(table.columns) == 1 else ""
        raise POIError(
            f"{report.source}: no coordinate columns (found {list(table.columns)[:12]}). Name "
            f"them lat and lon (latitude/longitude and lng are accepted too).{hint}"
        )
    report.n_read += len(table)
    lat = pd.to_numeric(table[lat_col], errors="coerce").to_numpy(dtype="float64")
    lon = pd.to_numeric(table[lon_col], errors="coerce").to_numpy(dtype="float64")
    has_coords = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    report.skip(_SKIP_COORDS, int((~has_coords).sum()))

    category, source = _table_categories(table, report)
    blank = source == ""
    report.skip(_SKIP_BLANK, int((has_coords & blank).sum()))
    mapped = pd.notna(category)
    _count_unmapped(report, source[has_coords & ~blank & ~mapped])
    keep = has_coords & mapped

    name_col = _find(table, _NAME_COLUMNS)
    names = table[name_col] if name_col else pd.Series("", index=table.index)
    return pd.DataFrame(
        {
            "lat": lat[keep],
            "lon": lon[keep],
            "category": category[keep],
            "name": names.to_numpy(dtype=object)[keep],
            "source": source[keep],
        }
    )


def _table_categories(table: pd.DataFrame, report: POIReport) -> tuple[np.ndarray, np.ndarray]:
    """Per row: category (or None) and source label ("" when the row's label is blank)."""
    lower = {str(c).lower(): c for c in table.columns}
    column = next((lower[c] for c in _LABEL_COLUMNS if c in lower), None)
    if column is None:
        tag_columns = [lower[k] for k in OSM_KEYS if k in lower]
        if not tag_columns:
            raise POIError(
                f"{report.source}: no category column (found {list(table.columns)[:12]}). Add one "
                "named category (values like restaurant, Coffee Shop or one of "
                f"{', '.join(CATEGORIES[:3])}, ...), fclass or PoiCategoryName, or OSM tag "
                "columns such as amenity and shop."
            )
        tags = table[tag_columns].rename(columns={lower[k]: k for k in OSM_KEYS if k in lower})
        matches = [match_osm_tags(row) for row in tags.astype(object).to_dict("records")]
        category = np.array([m[0] for m in matches], dtype=object)
        source = np.array([f"osm:{m[1]}" if m[1] else "" for m in matches], dtype=object)
        return category, source

    existing_source = table["source"] if "source" in table.columns else None
    values = table[column].astype(object).where(table[column].notna(), "").astype(str).str.strip()
    resolved = {v: _resolve_label(v) for v in values.unique()}
    category = np.array([resolved[v][0] for v in values], dtype=object)
    source = np.array([resolved[v][1] for v in values], dtype=object)
    if existing_source is not None:  # our own GeoParquet: keep the original OSM/fclass label
        ours = values.isin(CATEGORIES).to_numpy()
        source = np.where(ours, existing_source.astype(str).to_numpy(), source)
    return category, source


def _resolve_label(value: str) -> tuple[str | None, str]:
    """Category and source label of one table label; "" source for a blank label.

    Our own categories pass through. Otherwise the value's spelling says its vocabulary, whatever
    the column is called: OSM/Geofabrik values are lower_snake_case ("fast_food"), Foursquare names
    are words ("Fast Food Restaurant"); the other vocabulary is the fallback. Reading "Brewery" as
    an fclass would make it craft=brewery (industrial) instead of a Foursquare bar.
    """
    if not value:
        return None, ""
    if value in CATEGORIES:
        return value, f"category:{value}"
    snake = re.fullmatch(r"[a-z0-9_]+", value) is not None
    order = ("fclass", "foursquare") if snake else ("foursquare", "fclass")
    lookups = {"fclass": category_from_fclass, "foursquare": category_from_foursquare}
    for vocabulary in order:
        category = lookups[vocabulary](value)
        if category is not None:
            return category, f"{vocabulary}:{value}"
    # unmapped: label with the vocabulary that knows it as a non-destination, for the report
    vocabulary = next((v for v in order if not_a_destination(f"{v}:{value}")), order[0])
    return None, f"{vocabulary}:{value}"


# --------------------------------------------------------------------------- shared ending
def _count_unmapped(report: POIReport, labels: np.ndarray) -> None:
    counts = Counter(labels.tolist())
    report.skip(_SKIP_NOT_DESTINATION, sum(n for s, n in counts.items() if not_a_destination(s)))
    report.skip(_SKIP_UNKNOWN, sum(n for s, n in counts.items() if not not_a_destination(s)))
    for label, n in counts.most_common(20):
        report.unmapped[label] = report.unmapped.get(label, 0) + n


def _finish(frame: pd.DataFrame, report: POIReport) -> pd.DataFrame:
    """Fix dtypes, attach the report, refuse an empty result."""
    if len(frame) == 0:
        raise POIError(
            f"No POIs with a known category in {report.source}: {report.to_text()} Give a file "
            "with shops, amenities, leisure or tourism features, or a POI table."
        )
    frame = frame.astype({"lat": "float64", "lon": "float64"})
    frame["name"] = frame["name"].where(frame["name"].notna(), "").astype(str).str.strip()
    frame["category"] = frame["category"].astype(str)
    frame["source"] = frame["source"].astype(str)
    frame = frame.reset_index(drop=True)
    report.n_pois = len(frame)
    frame.attrs = {REPORT_ATTR: report.to_dict()}
    log.info("%s", report.to_text())
    return frame
