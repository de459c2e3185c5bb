"""The app's inputs: files, POIs, the prepared city and the models to start from (shared by every page).

* Inputs are files: the bundled Helsinki sample, or uploads written once under the session's own
  folder ``WORK_DIR/sessions/<link token>`` (keyed by content digest), so every step reads a path
  and caches on a short key; :mod:`state.saved` keeps that folder across a refresh and deletes it.
* A prepared city folder per (trajectories, POIs, city name, map detail): the embedded default's
  under ``WORK_DIR/cities``, shared by every session; one made from a session's files inside that
  session's folder, never shared between links (``st.cache_data`` + the folder on disk).
* The pretrained model lives in ``st.cache_resource`` and is never modified (a session fine-tunes
  its own deep copy: :mod:`state.finetuning`).
* torch is imported only inside the functions that need a model (``import torch`` costs ~2 s).

Streamlit's rules from its own examples: no widgets in cached functions (progress bars are
elements, created and emptied inside, so a cache hit replays nothing visible).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st

from state import storage
from state.session import Source, session
from state.text import error, plain
from trajmoe.errors import TrajMoEError
from trajmoe.trajectories.report import ValidationReport, plural

REPO = Path(__file__).resolve().parents[2]
SAMPLE_TRAJECTORIES = REPO / "sample_data" / "helsinki_synthetic_trajectories.csv.gz"
SAMPLE_POIS = REPO / "sample_data" / "helsinki_pois.parquet"
SAMPLE_BASEMAP = REPO / "sample_data" / "helsinki_basemap.geojson"  # streets etc. of the same extract
SHIPPED_CHECKPOINT = REPO / "assets" / "trajmoe_pretrained.safetensors"
CHECKPOINT_ENV = "TRAJMOE_CHECKPOINT"  # another checkpoint to start from (tests, other deployments)
WORK_DIR = Path(os.environ.get("TRAJMOE_APP_DIR", Path(tempfile.gettempdir()) / "trajmoe_app"))
SAMPLE_LABEL = "Helsinki sample: SYNTHETIC people (no real person) moving between real OpenStreetMap POIs"
SAMPLE_POIS_LABEL = "Helsinki city centre POIs (real, OpenStreetMap)"
NO_POIS_LABEL = "none (you chose to go on without POIs: the model works from the visits alone)"
NO_POIS = Source(label=NO_POIS_LABEL, path="", key="no-pois")  # a POI source with no file and no POIs
COVERED = 0.5  # POIs "cover" the trajectories when at least this share of the visits lies in their area
COVER_MARGIN_DEG = 0.01  # ~1 km around the POIs' bounding box still counts as their area
# A compressed upload under the size limit can still hold tens of millions of rows: bound the rows
# too (5M rows prepare in ~2 GB, bench/results/large_upload.md); bigger files go through the CLI.
MAX_ROWS = 5_000_000
# A city name is shown on every page, in headings, labels and the model's name, and comes from a
# file name, a project file or the City name box: only what place names need, and nothing Markdown
# makes a link, image or emphasis of (no [ ] < : @ * _ ` ~ $, no "www.").
MAX_CITY = 80
_NOT_IN_A_CITY = re.compile(r"[^\w .,'’()&/-]|_|www\.", re.IGNORECASE)


# --------------------------------------------------------------------------- files
def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]


def scratch_dir() -> Path:
    """A new empty folder under WORK_DIR/scratch (one a crash left behind is swept: state.storage)."""
    (WORK_DIR / "scratch").mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=WORK_DIR / "scratch"))


@st.cache_data(show_spinner=False)
def _file_digest(path: str, mtime: float) -> str:
    return digest(Path(path).read_bytes())


def bundled(path: Path, label: str) -> Source:
    return Source(label=label, path=str(path), key=_file_digest(str(path), path.stat().st_mtime))


def session_dir() -> Path:
    """This session's own folder (its uploads, prepared cities, fine-tuned model): WORK_DIR/sessions/<token>."""
    return WORK_DIR / "sessions" / session().token


def finetuned_path(folder: Path | None = None) -> Path:
    """Where a session's fine-tuned weights are kept (their .json next to them): in ``folder``,
    by default this session's."""
    return (folder or session_dir()) / "finetuned" / "trajmoe_finetuned.safetensors"


