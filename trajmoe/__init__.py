"""TrajMoE: a spatially-aware mixture-of-experts next-location model for every city.

Data flows one way through flat, one-concern modules::

    trajectories.py / importers.py / kinds.py   read, validate, reduce to visits
    categories.py / pois.py                     OSM and POI tables -> functional categories
    features.py                                 per-cell location features (POI + visit patterns)
    dataset.py                                  prepare a city folder; splits, windows, targets
    model.py / moe.py                           spatial semantic encoder + SAMoE transformer
    baselines.py                                most-popular, Markov, return+gravity, GRU, dense
    train.py / metrics.py / checkpoint.py       pretrain, fine-tune, evaluate, safe weights
    flows.py                                    predicted flows, expert routing, privacy rule
    cli.py                                      the `trajmoe` command
"""

__version__ = "0.1.0"
