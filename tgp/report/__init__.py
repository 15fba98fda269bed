"""The sweep report: reads the jobs' metrics rows (``metrics.json``) of sweep folders, aggregates them over
seeds and writes tables and plots. It imports nothing that trains or runs a method; what it needs
to know about a run is in the run's row (:mod:`tgp.measure.summary`)."""
