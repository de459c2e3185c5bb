"""What kind of mobility data a frame holds, and how each kind becomes visits.

The cities differ in kind on purpose (MANIFEST.md): check-ins are visits already; raw GPS fixes
become staypoints (trackintel's sliding method, Li et al. 2008) after clipping to the city;
taxi GPS with an ``occupied`` flag (Cabspotting) becomes pickup -> drop-off trips; trip tables
keep exactly two rows per trip; bike-share rows keep the station as ``location_id``. Every row
that does not become a visit is counted in the report, so for each kind
``n_rows == n_kept + dropped + reduced`` still holds after :func:`to_visits`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trajmoe.errors import InputDataError
from trajmoe.geo import project_km
from trajmoe.trajectories.report import ValidationReport, plural

log = logging.getLogger(__name__)

KINDS = ("checkins", "gps", "trips", "stations")

# detect_kind thresholds, from the shared cities (see tests/test_kinds.py):
GPS_MAX_MEDIAN_GAP_S = 300.0  # loggers sample every 1-60 s (Geolife 5 s, Cabspotting 58 s);
#                               check-ins are hours apart (median 2.4 h NYC Gowalla .. 46 h SF)
GPS_MIN_ROWS_PER_USER = 20  # a trace, not a handful of points
TRIPS_MIN_SHARE = 0.95  # users (trips) with exactly 2 rows: 100% in the Mexico City trips
STATIONS_MIN_USER_SHARE = 0.05  # the median station is used by 51% of Jersey City's bikes;
#                                 the median venue by < 1% of users in every check-in city
STATIONS_MIN_ROWS_PER_LOCATION = 50  # 2,987 rows per station in Jersey City vs 6-29 per venue


@dataclass(frozen=True)
class VisitConfig:
    """Thresholds for turning raw rows into visits.

    The staypoint defaults are trackintel's own for ``generate_staypoints(method="sliding")``
    (Martin et al. 2023, "Trackintel: An open-source Python library for human mobility
    analysis"), after Li et al. (2008): a stay is >= 5 min within 100 m of its first fix, and
    no stay spans a recording gap of more than 15 min.
    """

    staypoint_distance_m: float = 100.0
    staypoint_minutes: float = 5.0
    gap_minutes: float = 15.0  # also: a taxi trip with a longer gap inside is unreliable
    city_radius_km: float = 50.0  # the dense metro area around the median fix (Beijing ~40 km)
    long_trip_hours: float = 8.0  # trips longer than this are noted (MANIFEST: some taxi trips)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise InputDataError(f"VisitConfig.{name} must be positive, got {value!r}.")


def detect_kind(frame: pd.DataFrame) -> str:
    """Guess the kind of a canonical frame: one of :data:`KINDS`.

    Taxi GPS (an ``occupied`` column) and dense traces (median gap <= 5 min, >= 20 rows per
    user, no ``location_id``) are "gps"; >= 95% of users with exactly 2 rows are "trips"; a few
    locations each used by many users are "stations"; everything else is "checkins". Override
    with ``--kind`` when the guess is wrong.
    """
    if frame.empty:
        return "checkins"
    if "occupied" in frame and frame["occupied"].notna().any():
        return "gps"
    sizes = frame["user_id"].value_counts()
    if (sizes == 2).mean() >= TRIPS_MIN_SHARE:
        return "trips"
    has_locations = "location_id" in frame and frame["location_id"].notna().mean() > 0.5
    if has_locations:
        per_location = frame.groupby("location_id")["user_id"].nunique()
        if (per_location.median() / len(sizes) >= STATIONS_MIN_USER_SHARE
                and len(frame) / len(per_location) >= STATIONS_MIN_ROWS_PER_LOCATION):
            return "stations"
        return "checkins"
    same_user = frame["user_id"].to_numpy()[1:] == frame["user_id"].to_numpy()[:-1]
    gaps = np.diff(frame["timestamp"].to_numpy().astype("int64"))[same_user] / 1e9
    if (len(gaps) and np.median(gaps) <= GPS_MAX_MEDIAN_GAP_S
            and sizes.median() >= GPS_MIN_ROWS_PER_USER):
        return "gps"
    return "checkins"


def to_visits(frame: pd.DataFrame, kind: str, report: ValidationReport, *,
              config: VisitConfig | None = None) -> tuple[pd.DataFrame, str]:
    """Turn a canonical frame into visits; return them and the effective kind.

    Parameters
    ----------
    frame
        From :func:`trajmoe.trajectories.reader.read_trajectories` (sorted by user then time).
    kind
        One of :data:`KINDS` (see :func:`detect_kind`).
    report
        Gets the rows dropped or merged on the way, and ``kind``, ``n_kept``, ``n_users``.
    config
        Staypoint, city-clipping and trip thresholds; :class:`VisitConfig` by default.

    Returns
    -------
    visits, kind
        Canonical columns, sorted by user then time. "gps" with an ``occupied`` flag returns
        kind "trips" (``user_id`` = ``"<cab>#<n>"``, 2 visits each).
    """
    if kind not in KINDS:
        raise InputDataError(f"Unknown kind {kind!r}: use one of {', '.join(KINDS)}.")
    config = config or VisitConfig()
    taxi = kind == "gps" and "occupied" in frame and frame["occupied"].notna().any()
    if taxi:
        visits, kind = _taxi_trips(frame, report, config), "trips"
    elif kind == "gps":
        visits = _staypoints(_clip_to_city(frame, report, config), report, config)
    elif kind == "trips":
        visits = _trips(frame, report, config)
    elif kind == "stations":
        visits = _stations(frame, report)
    else:
        visits = frame  # check-ins are visits already
    visits = visits.reset_index(drop=True)
    report.kind = kind
    before = int(frame["user_id"].nunique())
    if not report.n_users_read:  # a frame built elsewhere: its users are the people read
        report.n_users_read = before
    units = int(visits["user_id"].nunique())
    if taxi:  # the units are trips "<cab>#<n>"; the people are the cabs
        people = int(visits["user_id"].str.rsplit("#", n=1).str[0].nunique())
    else:
        people = units
    report.people = (["cab", "cabs"] if taxi else {"trips": ["trip", "trips"],
                                                   "stations": ["bike", "bikes"]}.get(
                                                       kind, ["person", "people"]))
    report.set_kept(len(visits), units, people)
    report.drop_users(_USERS_LOST[kind], before - people)
    log.info("%s: %d rows became %d %s visits of %d users", report.source, len(frame),
             len(visits), kind, report.n_users)
    return visits, kind


_USERS_LOST = {  # why a person (vehicle, trip) has no visit left after to_visits
    "gps": "no staypoint left (never stayed long enough in one place inside the city area)",
    "trips": "no complete trip left",
    "stations": "no row with a station id",
    "checkins": "no visit left",
}


def _distance_from_median_km(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, tuple]:
    centre = (float(np.median(lat)), float(np.median(lon)))
    return np.linalg.norm(project_km(lat, lon, centre), axis=1), centre


def _clip_to_city(frame: pd.DataFrame, report: ValidationReport, config: VisitConfig
                  ) -> pd.DataFrame:
    """Drop fixes far from the median fix: trips elsewhere (Geolife: 7% outside Beijing)."""
    if frame.empty:
        return frame
    km, centre = _distance_from_median_km(frame["lat"].to_numpy(), frame["lon"].to_numpy())
    far = km > config.city_radius_km
    report.drop("outside the city area", frame.loc[far, "row"],
                f"GPS fixes more than {config.city_radius_km:g} km from the data's median point "
                f"({centre[0]:.4f}, {centre[1]:.4f}) belong to trips elsewhere and were dropped.")
    return frame[~far]


def _staypoints(fixes: pd.DataFrame, report: ValidationReport, config: VisitConfig
                ) -> pd.DataFrame:
    """GPS fixes -> one visit per trackintel staypoint (time = arrival, place = centroid)."""
    import geopandas as gpd  # heavy imports, only for GPS input
    import trackintel as ti

    columns = ["row", "user_id", "timestamp", "lat", "lon"]
    # trackintel wants tz-aware times; our wall-clock is labelled UTC and unlabelled after,
    # so durations are exact except across a DST change.
    pfs = gpd.GeoDataFrame(
        {"user_id": fixes["user_id"].to_numpy(), "row": fixes["row"].to_numpy(),
         "tracked_at": fixes["timestamp"].to_numpy("datetime64[ns]")},
        geometry=gpd.points_from_xy(fixes["lon"], fixes["lat"]), crs="EPSG:4326")
    pfs["tracked_at"] = pfs["tracked_at"].dt.tz_localize("UTC")
    if len(pfs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No staypoints can be generated" and deprecations
            pfs, sp = ti.Positionfixes(pfs).generate_staypoints(
                method="sliding", dist_threshold=config.staypoint_distance_m,
                time_threshold=config.staypoint_minutes, gap_threshold=config.gap_minutes,
                include_last=True, exclude_duplicate_pfs=False)
    else:
        sp = pd.DataFrame()
    if len(sp):
        first_row = pfs.groupby("staypoint_id")["row"].min()
        visits = pd.DataFrame({
            "row": first_row.reindex(sp.index).to_numpy("int64"),
            "user_id": sp["user_id"].astype("str").to_numpy(),
            "timestamp": sp["started_at"].dt.tz_localize(None).to_numpy("datetime64[ns]"),
            "lat": sp.geometry.y.to_numpy(), "lon": sp.geometry.x.to_numpy()})
        visits = visits.sort_values(["user_id", "timestamp", "row"], ignore_index=True)
    else:
        visits = fixes[columns].iloc[:0]
    report.reduce("GPS fixes merged into staypoints", len(fixes) - len(visits))
    report.note(f"GPS fixes became {len(visits):,} staypoints with trackintel's sliding method: "
                f"a stay is >= {config.staypoint_minutes:g} min within "
                f"{config.staypoint_distance_m:g} m, never across a recording gap of more than "
                f"{config.gap_minutes:g} min; its time is the arrival.")
    without = sorted(set(fixes["user_id"].unique()) - set(visits["user_id"].unique()))
    if without:
        report.note(f"{plural(len(without), 'user')} {'has' if len(without) == 1 else 'have'} no staypoint (they never stayed long enough in "
                    f"one place): {without[:10]}{' ...' if len(without) > 10 else ''}.")
    return visits


def _runs(flag: np.ndarray, user: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                      np.ndarray]:
    """Start and end index of each run of ``flag`` within a user, and the user edges."""
    first = np.r_[True, user[1:] != user[:-1]]
    last = np.r_[user[1:] != user[:-1], True]
    start = flag & (first | ~np.r_[False, flag[:-1]])
    end = flag & (last | ~np.r_[flag[1:], False])
    return np.flatnonzero(start), np.flatnonzero(end), first, last


def _taxi_trips(frame: pd.DataFrame, report: ValidationReport, config: VisitConfig
                ) -> pd.DataFrame:
    """Taxi fixes -> trips: a pickup where ``occupied`` flips 0 -> 1, a drop-off where it flips
    back. Origin = first fix with the passenger on board, destination = the last such fix."""
    unknown = frame["occupied"].isna()
    report.drop("unknown occupancy", frame.loc[unknown, "row"],
                "The occupied flag is not 0 or 1, so the row cannot tell a pickup or drop-off.")
    fixes = frame[~unknown]
    user = fixes["user_id"].to_numpy()
    occupied = fixes["occupied"].to_numpy("int8") == 1
    t = fixes["timestamp"].to_numpy().astype("int64")
    start, end, first, last = _runs(occupied, user)
    n_fixes = end - start + 1
    gap_next = np.r_[np.diff(t), 0] / 60e9  # minutes to the next fix
    max_gap = np.zeros(len(start))
    inner = n_fixes > 1
    if inner.any():  # largest gap between consecutive fixes of the same run
        bounds = np.column_stack([start[inner], end[inner]]).ravel()
        max_gap[inner] = np.maximum.reduceat(gap_next, bounds)[::2]
    lat, lon = fixes["lat"].to_numpy(), fixes["lon"].to_numpy()
    km, centre = _distance_from_median_km(lat, lon)
    run_of_fix = np.repeat(np.arange(len(start)), n_fixes)
    # index of every fix of every run, run after run (runs are contiguous)
    fix_index = np.repeat(start - (np.cumsum(n_fixes) - n_fixes), n_fixes) + np.arange(
        n_fixes.sum())
    rows = fixes["row"].to_numpy()
    keep = np.ones(len(start), dtype=bool)
    checks = [
        ("incomplete taxi trip", first[start] | last[end],
         "The passenger was already on board at the cab's first fix or still on board at its "
         "last, so the pickup or drop-off is unknown."),
        ("taxi trip of a single fix", n_fixes == 1,
         "The occupied flag was on for one fix only: pickup and drop-off are the same point."),
        ("taxi trip with a recording gap", max_gap > config.gap_minutes,
         f"The cab sent no fix for more than {config.gap_minutes:g} min during the trip."),
        ("taxi trip outside the city area",
         (km[start] > config.city_radius_km) | (km[end] > config.city_radius_km),
         f"The pickup or drop-off lies more than {config.city_radius_km:g} km from the data's "
         f"median point ({centre[0]:.4f}, {centre[1]:.4f})."),
    ]
    for reason, bad, message in checks:
        bad = bad & keep
        fix_rows = rows[fix_index[bad[run_of_fix]]]
        report.drop(reason, fix_rows, f"{message} {int(bad.sum()):,} trips.")
        keep &= ~bad
    start, end = start[keep], end[keep]
    cab = user[start]
    number = pd.Series(cab).groupby(cab).cumcount().to_numpy() + 1
    trip_id = pd.Series(cab, dtype="str") + "#" + pd.Series(number).astype("str")
    ends = np.column_stack([start, end]).ravel()
    visits = fixes.iloc[ends][["row", "user_id", "timestamp", "lat", "lon"]].copy()
    visits["user_id"] = np.repeat(trip_id.to_numpy(), 2)
    visits = visits.sort_values(["user_id", "timestamp", "row"], ignore_index=True)
    report.reduce("taxi GPS fixes reduced to pickup and drop-off points",
                  len(fixes) - int(n_fixes[~keep].sum()) - len(visits))
    report.note(f"{int(keep.sum()):,} taxi trips from the occupied flag: origin = first fix with "
                "a passenger on board, destination = the last one; each trip is a user "
                "'<cab>#<n>' with 2 visits.")
    _note_long_trips(visits, report, config)
    return visits


def _trips(frame: pd.DataFrame, report: ValidationReport, config: VisitConfig) -> pd.DataFrame:
    """Keep trips (user_id = trip) with exactly an origin row and a destination row."""
    sizes = frame.groupby("user_id")["row"].transform("size")
    bad = sizes != 2
    n_bad = frame.loc[bad, "user_id"].nunique()
    report.drop("trip without exactly 2 rows", frame.loc[bad, "row"],
                f"A trip (one user_id) needs exactly 2 rows, origin and destination; {n_bad:,} "
                "trips had another number of rows.")
    visits = frame[~bad]
    _note_long_trips(visits, report, config)
    return visits


def _note_long_trips(visits: pd.DataFrame, report: ValidationReport, config: VisitConfig
                     ) -> None:
    ordered = visits.sort_values(["user_id", "timestamp"])
    t = ordered["timestamp"].to_numpy()
    hours = (t[1::2] - t[0::2]) / np.timedelta64(1, "h")
    long = int((hours > config.long_trip_hours).sum())
    if long:
        report.note(f"{long:,} of {len(hours):,} trips last longer than "
                    f"{config.long_trip_hours:g} h; they are kept (a meter left running, or "
                    "wrong times): check them if the flows look odd.")


def _stations(frame: pd.DataFrame, report: ValidationReport) -> pd.DataFrame:
    """Bike-share: each vehicle's station sequence, ``location_id`` = station id."""
    if "location_id" not in frame or frame["location_id"].isna().all():
        frame = frame.assign(location_id=frame["lat"].round(5).astype("str") + ","
                             + frame["lon"].round(5).astype("str"))
        report.note("No location_id column: stations were identified by their coordinates "
                    "(rounded to ~1 m).")
    missing = frame["location_id"].isna()
    report.drop("missing station id", frame.loc[missing, "row"],
                "location_id (the station) is empty.")
    visits = frame[~missing]
    report.note(f"{visits['location_id'].nunique():,} stations used by "
                f"{visits['user_id'].nunique():,} vehicles.")
    return visits
