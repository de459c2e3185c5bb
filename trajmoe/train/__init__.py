"""In: prepared cities (CityData) and their run subsets, a model (new, or from a checkpoint).
Out: trained and fine-tuned models, test and validation metrics, safe checkpoints.
"""
