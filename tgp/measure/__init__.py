"""What a run measures while it runs: FLOPs and model size (:mod:`.flops`), effective sparsity
(:mod:`.connectivity`), the job's training cost fields (:mod:`.cost`) and the run's ``metrics.json``
row with its console summary (:mod:`.summary`).

The after-the-fact sweep report (:mod:`tgp.report`) reads what these write; it never imports them
for a computation that needs a network.
"""