def save_upload(upload, label: str) -> Source:
    """Write an uploaded file into the session's folder once (same content -> same path) and describe it."""
    memo = session().uploads
    if upload.file_id in memo:
        return memo[upload.file_id]
    data = upload.getvalue()
    key = digest(data)
    folder = session_dir() / "uploads" / key
    path = folder / Path(upload.name).name
    if not path.is_file():
        storage.check_room(WORK_DIR, session().token, len(data), upload.name)
        folder.mkdir(parents=True, exist_ok=True)
        storage.write_atomic(path, data)
    memo[upload.file_id] = Source(label=label, path=str(path), key=key)
    return memo[upload.file_id]


def discard_upload(upload, source: Source) -> None:
    """Delete an upload the app refused (a POI or district file it cannot read): nothing of a file
    that cannot be used stays on the server. Kept when the session uses the same content elsewhere."""
    sess = session()
    if source in (sess.trajectories, sess.pois):
        return
    sess.uploads.pop(upload.file_id, None)
    shutil.rmtree(Path(source.path).parent, ignore_errors=True)


def new_upload(what: str, upload) -> bool:
    """True once per uploaded file: an uploader keeps its file across reruns, and choosing another
    source afterwards must not bring the old upload back."""
    seen = session().applied_uploads
    if seen.get(what) == upload.file_id:
        return False
    seen[what] = upload.file_id
    return True


def max_upload_mb() -> int:
    return int(st.get_option("server.maxUploadSize"))


# --------------------------------------------------------------------------- trajectories and POIs
def trajectories() -> Source:
    return session().trajectories or bundled(SAMPLE_TRAJECTORIES, SAMPLE_LABEL)


def is_sample() -> bool:
    return session().trajectories is None


def use_upload(upload) -> None:
    """Use an uploaded trajectory file, the city named after the file (``my_city.csv`` -> My City)."""
    city = plain_city(Path(upload.name).name.split(".")[0].title()) or "Uploaded city"
    session().use_trajectories(save_upload(upload, f"{upload.name} (uploaded)"), city)


def plain_city(name: str) -> str:
    """``name`` as a city name: letters of any script, digits, spaces and . , ' ( ) & / - (anything
    else becomes a space), at most MAX_CITY characters."""
    return " ".join(_NOT_IN_A_CITY.sub(" ", str(name)).split())[:MAX_CITY].strip()


def city_name() -> str:
    return plain_city(session().city or "") or "Helsinki"


def pois_source() -> Source:
    return session().pois or bundled(SAMPLE_POIS, SAMPLE_POIS_LABEL)


def use_pois(source: Source | None) -> None:
    """Use these POIs from now on (None: the bundled Helsinki centre)."""
    session().pois = source


def _keep_staged(staged: Path, into: Path, what: str) -> None:
    """Move the files written in ``staged`` (a scratch folder: an online fetch's size is known only
    once written) into ``into`` when the link's and the server's quotas leave room for them
    (:func:`state.storage.check_room`); otherwise nothing of them is kept."""
    try:
        storage.check_room(WORK_DIR, session().token, storage.usage(staged), what)
        into.mkdir(parents=True, exist_ok=True)
        for file in staged.iterdir():
            os.replace(file, into / file.name)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def pois_from_frame(frame: pd.DataFrame, label: str, basemap=None) -> Source:
    """Keep POIs downloaded from OpenStreetMap as a file, like any other POI source, and the base
    map fetched with them (:data:`BASEMAP_NEXT_TO_POIS`) next to it (within the quotas)."""
    from trajmoe.pois.basemap import write_basemap
    from trajmoe.pois.offline import write_pois

    staged = scratch_dir()
    key = digest(write_pois(frame, staged / "pois.parquet").read_bytes())
    if basemap is not None:
        write_basemap(basemap, staged / BASEMAP_NEXT_TO_POIS)
    folder = session_dir() / "pois" / key
    _keep_staged(staged, folder, "the POIs and streets fetched from OpenStreetMap")
    return Source(label=label, path=str(folder / "pois.parquet"), key=key)


BASEMAP_NEXT_TO_POIS = "basemap.geojson"


def area_basemap_path() -> Path:
    """Where the base map fetched for the chosen trajectories' area is kept (one per trajectory file)."""
    return session_dir() / "basemaps" / f"{trajectories().key}.geojson"


