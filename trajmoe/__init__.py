"""TrajMoE: a spatially-aware mixture-of-experts next-location model for every city.

In: a trajectory file (check-ins, GPS fixes, trips, bike-share) and the city's POIs. Out: next-place
predictions, origin -> destination flows, expert-routing maps and what-if changes, for planners.
Data flows one way through stage subpackages (``python -m tools.layout`` checks it)::

    trajectories/   read and check a trajectory file -> visits + a report of what was kept
    pois/           OpenStreetMap online (OSMnx) or offline files -> POIs in 20 categories
    city/           prepare a city folder; CityData; the run subset; per-cell features; tensors
    model/          spatial semantic encoder + SAMoE Transformer + retrieval head
    train/          fit, calibrate, evaluate, baselines, checkpoints, the fine-tune service
    analysis/       predictions, flows, zones, expert routing, scenarios, the privacy rule
    cli.py          the ``trajmoe`` command
"""

__version__ = "0.1.0"
