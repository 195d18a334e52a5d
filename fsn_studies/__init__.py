"""The FSN-vs-transformer training studies: the tools that run and read them and their results.

* ``fsn-compare`` (:mod:`fsn_studies.compare`): FSN, its ablations and the transformer on the
  same data, budget and seeds;
* ``fsn-sweep`` (:mod:`fsn_studies.sweep`): tuning trials x seeds at one budget;
* ``python -m fsn_studies.corpora``: build the English corpora from Debian packages;
* ``python -m fsn_studies.diagnose_runs`` / ``python -m fsn_studies.record_runs``: read run
  directories (loss by position and copy depth; curves of finished or stopped runs);
* ``results/``: the studies' result files and write-ups (``fsn_studies/README.md`` is their
  front page). Not installed with the package.

Every tool writes under the current working directory (``runs/...`` by default), never into
the installed package.
"""
