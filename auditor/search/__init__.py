"""The audit's search: the statistics its decisions rest on and the confirmation round.

Modules
-------
:mod:`auditor.search.stats`
    Small tests and intervals valid for a handful of seeds whose errors are bimodal (a
    trained model lands in a good or a bad basin): the paired sign-flip permutation test and
    the interval it inverts to, multiplicity corrections (Holm, Benjamini-Hochberg), the
    Clopper-Pearson interval, and named random streams.
:mod:`auditor.search.confirm`
    The confirmation round every strategy ends with (:func:`auditor.search.confirm.confirm`).

The strategies themselves still live in :mod:`auditor.strategies`.
"""