def fetch_area(*, bbox=None, place: str | None = None) -> tuple[pd.DataFrame | None, object | None, list[str]]:
    """POIs and a base map of one area from OpenStreetMap (online): (POIs or None, base map or None,
    what went wrong in plain words). The base map failing does not lose the POIs."""
    from trajmoe.errors import POIError
    from trajmoe.pois.online import fetch_basemap, fetch_pois

    area = {"bbox": bbox} if bbox is not None else {"place": place}
    problems, frame, base = [], None, None
    try:
        frame = fetch_pois(**area, timeout=15)
    except POIError as exc:
        return None, None, [f"Could not fetch POIs online. {exc}"]
    try:
        base = fetch_basemap(**area, timeout=15)
    except POIError as exc:
        problems.append(f"The POIs came, but the streets under the maps could not be fetched: {exc}")
    return frame, base, problems


@st.cache_data(show_spinner=False, max_entries=16)
def read_poi_file(key: str, path: str) -> pd.DataFrame:
    from trajmoe.pois.offline import read_pois
    from trajmoe.pois.report import POI_COLUMNS

    if key == NO_POIS.key:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c in ("lat", "lon") else "object") for c in POI_COLUMNS})
    return read_pois(path)


def pois() -> pd.DataFrame:
    src = pois_source()
    return read_poi_file(src.key, src.path)


def use_no_pois() -> None:
    """Go on without POIs: the model works from the visits alone."""
    use_pois(NO_POIS)


def poi_summary(frame: pd.DataFrame) -> dict:
    """Counts the City & POIs page shows: POIs, kinds of place, share that has a name."""
    named = (frame["name"].astype(str).str.len() > 0).mean() if len(frame) else 0.0
    return {"n": len(frame), "kinds": frame["category"].nunique(), "named": named}


# --------------------------------------------------------------------------- prepared city
@dataclass
class Prepared:
    """A prepared city folder, or why it could not be made."""

    folder: str | None
    meta: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)  # ValidationReport.to_dict()
    error: str | None = None

    @property
    def validation(self) -> ValidationReport:
        """The report as a :class:`ValidationReport`, so the page shows the CLI's numbers."""
        return ValidationReport.from_dict(self.report)

    def check_lines(self) -> list[str]:
        """The check of the trajectories in plain words: the counts (rows read = used + merged + left
        out; people read = kept + dropped), rows left out (with row numbers), merged, notes. Says
        "Every row could be used" only when it is true, never for a file that could not be read.
        Lines of Markdown: what quotes the file (its name, columns, values) is escaped."""
        report = self.validation
        lines = [f"- {text}" for text in report.count_lines()]
        if not report.fatal:
            lines.append(f"- {report.headline()}")
        for reason, entry in report.dropped.items():
            rows = ", ".join(str(r) for r in entry["rows"][:8])
            more = ", ..." if entry["count"] > min(8, len(entry["rows"])) else ""
            label = "row" if entry["count"] == 1 and not more else "rows"
            where = f" ({label} {rows}{more})" if rows else ""
            lines.append(f"- **Left out {plural(entry['count'], 'row')}: {error(reason)}**{where}. "
                         f"{error(entry['message'])}")
        for reason, n in report.reduced.items():
            lines.append(f"- Merged {plural(n, 'row')}: {error(reason)}.")
        for reason, n in report.users_dropped.items():
            lines.append(f"- Dropped {plural(n, 'person', 'people')}: {error(reason)}.")
        return lines + [f"- {error(note)}" for note in report.notes]

    @property
    def n_dropped(self) -> int:
        """Rows left out (the report's own count)."""
        return self.validation.n_left_out


@st.cache_data(show_spinner=False, max_entries=8)
def prepare_city(traj_key: str, pois_key: str, city: str, resolution: int | None, weekday_reliable: bool,
                 root: str, _traj: Source, _pois: Source) -> Prepared:
    """Prepare (or reuse from disk) the city folder under ``root`` (part of the cache key, so that
    a session's city is never another link's); ``resolution`` None = prepare's automatic choice
    (8 for a city, finer for a small area)."""
    from trajmoe import __version__
    from trajmoe.city.features import SCHEMA_ID
    from trajmoe.city.prepare import prepare
    from trajmoe.trajectories.report import REPORT_VERSION

    tag = digest(json.dumps([traj_key, pois_key, city, resolution, weekday_reliable, SCHEMA_ID, __version__,
                             REPORT_VERSION]).encode())  # a folder with an older report is made again
    folder = Path(root) / "cities" / tag
    if (folder / "meta.json").is_file():
        meta = json.loads((folder / "meta.json").read_text())
        return Prepared(str(folder), meta, meta["report"])
    bar = st.progress(0.1, text="Reading and checking the trajectories, placing visits on the map grid...")
    scratch = scratch_dir()
    try:
        meta, report = prepare(_traj.path, out=scratch / "city", city=city, pois=read_poi_file(pois_key, _pois.path),
                               resolution=resolution, weekday_reliable=weekday_reliable, name=Path(_traj.path).name,
                               max_rows=MAX_ROWS)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if not folder.exists():
            (scratch / "city").rename(folder)  # atomic: another session never sees a half-written folder
        return Prepared(str(folder), meta, report.to_dict())
    except TrajMoEError as exc:
        report = exc.report.to_dict() if getattr(exc, "report", None) is not None else {}
        refused = Path(_traj.path).parent
        if report and refused.parent == Path(root) / "uploads":  # the file itself was refused: not kept
            shutil.rmtree(refused, ignore_errors=True)
        return Prepared(None, report=report, error=str(exc).split("\n")[0])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        bar.empty()


