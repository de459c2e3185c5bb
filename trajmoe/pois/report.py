"""The POI frame's contract and its report of what was read, skipped and why.

The POI frame has the columns :data:`POI_COLUMNS`: ``lat``, ``lon`` (float64), ``category`` (one
of :data:`trajmoe.pois.categories.CATEGORIES`), ``name`` (str, may be ""), ``source`` (the label
that decided the category: ``"osm:amenity=cafe"``, ``"fclass:restaurant"``,
``"foursquare:Coffee Shop"``).

Nothing is dropped silently: each frame carries a :class:`POIReport` (what was read, skipped and
why) as a JSON-safe dict in ``frame.attrs["poi_report"]``; :meth:`POIReport.of` reads it back,
and it is logged. Parquet files written by :func:`trajmoe.pois.offline.write_pois` keep it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

POI_COLUMNS: tuple[str, ...] = ("lat", "lon", "category", "name", "source")
REPORT_ATTR = "poi_report"

OFFLINE_OPTIONS = (  # plain words for planners: what to do, no code paths or OSM tag names
    "To work offline, upload a map extract of your area from OpenStreetMap (an .osm "
    "or .osm.pbf file, free from download.geofabrik.de or extract.bbbike.org), or a POI table "
    "(CSV or Parquet with lat, lon and a category for each place), or use the bundled Helsinki "
    "POIs that come with TrajMoE."
)


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
