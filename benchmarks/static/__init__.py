"""Compile-only analysis (no GPU): the flash loops' SASS counts (``sass_loops``) and the
static performance model built on them (``perf_model``)."""
