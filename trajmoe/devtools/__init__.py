"""In: the package's own source files, and ../shared/data next to the repository.
Out: the layout check (module sizes, import cycles, stage order) and real datasets for tests and benchmarks.
"""
