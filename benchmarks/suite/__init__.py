"""The staged, time-boxed GPU suite: its plan (``plan``), driver (``run``), result records
(``records``) and summary (``summary``). Entry point: ``benchmarks/run_gpu_suite.sh``."""
