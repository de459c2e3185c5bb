"""POIs downloaded from OpenStreetMap (Nominatim + Overpass, through OSMnx), failing fast.

:func:`fetch_pois` queries a place, polygon or bbox and hands the features to the shared pipeline
in :mod:`trajmoe.pois.labels`; :func:`fetch_basemap` asks the same way for the streets, water,
parks and place names of :mod:`trajmoe.pois.basemap`. The plumbing around OSMnx keeps one call
bounded: its settings are set for the call and restored after, a whole fetch has a deadline, busy
or stopped servers are refused at once instead of retried, and failures are told in plain words
with the offline options.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import requests
from shapely.geometry import MultiPolygon, Polygon, box

from trajmoe.errors import POIError, explain
from trajmoe.pois.categories import osm_query_tags
from trajmoe.pois.labels import _finish, _pois_from_features
from trajmoe.pois.report import OFFLINE_OPTIONS, POIReport

# One Overpass request covers at most 2,500 km2 (osmnx max_query_area_size); a metro area needs a
# few. Larger areas mean many minutes of downloads: a regional extract is the better tool there.
MAX_ONLINE_AREA_KM2 = 10_000.0


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
        The POI frame (:data:`~trajmoe.pois.report.POI_COLUMNS`) with its :class:`POIReport` in
        ``attrs``.

    Raises
    ------
    POIError
        Bad area, unknown place, no POIs in the area, or the servers cannot be reached or refuse
        (busy, timed out): raised at once, never after minutes of retries, with the offline
        options in the message.
    """
    features, source = _download(lambda area: osm_query_tags(), "POIs", place=place, polygon=polygon, bbox=bbox,
                                 timeout=timeout, nothing="no POIs", or_else=", or load a POI table")
    report = POIReport(source=source)
    return _finish(_pois_from_features(features, report), report)


def area_from_file(path) -> Polygon | MultiPolygon:
    """The area of a GeoJSON (or any file GeoPandas reads) as one shape, for ``polygon=``."""
    import geopandas as gpd

    try:
        return gpd.read_file(path).union_all()
    except Exception as exc:  # fiona/pyogrio raise their own types for a bad file
        raise POIError(f"Cannot read polygon file {Path(path).name}: {explain(exc)}. Give a GeoJSON polygon.") from exc


# Streets asked for by the size of the area: a metro area's residential streets are hundreds of MB
# from Overpass and too fine to see at the zoom that shows the whole area.
BASEMAP_DETAIL_KM2 = ((50.0, 3), (500.0, 2))  # up to 50 km2: every street; up to 500: no residential


def basemap_rank(area_km2: float) -> int:
    """The finest street rank (:data:`trajmoe.pois.basemap.STREET_RANK`) fetched for an area this size."""
    return next((rank for km2, rank in BASEMAP_DETAIL_KM2 if area_km2 <= km2), 1)


def fetch_basemap(
    *,
    place: str | None = None,
    polygon: Polygon | MultiPolygon | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    timeout: float = 20,
):
    """Download a base map (streets, water, parks, place names) from OpenStreetMap, as
    :func:`fetch_pois` downloads POIs (same area arguments, same bounded, fail-fast plumbing and cache).

    Up to 50 km2 every street class of :data:`~trajmoe.pois.basemap.STREET_RANK` is asked for; up to
    500 km2 main and secondary roads; beyond, main roads only (:func:`basemap_rank`).

    Returns
    -------
    trajmoe.pois.basemap.Basemap

    Raises
    ------
    POIError
        As :func:`fetch_pois`; also when OpenStreetMap has none of these features in the area.
    """
    import osmnx as ox

    from trajmoe.pois.basemap import basemap_tags, from_features, split_streets

    def tags(area):
        return basemap_tags(max_rank=basemap_rank(ox.projection.project_geometry(area)[0].area / 1e6))

    features, source = _download(tags, "a base map (streets, water, parks)", place=place, polygon=polygon,
                                 bbox=bbox, timeout=timeout, nothing="no streets, water, parks or place names")
    return from_features(*split_streets(features), source=source)


def _download(tags, what: str, *, place, polygon, bbox, timeout: float, nothing: str, or_else: str = ""):
    """OSMnx features with ``tags(area)`` in the area given (exactly one of place, polygon, bbox) and
    a description of it: one bounded call (:func:`_osmnx_settings`, :func:`_with_deadline`).
    ``what`` names the data in messages; ``nothing`` says that there is none ("no POIs")."""
    import osmnx as ox
    from osmnx._errors import InsufficientResponseError, ResponseStatusCodeError

    given = {"place": place, "polygon": polygon, "bbox": bbox}
    if sum(v is not None for v in given.values()) != 1:
        raise POIError("Give exactly one of place=, polygon= or bbox=.")
    if not timeout > 0:
        raise POIError(f"timeout must be a positive number of seconds, got {timeout!r}.")

    def download():
        try:
            area, source = _query_area(place=place, polygon=polygon, bbox=bbox)
            try:
                return ox.features_from_polygon(area, tags=tags(area)), source
            except InsufficientResponseError as exc:
                _raise_if_not_osm_data(exc, what)
                raise POIError(f"OpenStreetMap has {nothing} in {source}. Check the area{or_else}.") from exc
        except (requests.RequestException, ResponseStatusCodeError) as exc:
            reason = _plain_reason(exc, timeout)
            raise POIError(f"Could not get {what} from OpenStreetMap: {reason}. {OFFLINE_OPTIONS}") from exc

    with _osmnx_settings(timeout):
        return _with_deadline(download, TOTAL_DEADLINE_FACTOR * timeout + 1.0, what)


TOTAL_DEADLINE_FACTOR = 3  # a whole fetch (geocoder + Overpass) may take this many timeouts


def _with_deadline(fn, seconds: float, what: str = "POIs"):
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
            f"Could not get {what} from OpenStreetMap: no complete answer within {seconds:.0f} s "
            f"(the server is too slow or the connection stalls). {OFFLINE_OPTIONS}"
        )
    if "error" in box_:
        raise box_["error"]
    return box_["value"]


def _raise_if_not_osm_data(exc: Exception, what: str = "POIs") -> None:
    """OSMnx reports a 200 answer that is not JSON (a proxy, captive-portal login or error page,
    an empty body) as "insufficient response" with "<host> responded: ..." in the message: that
    is a network fault, not an empty area or an unknown place, so say so and name the offline way."""
    if " responded: " in str(exc):
        raise POIError(
            f"Could not get {what} from OpenStreetMap: the server answered with something that is not "
            f"OpenStreetMap data (a proxy, login or error page?). {OFFLINE_OPTIONS}"
        ) from exc


# --------------------------------------------------------------------------- HTTP plumbing
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
