"""Task metrics beyond top-1: each text task's official metric (:mod:`tgp.metrics.text`)."""
