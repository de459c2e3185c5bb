"""The canonical trajectory frame's columns, and how a file's column names map onto them.

:func:`map_columns` reads a header's names as ``user_id``, ``timestamp``, ``lat``, ``lon`` (and
the optional ``location_id``, ``category``, ``city``, ``occupied``), renaming known synonyms with
a note and failing the report, with a hint, when a required column is missing.
"""

from __future__ import annotations

import re

import pandas as pd

from trajmoe.trajectories.report import ValidationReport

REQUIRED = ("user_id", "timestamp", "lat", "lon")
OPTIONAL = ("location_id", "category", "city", "occupied")
TEXT_COLUMNS = ("user_id", "location_id", "category", "city")

# Column names read as a canonical one (after lower-casing and turning spaces/dashes/dots into
# "_"), renamed with a note. Ordered by preference when a file has several.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "user_id": ("userid", "user", "uid", "user_name", "username", "person_id", "individual_id",
                "agent_id", "device_id", "taxi_id", "cab_id", "vehicle_id", "bike_id", "bikeid"),
    "timestamp": ("datetime", "date_time", "time", "utc_time", "utctime", "checkin_time",
                  "check_in_time", "local_time", "localtime", "tracked_at", "time_stamp", "ts"),
    "lat": ("latitude", "lat_deg", "latitude_deg", "lat_wgs84"),
    "lon": ("lng", "long", "longitude", "lon_deg", "lng_deg", "longitude_deg", "lon_wgs84"),
    "location_id": ("venue_id", "venueid", "poi_id", "poiid", "place_id", "placeid", "loc_id",
                    "locid", "station_id", "spot_id"),
    "category": ("venue_category", "venuecategory", "poi_category", "poicategoryname",
                 "category_name", "venue_category_name"),
    "city": ("city_name",),
    "occupied": ("occupancy", "is_occupied"),
}
# Never renamed automatically (x/y may be projected metres, a date may lack the time), only
# suggested in the fatal message.
HINTS: dict[str, tuple[str, ...]] = {"lat": ("y",), "lon": ("x",), "timestamp": ("date",)}


def empty_frame(*, optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """A canonical frame with no rows (returned next to a fatal report)."""
    frame = pd.DataFrame({
        "row": pd.Series(dtype="int64"), "user_id": pd.Series(dtype="str"),
        "timestamp": pd.Series(dtype="datetime64[ns]"),
        "lat": pd.Series(dtype="float64"), "lon": pd.Series(dtype="float64"),
    })
    for column in optional:
        frame[column] = pd.Series(dtype="Int8" if column == "occupied" else "str")
    return frame


def _norm(column: str) -> str:
    return re.sub(r"[\s\-.]+", "_", str(column).strip().lstrip("\ufeff").lower())


def map_columns(columns: list[str], report: ValidationReport) -> dict[str, str]:
    """Map source column -> canonical name; fail the report when a required column is missing."""
    normed = {column: _norm(column) for column in columns}
    mapping: dict[str, str] = {}
    for canon in REQUIRED + OPTIONAL:
        taken = set(mapping)
        exact = [c for c in columns if c == canon]
        same = [c for c in columns if normed[c] == canon and c not in taken]
        synonyms = [c for syn in SYNONYMS[canon] for c in columns
                    if normed[c] == syn and c not in taken]
        found = (exact or same or synonyms)[:1]
        if not found:
            continue
        mapping[found[0]] = canon
        if found[0] != canon:
            report.note(f"Column '{found[0]}' was read as '{canon}'.")
        others = [c for c in same + synonyms if c != found[0]]
        if others:
            report.note(f"Columns {others} also look like '{canon}' and were ignored; "
                        f"'{found[0]}' was used.")
    for canon in REQUIRED:
        if canon in mapping.values():
            continue
        hints = [c for c in columns if normed[c] in HINTS.get(canon, ()) and c not in mapping]
        if hints:
            what = {"lat": "WGS84 latitude in degrees", "lon": "WGS84 longitude in degrees",
                    "timestamp": "the date AND time of each row"}[canon]
            report.fail(f"Missing required column '{canon}'. If '{hints[0]}' holds {what}, "
                        f"rename '{hints[0]}' to '{canon}'.")
        else:
            report.fail(f"Missing required column '{canon}' (the file has {list(columns)}). "
                        f"Rename the column that holds it to '{canon}'; required columns are "
                        "user_id,timestamp,lat,lon.")
    ignored = [c for c in columns if c not in mapping and not c.startswith("_unnamed_")]
    if ignored and report.ok:
        report.note(f"Columns not used: {ignored}.")
    return mapping
