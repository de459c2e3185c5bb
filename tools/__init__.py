"""Developer tools beside the package, never installed with it (``pip install .`` ships ``trajmoe/`` only).

realdata: ../shared/data for tests and benchmarks; layout: the package layout check
(``python -m tools.layout``); synthetic, synthetic_schedule, synthetic_stats: the mobility model
that generated the embedded sample (``sample_data/regenerate.py``) and its statistical signature.
The scripts of bench/, assets/ and sample_data/ put the repository root on ``sys.path`` to import them.
"""
