"""In: checked visits (trajectories/) and POIs (pois/); a prepared city folder on disk.
Out: CityData, one run's subset (windows, per-cell features, validation targets) and the Batch tensors models read.
"""
