"""In: a city's cell features (CityTensors) and a Batch of visit sequences.
Out: next-cell scores over the city's candidate cells, router probabilities and auxiliary losses.
"""
