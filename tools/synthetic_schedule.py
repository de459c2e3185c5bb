"""The day of a synthetic agent: activity slots, their category mix, and where jobs are.

Hand-set tables read by :mod:`tools.synthetic` (TimeGeo-like structure with a
fixed slot table instead of fitted circadian rates); changing them changes the shipped sample.
"""

from __future__ import annotations

from typing import NamedTuple

# Category mix of each activity a slot can hold (relative weights; categories absent from the
# POI table are dropped and the rest renormalised). Hand-set, not fitted: they follow the broad
# category-by-hour shape of Foursquare check-ins (food at lunch, nightlife late; Yang et al.,
# IEEE TSMC 2015) so that the app's per-hour views show a recognisable rhythm.
ACTIVITIES: dict[str, dict[str, float]] = {
    "coffee": {"food_drink": 0.85, "grocery": 0.10, "transport": 0.05},
    "lunch": {"food_drink": 0.80, "grocery": 0.10, "retail": 0.05, "parks_leisure": 0.05},
    "errand": {
        "grocery": 0.30, "retail": 0.30, "personal_services": 0.10, "health": 0.08,
        "food_drink": 0.08, "public_service": 0.05, "transport": 0.05, "automotive": 0.02,
        "office_work": 0.02,
    },
    "daytime": {
        "retail": 0.24, "food_drink": 0.20, "parks_leisure": 0.14, "culture_tourism": 0.12,
        "grocery": 0.10, "sport": 0.06, "health": 0.04, "personal_services": 0.04,
        "entertainment": 0.03, "religion": 0.02, "education": 0.01,
    },
    "evening": {
        "food_drink": 0.35, "nightlife": 0.22, "entertainment": 0.14, "sport": 0.12,
        "culture_tourism": 0.07, "parks_leisure": 0.10,
    },
    "late": {"nightlife": 0.75, "food_drink": 0.20, "entertainment": 0.05},
}

# Where jobs are: relative weight of a POI of each category as a work place. Weighting POIs
# (not categories) makes work places follow the density of job-like POIs (offices, schools, ...).
WORK_WEIGHTS: dict[str, float] = {
    "office_work": 4.0, "education": 3.0, "public_service": 3.0, "health": 2.0, "retail": 1.0,
    "grocery": 1.0, "food_drink": 1.0, "accommodation": 1.0, "culture_tourism": 0.5,
    "entertainment": 0.5, "personal_services": 0.5, "transport": 0.3, "industrial": 2.0,
}


class Slot(NamedTuple):
    """One activity slot of a day: what, when, and how likely."""

    activity: str  # "work", "home", or a key of ACTIVITIES
    mean_h: float  # typical arrival time, hours after the day's midnight (> 24: after midnight)
    sd_h: float  # spread of the arrival time
    prob: float  # chance the slot happens (before the agent's activity multiplier)
    prob_weekend_night: float  # chance on Friday and Saturday (evening/late slots go up)
    after_previous: bool = False  # happens iff the slot before did, 30-60 min after it


# A work day of an employed agent (Mon-Fri): maybe a coffee on the way, at work by ~8:30, lunch
# near work and back, maybe an errand and evening leisure, home. Both tables have the same length:
# slot k of every agent is simulated at the same step.
WORK_DAY: tuple[Slot, ...] = (
    Slot("coffee", 7.7, 0.4, 0.25, 0.25),
    Slot("work", 8.5, 0.6, 1.0, 1.0),
    Slot("lunch", 11.8, 0.4, 0.7, 0.7),
    Slot("work", 0.0, 0.0, 1.0, 1.0, after_previous=True),
    Slot("errand", 17.0, 0.6, 0.35, 0.35),
    Slot("evening", 19.3, 1.0, 0.20, 0.40),
    Slot("late", 22.6, 0.7, 0.03, 0.20),
    Slot("home", 17.4, 0.7, 1.0, 1.0),
)
# A free day (weekend, day off, or an agent without a job): a later start and leisure.
FREE_DAY: tuple[Slot, ...] = (
    Slot("daytime", 10.0, 0.8, 0.35, 0.35),
    Slot("daytime", 11.6, 0.8, 0.35, 0.35),
    Slot("lunch", 12.9, 0.7, 0.40, 0.40),
    Slot("daytime", 14.8, 1.1, 0.50, 0.50),
    Slot("errand", 16.8, 1.0, 0.40, 0.40),
    Slot("evening", 19.0, 1.2, 0.30, 0.45),
    Slot("late", 22.8, 0.8, 0.03, 0.20),
    Slot("home", 0.0, 0.0, 1.0, 1.0),
)
LATEST_H = 27.5  # a night out ends by 03:30; the next day's first slot is never before 05:30
