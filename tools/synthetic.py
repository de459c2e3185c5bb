"""A synthetic population of visit trajectories over a real POI table (the app's offline default).

Nobody real is in the output: every user is an agent of an individual mobility model that moves
between the POIs of a table (for the shipped sample, real OpenStreetMap POIs of central Helsinki).
The model follows the two ingredients the literature finds in every city:

* Anchors and a daily schedule. Each agent has a home and, if employed, a work place, and a
  time-of-day schedule of activity slots (work in the morning, lunch near work, errands after
  work, evening leisure, home at night; free days are different). This is the structure of
  TimeGeo (Jiang et al., "The TimeGeo modeling framework for urban mobility without travel
  surveys", PNAS 113(37), 2016), here with a fixed slot table instead of fitted circadian rates
  (:mod:`tools.synthetic_schedule`).
* Exploration and preferential return between the anchors (EPR: Song, Koren, Wang, Barabási,
  "Modelling the scaling properties of human mobility", Nature Physics 6, 2010). At an open slot
  an agent who has visited S distinct places explores a new one with probability
  ``rho * S**-gamma`` (rho = 0.6, gamma = 0.21 are Song et al.'s fitted values) and otherwise
  returns to a past place with probability proportional to how often it went there. Exploration
  jump lengths follow the truncated power law of González, Hidalgo, Barabási ("Understanding
  individual human mobility patterns", Nature 453, 2008):
  ``P(r) ~ (r + r0)**-beta * exp(-r / kappa)`` with beta = 1.75 (their fit); r0 and kappa are
  scaled down from their 1.5 km / country-wide values because the shipped extract is a district
  of about 1 x 1.7 km. The destination's category is drawn from the slot's activity
  (lunch -> food, evening -> food/nightlife/entertainment, ...); the POI of that category nearest
  to the jump's end point is the place visited (as in d-EPR, Pappalardo et al., "Returners and
  explorers dichotomy in human mobility", Nature Communications 6, 2015, destinations are real
  places, not free coordinates). Returns are restricted to past places whose category fits the
  slot, so nobody "returns" to a nightclub at lunch.

Output is the project's trajectory CSV frame (``user_id,timestamp,lat,lon,location_id,category``)
with ISO-8601 timestamps carrying the local offset (Europe/Helsinki: +03:00 summer, +02:00 winter).
Agents move in lock-step, one slot at a time for all agents at once, so the default sample
(350 agents x 28 days) takes about a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from tools.synthetic_schedule import (
    ACTIVITIES,
    FREE_DAY,
    LATEST_H,
    WORK_DAY,
    WORK_WEIGHTS,
    Slot,
)
from trajmoe.errors import InputDataError
from trajmoe.pois.categories import CATEGORIES

log = logging.getLogger(__name__)

TRAJECTORY_COLUMNS = ("user_id", "timestamp", "lat", "lon", "location_id", "category")
# The generator's own degree length (111.32 km, the equator's), not trajmoe.geo.KM_PER_DEGREE (111.195 km,
# the mean radius's): it is part of the model that made the shipped sample. With geo's value the same
# seed gives 34,398 visits instead of the shipped 34,395, and tests/test_synthetic.py checks the shipped
# file row for row; switch only together with a regenerated sample (sample_data/regenerate.py).
_KM_PER_DEG_LAT = 111.32


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic population; the defaults generate the shipped sample."""

    n_users: int = 350
    days: int = 28
    # A Monday; four weeks from it cross the end of summer time (27 Oct 2024), so the sample
    # carries both Helsinki offsets (+03:00 and +02:00) as real data does.
    start: str = "2024-10-07"
    timezone: str = "Europe/Helsinki"
    seed: int = 0
    rho: float = 0.6  # EPR exploration scale (Song et al. 2010)
    gamma: float = 0.21  # EPR exploration decay with the number of distinct places (Song et al.)
    jump_beta: float = 1.75  # truncated power-law exponent of jump lengths (González et al. 2008)
    jump_r0_km: float = 0.1  # power-law offset, scaled down from 1.5 km to a district
    jump_cutoff_km: float = 1.0  # exponential cut-off kappa: jumps rarely exceed the district
    worker_share: float = 0.7  # agents with a work anchor (the rest have only free days)
    commuter_share: float = 0.4  # of workers: live outside the area, arrive by public transport
    commuter_free_day_share: float = 0.3  # chance a commuter comes into the area on a free day
    day_off_share: float = 0.05  # chance a worker's weekday is a free day (leave, sickness)
    activity_sd: float = 0.35  # log-normal spread of agents' activity levels (heterogeneity)
    home_jitter_m: float = 60.0  # homes are private addresses: jittered around a POI

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.days < 1:
            raise InputDataError(f"SyntheticConfig: n_users ({self.n_users}) and days ({self.days}) must be >= 1.")
        for name in ("rho", "worker_share", "commuter_share", "commuter_free_day_share", "day_off_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputDataError(f"SyntheticConfig.{name} = {value}: use a share between 0 and 1.")
        if self.gamma < 0 or self.jump_beta <= 0 or self.jump_r0_km <= 0 or self.jump_cutoff_km <= 0:
            raise InputDataError("SyntheticConfig: gamma must be >= 0 and jump_beta, jump_r0_km, "
                                 "jump_cutoff_km > 0.")
        if self.activity_sd < 0 or self.home_jitter_m < 0:
            raise InputDataError("SyntheticConfig: activity_sd and home_jitter_m must be >= 0.")
        try:
            pd.Timestamp(self.start)
            ZoneInfo(self.timezone)
        except Exception as exc:  # noqa: BLE001 - re-raised as our error with the fix
            raise InputDataError(f"SyntheticConfig: start {self.start!r} / timezone {self.timezone!r} "
                                 "not understood; use e.g. '2024-10-07' and an IANA name such as "
                                 "'Europe/Helsinki'.") from exc


def generate_trajectories(pois: pd.DataFrame, *, config: SyntheticConfig | None = None) -> pd.DataFrame:
    """Simulate ``config.n_users`` agents for ``config.days`` days over the POIs of ``pois``.

    Parameters
    ----------
    pois
        POI frame (``lat``, ``lon``, ``category`` as written by :func:`trajmoe.pois.offline.read_pois`). Row ``i``
        becomes location ``poi{i:05d}``, so keep the table's order to reproduce a sample.
    config
        Model parameters; ``None`` means the defaults that generate the shipped sample.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TRAJECTORY_COLUMNS`, one row per visit, sorted by user then time.
        ``timestamp`` is an ISO-8601 string with the local UTC offset; consecutive visits of a
        user are always to different locations.
    """
    config = config or SyntheticConfig()
    table = _check_pois(pois)
    rng = np.random.default_rng(config.seed)
    n_poi = len(table)
    poi_cat = table["category"].map({c: i for i, c in enumerate(CATEGORIES)}).to_numpy()
    lat0, lon0 = float(table["lat"].mean()), float(table["lon"].mean())
    poi_xy = _to_km(table["lat"].to_numpy(), table["lon"].to_numpy(), lat0, lon0)

    agents = _draw_agents(rng, config, poi_cat, poi_xy)
    n = config.n_users
    # Location index space: 0..n_poi-1 are POIs, n_poi + u is agent u's private home.
    counts = np.zeros((n, n_poi + n), dtype=np.int32)  # visits per agent and location (EPR memory)
    counts[np.arange(n), agents.home] = 1  # agents start the simulation at home
    current = agents.home.copy()
    cat_weights = {a: _category_weights(w, poi_cat) for a, w in ACTIVITIES.items()}
    jump_grid, jump_cdf = _jump_cdf(config, poi_xy)

    out_user, out_loc, out_day, out_hour = [], [], [], []
    start = pd.Timestamp(config.start)
    for day in range(config.days):
        weekday = (start + pd.Timedelta(days=day)).day_of_week
        weekend_night = weekday in (4, 5)  # Friday and Saturday nights out
        work_day = agents.worker & (weekday < 5) & (rng.random(n) >= config.day_off_share)
        present = work_day | ~agents.commuter | (rng.random(n) < config.commuter_free_day_share)
        active_today = np.zeros(n, dtype=bool)
        prev_active = np.zeros(n, dtype=bool)
        prev_h = np.full(n, 5.5)
        for k in range(len(WORK_DAY)):
            slot_w, slot_f = WORK_DAY[k], FREE_DAY[k]
            hours = np.where(work_day, _arrival(rng, slot_w, n), _arrival(rng, slot_f, n))
            chance = np.where(work_day, _chance(slot_w, weekend_night), _chance(slot_f, weekend_night))
            # Optional slots scale with the agent's activity level; anchors (chance 1) do not.
            chance = np.where(chance < 1.0, np.minimum(chance * agents.activity, 1.0), chance)
            on = present & (rng.random(n) < chance)
            if slot_w.after_previous:  # back to work only after a lunch away
                on = np.where(work_day, present & prev_active, on)
                hours = np.where(work_day, prev_h + rng.uniform(0.5, 1.0, n), hours)
            if slot_f.activity == "home":  # last slot: home once the day had anything else
                on = present & active_today
                hours = np.where(work_day, np.maximum(hours, prev_h + rng.uniform(0.3, 1.0, n)),
                                 prev_h + rng.uniform(0.3, 1.5, n))
            hours = np.maximum(hours, prev_h + 0.25)  # one visit at a time, >= 15 min apart
            on &= hours <= LATEST_H
            dest = np.full(n, -1)
            for activity in dict.fromkeys((slot_w.activity, slot_f.activity)):  # fixed order
                who = np.flatnonzero(on & (np.where(work_day, slot_w.activity, slot_f.activity) == activity))
                if who.size == 0:
                    continue
                if activity == "work":
                    dest[who] = agents.work[who]
                elif activity == "home":
                    dest[who] = agents.home[who]
                else:
                    dest[who] = _epr_step(rng, config, who, current, counts, cat_weights[activity],
                                          poi_cat, poi_xy, agents.home_xy, jump_grid, jump_cdf)
            moved = np.flatnonzero(on)
            counts[moved, dest[moved]] += 1
            current[moved] = dest[moved]
            out_user.append(moved)
            out_loc.append(dest[moved])
            out_day.append(np.full(moved.size, day))
            out_hour.append(hours[moved])
            active_today |= on & (k < len(WORK_DAY) - 1)
            prev_active = on
            prev_h = np.where(on, hours, prev_h)

    frame = _assemble(config, table, agents, np.concatenate(out_user), np.concatenate(out_loc),
                      np.concatenate(out_day), np.concatenate(out_hour))
    log.info("synthetic population: %d agents, %d visits over %d days", n, len(frame), config.days)
    return frame


class _Agents(NamedTuple):
    home: np.ndarray  # (n,) location index of the home (a private location or a transport POI)
    home_xy: np.ndarray  # (n, 2) km coordinates of private homes
    work: np.ndarray  # (n,) POI index of the work place, -1 without one
    worker: np.ndarray  # (n,) bool
    commuter: np.ndarray  # (n,) bool: "home" is the transport stop they arrive at
    activity: np.ndarray  # (n,) multiplier of optional slot probabilities


def _draw_agents(rng: np.random.Generator, config: SyntheticConfig, poi_cat: np.ndarray,
                 poi_xy: np.ndarray) -> _Agents:
    n, n_poi = config.n_users, len(poi_cat)
    worker = rng.random(n) < config.worker_share
    transport = np.flatnonzero(poi_cat == CATEGORIES.index("transport"))
    commuter = worker & (rng.random(n) < config.commuter_share) & (transport.size > 0)
    # Residents live near where POIs are dense (every POI is a draw of equal weight, residential
    # ones count 10x): homes concentrate in busy blocks like population does. A private home is
    # its own location, jittered around the drawn POI so that no two agents share a door.
    base = np.where(poi_cat == CATEGORIES.index("residential"), 10.0, 1.0)
    anchor = rng.choice(n_poi, size=n, p=base / base.sum())
    jitter = rng.normal(0.0, config.home_jitter_m / 1000.0, size=(n, 2))
    lo, hi = poi_xy.min(axis=0), poi_xy.max(axis=0)
    home_xy = np.clip(poi_xy[anchor] + jitter, lo, hi)
    home = n_poi + np.arange(n)
    if transport.size:
        home[commuter] = rng.choice(transport, size=int(commuter.sum()))
    work_w = np.array([WORK_WEIGHTS.get(CATEGORIES[c], 0.0) for c in poi_cat])
    if work_w.sum() == 0:
        work_w = np.ones(n_poi)
    work = np.where(worker, rng.choice(n_poi, size=n, p=work_w / work_w.sum()), -1)
    activity = np.exp(rng.normal(-config.activity_sd**2 / 2, config.activity_sd, n))  # mean 1
    return _Agents(home, home_xy, work, worker, commuter, activity)


def _epr_step(rng: np.random.Generator, config: SyntheticConfig, who: np.ndarray,
              current: np.ndarray, counts: np.ndarray, weights: np.ndarray, poi_cat: np.ndarray,
              poi_xy: np.ndarray, home_xy: np.ndarray, jump_grid: np.ndarray,
              jump_cdf: np.ndarray) -> np.ndarray:
    """One exploration-or-return choice for the agents ``who``; returns their POI indices."""
    n_poi = len(poi_cat)
    seen = counts[who, :n_poi]  # (W, P) past visits to POIs (private homes are not EPR targets)
    n_distinct = (counts[who] > 0).sum(axis=1)  # S in Song et al.
    fit = weights[poi_cat][None, :] > 0  # (1, P) POIs whose category fits the activity
    not_here = np.arange(n_poi)[None, :] != current[who][:, None]  # (W, P)
    # Preferential return: proportional to visit frequency, among fitting places visited before.
    ret_w = seen * fit * not_here  # (W, P)
    can_return = ret_w.sum(axis=1) > 0
    explore = (rng.random(who.size) < config.rho * n_distinct ** -config.gamma) | ~can_return
    dest = np.empty(who.size, dtype=np.int64)
    if (~explore).any():
        dest[~explore] = _sample_rows(rng, ret_w[~explore])
    if explore.any():
        w = who[explore]
        # Jump: a truncated power-law length in a uniform direction from the current place ...
        origin = np.where((current[w] >= n_poi)[:, None], home_xy[w],
                          poi_xy[np.minimum(current[w], n_poi - 1)])
        length = np.interp(rng.random(w.size), jump_cdf, jump_grid)
        angle = rng.uniform(0.0, 2 * np.pi, w.size)
        target = origin + length[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
        # ... to the nearest not-yet-visited POI of a category drawn for the time of day.
        cat = rng.choice(len(weights), size=w.size, p=weights)
        dist = np.linalg.norm(poi_xy[None, :, :] - target[:, None, :], axis=2)  # (E, P)
        new = (seen[explore] == 0) & not_here[explore]
        dist_cat = np.where(new & (poi_cat[None, :] == cat[:, None]), dist, np.inf)
        # Every POI of that category already visited: any new fitting POI, else any return.
        dist_fit = np.where(new & fit, dist, np.inf)
        dist_any = np.where(not_here[explore], dist, np.inf)
        pick = np.argmin(dist_cat, axis=1)
        none = ~np.isfinite(dist_cat.min(axis=1))
        pick[none] = np.argmin(dist_fit[none], axis=1)
        none &= ~np.isfinite(dist_fit.min(axis=1))
        pick[none] = np.argmin(dist_any[none], axis=1)
        dest[explore] = pick
    return dest


def _sample_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One index per row, drawn with probability proportional to that row's weights."""
    cum = np.cumsum(weights, axis=1, dtype=np.float64)
    u = rng.random(len(weights)) * cum[:, -1]
    return (cum <= u[:, None]).sum(axis=1)


def _category_weights(activity: dict[str, float], poi_cat: np.ndarray) -> np.ndarray:
    """The activity's category mix over CATEGORIES, restricted to categories the table has."""
    present = np.bincount(poi_cat, minlength=len(CATEGORIES)) > 0
    w = np.array([activity.get(c, 0.0) for c in CATEGORIES]) * present
    if w.sum() == 0:  # none of the activity's categories exist here: any POI will do
        w = present.astype(float)
    return w / w.sum()


def _jump_cdf(config: SyntheticConfig, poi_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-CDF table of P(r) ~ (r + r0)^-beta exp(-r / kappa) up to the area's diameter."""
    diameter = float(np.linalg.norm(poi_xy.max(axis=0) - poi_xy.min(axis=0))) + config.jump_r0_km
    grid = np.linspace(0.0, diameter, 2001)
    pdf = (grid + config.jump_r0_km) ** -config.jump_beta * np.exp(-grid / config.jump_cutoff_km)
    cdf = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2)])
    return grid, cdf / cdf[-1]


