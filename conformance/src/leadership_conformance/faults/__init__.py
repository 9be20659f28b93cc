"""A randomized fault campaign against a real store, and the checker over its recorded history.

``python -m leadership_conformance.faults <backend> [--duration S] [--seed N] [--cluster]``
(``nox -s faults -- ...``): see :mod:`.campaign` and :mod:`.checker`.
"""
