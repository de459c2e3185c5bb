"""The hemisphere / ocean check: do the visits lie where people live, and if not, why not?

A file whose latitude column has lost its sign, or whose lat/lon columns are swapped, still
reads without an error: every value is in range. Its visits then fall in an ocean or a desert,
and every later step (POIs, base map, names) quietly fails. :func:`coordinate_check` looks at
the visits' points against the world layer (:mod:`trajmoe.pois.world`: GSHHG land and GeoNames
places of 1,000 people or more), and when most lie on water or more than 50 km from any
populated place, tries the likely mistakes (lat/lon swapped, latitude or longitude or both
sign-flipped) and says which one puts the visits on land near people, and what to fix.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from trajmoe.pois.world import on_land, populated_places

FAR_KM = 50.0  # a visit farther than this from any place of 1,000+ people is "far from people"
MOSTLY = 0.5  # more than this share of visits on water or far: reported
FIXED = 0.8  # a transformation that puts at least this share on land near people is the likely cause
SAMPLE = 2000  # visits looked at (evenly spread over the file)
_EARTH_KM = 6371.0088

# (what it says, how to transform (lat, lon), how it reads once undone, what to fix); the first
# that puts the visits where people live is named (one mistake is likelier than two), the others
# that also do are mentioned.
_CAUSES = (
    ("Your latitudes look sign-flipped", lambda la, lo: (-la, lo), "with the sign changed",
     "Fix the sign of the file's lat column"),
    ("Your longitudes look sign-flipped", lambda la, lo: (la, -lo), "with the sign changed",
     "Fix the sign of the file's lon column"),
    ("Your latitude and longitude look swapped", lambda la, lo: (lo, la), "swapped back",
     "Swap the file's lat and lon columns (or their names in the header)"),
    ("Both your latitudes and longitudes look sign-flipped", lambda la, lo: (-la, -lo), "with both signs changed",
     "Fix the signs of the file's lat and lon columns"),
)  # fmt: skip


def _unit(lat, lon) -> np.ndarray:
    lat, lon = np.radians(lat), np.radians(lon)
    return np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


@lru_cache(maxsize=1)
def _places_tree():
    from scipy.spatial import cKDTree

    places = populated_places()
    return cKDTree(_unit(places["lat"].to_numpy(), places["lon"].to_numpy()))


def _nearest_place(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """(km to the nearest GeoNames place, its row in :func:`populated_places`) for each point."""
    chord, idx = _places_tree().query(_unit(lat, lon), k=1)
    return 2 * _EARTH_KM * np.arcsin(np.clip(chord / 2, 0, 1)), idx


def _where(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """(on water, far from any populated place) for each point."""
    km, _ = _nearest_place(lat, lon)
    return ~on_land(lat, lon), km > FAR_KM


def _in_range(lat, lon) -> bool:
    return bool(np.all(np.abs(lat) <= 90) and np.all(np.abs(lon) <= 180))


def _degrees(lat: float, lon: float) -> str:
    return f"{abs(lat):.1f}°{'N' if lat >= 0 else 'S'}, {abs(lon):.1f}°{'E' if lon >= 0 else 'W'}"


def _biggest_place_near(lat, lon) -> str:
    """The most populous place within :data:`FAR_KM` of the points' median, else the nearest one."""
    la, lo = float(np.median(lat)), float(np.median(lon))
    tree, places = _places_tree(), populated_places()
    near = tree.query_ball_point(_unit([la], [lo])[0], 2 * np.sin(FAR_KM / _EARTH_KM / 2))
    if near:  # populated_places() is sorted most populous first
        return str(places["name"].iloc[min(near)])
    _, idx = _nearest_place([la], [lo])
    return str(places["name"].iloc[int(idx[0])])


def coordinate_check(lat, lon) -> str | None:
    """A warning in plain words when most visits lie on water or far from people, with the likely
    cause and the fix; None when the visits look right (or there are none).

    Parameters
    ----------
    lat, lon
        The visits' coordinates in degrees (WGS84), as read from the file.
    """
    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    keep = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)  # the reader reports the rest
    lat, lon = lat[keep], lon[keep]
    if len(lat) == 0:
        return None
    pick = np.unique(np.linspace(0, len(lat) - 1, min(SAMPLE, len(lat))).astype(np.int64))
    lat, lon = lat[pick], lon[pick]
    water, far = _where(lat, lon)
    bad = water | far
    if bad.mean() <= MOSTLY:
        return None
    share = f"{bad.mean():.0%} of the visits"
    where = ("fall in water" if water.mean() >= far.mean() else f"lie more than {FAR_KM:.0f} km from any town")
    place = f"{share} {where} (around {_degrees(float(np.median(lat)), float(np.median(lon)))})"
    found = []  # every mistake whose undoing puts the visits where people live, likeliest first
    for text, move, undone, fix in _CAUSES:
        la, lo = move(lat, lon)
        if _in_range(la, lo):
            w, f = _where(la, lo)
            if 1.0 - (w | f).mean() >= FIXED:
                found.append((text, undone, fix, _biggest_place_near(la, lo)))
    if not found:
        return (f"Check the coordinates: {place}, and no swap or sign change of lat/lon puts them where "
                "people live. Make sure the lat and lon columns hold WGS84 degrees of this city.")
    (text, undone, fix, city), others = found[0], found[1:]
    also = "".join(f" (or, {u}, in {c})" for _, u, _, c in others)
    return f"{text}: {place}; {undone}, they are in {city}{also}. {fix} and upload it again."
