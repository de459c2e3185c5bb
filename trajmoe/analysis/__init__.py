"""In: a model and a prepared city.
Out: predictions, flows, zones, routing shares, scenario changes — all after the privacy rule."""
