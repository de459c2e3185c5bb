"""In: a trajectory file (CSV, Parquet, raw Geolife/Gowalla/TSMC), upload bytes, or POIs to simulate over.
Out: a checked visit frame and the ValidationReport of what was kept, reduced and dropped.
"""
