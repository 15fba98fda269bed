"""tgp's Hydra launcher plugin: ``hydra/launcher=node`` runs a multirun's jobs concurrently on this
machine, K at a time, each job in a fresh process that sees only its own GPU(s) (or CPU cores).

It lives under the ``hydra_plugins`` namespace package because Hydra instantiates launchers from
there only. Importing it is cheap (no torch, no submitit): Hydra imports every plugin module at start.
"""
