"""tgp — teacher-guided one-shot pruning with context-aware KD, and the methods it is compared with."""

__version__ = "0.1.0"
