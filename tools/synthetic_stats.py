"""The statistical signature of a visit frame, to compare a synthetic sample with real data.

``sample_data/README.md`` quotes these numbers for the shipped sample and
``tests/test_synthetic.py`` checks their ranges.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trajmoe.geo import EARTH_RADIUS_KM


def summarize(frame: pd.DataFrame, *, window: int = 64) -> dict[str, float]:
    """The statistical signature of a visit frame, to compare a synthetic sample with real data.

    Parameters
    ----------
    frame
        Visits with ``user_id``, ``timestamp`` (ISO text or naive local datetimes), ``lat``,
        ``lon`` and ``location_id``, sorted by user then time.
    window
        A next visit "returns" when its location is among the user's previous ``window`` visits
        (64 is the models' context length, ``trajmoe.city.data.DEFAULT_MAX_LEN``; of the test targets
        84% return in nyc_foursquare, 58% in sf_gowalla: bench/results/transfer.md).

    Returns
    -------
    dict
        ``users``, ``visits``, ``return_share``, ``night_share`` (visits 01:00-05:59 local),
        ``peak_hour``, ``jump_km_median``, ``jump_km_p90``, ``jump_km_p99`` (consecutive visits).
    """
    user = frame["user_id"].to_numpy()
    seq = frame.groupby("user_id", sort=False).cumcount().to_numpy()
    prev = frame.assign(_seq=seq).groupby(["user_id", "location_id"], sort=False)["_seq"].shift()
    gap = seq - prev.to_numpy(dtype=float, na_value=np.nan)
    hours = pd.to_datetime(frame["timestamp"].astype(str).str[:19]).dt.hour.to_numpy()
    lat, lon = np.radians(frame["lat"].to_numpy()), np.radians(frame["lon"].to_numpy())
    same_user = user[1:] == user[:-1]
    jump = EARTH_RADIUS_KM * np.hypot((lon[1:] - lon[:-1]) * np.cos(lat[1:]), lat[1:] - lat[:-1])[same_user]
    return {
        "users": float(len(np.unique(user))),
        "visits": float(len(frame)),
        "return_share": float(np.mean(gap[seq > 0] <= window)),
        "night_share": float(np.mean((hours >= 1) & (hours < 6))),
        "peak_hour": float(np.bincount(hours, minlength=24).argmax()),
        "jump_km_median": float(np.median(jump)),
        "jump_km_p90": float(np.percentile(jump, 90)),
        "jump_km_p99": float(np.percentile(jump, 99)),
    }