def prepared() -> Prepared:
    traj, poi, sess = trajectories(), pois_source(), session()
    # made from the session's files or named by the session (a city name from a project file): its own folder
    own = sess.trajectories is not None or sess.pois is not None or sess.city is not None
    root = str(session_dir() if own else WORK_DIR)
    return prepare_city(traj.key, poi.key, city_name(), sess.resolution, not sess.weekday_unreliable, root, traj, poi)


@dataclass(frozen=True)
class Coverage:
    """How much of the trajectories' area the chosen POIs cover."""

    share: float  # of the visits inside the POIs' bounding box (+ COVER_MARGIN_DEG)
    bbox: tuple[float, float, float, float]  # the visits' area (west, south, east, north): fetch POIs for it
    n_pois: int  # POIs of the source

    @property
    def covered(self) -> bool:
        return self.n_pois == 0 or self.share >= COVERED  # no POIs at all is a choice, said elsewhere

    def where(self) -> str:
        """How many visits lie in the POIs' area, in words."""
        return "none of the visits lies" if self.share == 0 else f"only {self.share:.0%} of the visits lie"

    def sentence(self, pois_label: str, trajectories_label: str) -> str:
        return (f"The POIs do not cover these trajectories: {self.where()} in the area of **{plain(pois_label)}**, so the "
                f"model would describe the places of **{plain(trajectories_label)}** without what is there.")


@st.cache_data(show_spinner=False, max_entries=16)
def _coverage(folder: str, pois_key: str, _pois: pd.DataFrame) -> Coverage:
    import numpy as np

    v = city_data(folder).visits
    lat, lon = v["lat"].to_numpy(), v["lon"].to_numpy()
    if len(_pois):
        m = COVER_MARGIN_DEG
        inside = ((lat >= _pois["lat"].min() - m) & (lat <= _pois["lat"].max() + m)
                  & (lon >= _pois["lon"].min() - m) & (lon <= _pois["lon"].max() + m))
        share = float(inside.mean())
    else:
        share = 0.0
    # The area most visits are in (1st to 99th percentile): far outliers would make the box a continent.
    (s, n), (w, e) = np.quantile(lat, [0.01, 0.99]), np.quantile(lon, [0.01, 0.99])
    pad = 0.005
    return Coverage(share=share, bbox=(round(w - pad, 4), round(s - pad, 4), round(e + pad, 4), round(n + pad, 4)),
                    n_pois=len(_pois))


def coverage() -> Coverage | None:
    """The chosen POIs' coverage of the chosen trajectories; None for the embedded default (it is
    covered) and when the trajectories cannot be prepared."""
    sess = session()
    if sess.trajectories is None and sess.pois is None:
        return None
    prep = prepared()
    if prep.folder is None:
        return None
    return _coverage(prep.folder, pois_source().key, pois())


def keep_area_basemap(base) -> Path:
    """Keep a base map fetched for the trajectories' area (within the quotas): every map of these
    trajectories draws it."""
    from trajmoe.pois.basemap import write_basemap

    path, staged = area_basemap_path(), scratch_dir()
    write_basemap(base, staged / path.name)
    _keep_staged(staged, path.parent, "the streets fetched from OpenStreetMap")
    return path


@st.cache_resource(show_spinner=False, max_entries=8)
def city_data(folder: str):
    """The prepared city (shared, read-only)."""
    from trajmoe.city.data import CityData

    return CityData(folder)