def _arrival(rng: np.random.Generator, slot: Slot, n: int) -> np.ndarray:
    """Arrival hours of one slot: normal around its typical time, clipped to +- 2.5 sd."""
    return slot.mean_h + slot.sd_h * np.clip(rng.standard_normal(n), -2.5, 2.5)


def _chance(slot: Slot, weekend_night: bool) -> float:
    return slot.prob_weekend_night if weekend_night else slot.prob


def _to_km(lat: np.ndarray, lon: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    """Equirectangular projection around (lat0, lon0): exact enough within a city."""
    x = (lon - lon0) * _KM_PER_DEG_LAT * np.cos(np.radians(lat0))
    y = (lat - lat0) * _KM_PER_DEG_LAT
    return np.column_stack([x, y])


def _check_pois(pois: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("lat", "lon", "category") if c not in pois.columns]
    if missing:
        raise InputDataError(f"POI table lacks column(s) {missing}: read it with trajmoe.pois.offline.read_pois.")
    table = pois.reset_index(drop=True)
    unknown = sorted(set(table["category"]) - set(CATEGORIES))
    if unknown:
        raise InputDataError(f"POI table has categories {unknown[:5]} outside trajmoe.pois.categories."
                             "CATEGORIES: map them with trajmoe.pois.offline.read_pois before simulating.")
    if table.empty or table[["lat", "lon"]].isna().any().any():
        raise InputDataError("POI table is empty or has missing lat/lon: the synthetic population "
                             "needs at least one located POI.")
    return table


def _assemble(config: SyntheticConfig, table: pd.DataFrame, agents: _Agents, user: np.ndarray,
              loc: np.ndarray, day: np.ndarray, hour: np.ndarray) -> pd.DataFrame:
    """Visits -> the trajectory frame: coordinates, ids, categories and local ISO timestamps."""
    n_poi = len(table)
    order = np.lexsort((hour, day, user))
    user, loc, day, hour = user[order], loc[order], day[order], hour[order]
    # A visit to the place one is already at adds nothing (the pipeline collapses it anyway).
    keep = np.ones(user.size, dtype=bool)
    keep[1:] = (user[1:] != user[:-1]) | (loc[1:] != loc[:-1])
    user, loc, day, hour = user[keep], loc[keep], day[keep], hour[keep]

    lat0, lon0 = float(table["lat"].mean()), float(table["lon"].mean())
    private = loc >= n_poi
    poi = np.minimum(loc, n_poi - 1)
    lat = table["lat"].to_numpy()[poi].copy()
    lon = table["lon"].to_numpy()[poi].copy()
    hxy = agents.home_xy[loc[private] - n_poi]
    lat[private] = lat0 + hxy[:, 1] / _KM_PER_DEG_LAT
    lon[private] = lon0 + hxy[:, 0] / (_KM_PER_DEG_LAT * np.cos(np.radians(lat0)))
    location_id = np.where(private, np.char.add("home", np.char.zfill((loc - n_poi).astype(str), 4)),
                           np.char.add("poi", np.char.zfill(loc.astype(str), 5)))
    category = np.where(private, "residential", table["category"].to_numpy(dtype=str)[poi])

    seconds = np.round(hour * 3600).astype(np.int64) + day * 86400
    wall = pd.Timestamp(config.start) + pd.to_timedelta(seconds, unit="s")
    # Wall-clock local times; in the repeated hour when summer time ends, the first (summer)
    # occurrence is meant; a time skipped when it starts is moved forward.
    wall = pd.DatetimeIndex(wall).as_unit("ns")
    local = wall.tz_localize(config.timezone, ambiguous=np.ones(len(wall), bool),
                             nonexistent="shift_forward")
    # Format vectorised (strftime with %z goes row by row): wall-clock text + its UTC offset.
    wall_ns = local.tz_localize(None).as_unit("ns").asi8
    offset_min = (wall_ns - local.as_unit("ns").asi8) // 60_000_000_000
    offset_text = {m: f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}"
                   for m in np.unique(offset_min)}
    timestamp = np.char.add(np.datetime_as_string(wall_ns.astype("datetime64[ns]"), unit="s"),
                            np.vectorize(offset_text.get, otypes=[str])(offset_min))
    return pd.DataFrame({
        "user_id": pd.Series(np.char.add("u", np.char.zfill(user.astype(str), 4))),
        "timestamp": timestamp,
        "lat": np.round(lat, 6),
        "lon": np.round(lon, 6),
        "location_id": location_id,
        "category": category,
    })
