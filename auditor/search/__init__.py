"""The audit's search: the strategies, the statistics their decisions rest on and the confirmation round.

Modules
-------
:mod:`auditor.search.oracle`
    What a strategy asks and answers: the oracle of stored outcomes (:class:`~auditor.search.oracle.Oracle`),
    the :class:`~auditor.search.oracle.Context` and the :class:`~auditor.search.oracle.Verdict`.
:mod:`auditor.search.plan`
    :func:`~auditor.search.plan.plan`, the pure function the audit loop calls (the next trials, or the
    verdict), the strategies by name and :func:`~auditor.search.plan.resolve` (what ``auto`` picks).
:mod:`auditor.search.group`
    Adaptive group testing: a clean base, each removed example's harm, the harmless put back.
:mod:`auditor.search.core`
    Tests on a small core: each candidate added to a small random core, against controls.
:mod:`auditor.search.baselines`
    Leave-one-out and Banzhaf values over random half-subsets.
:mod:`auditor.search.common`
    What the strategies share: the search order, the prefix search, the controls, the clean
    rule, the rank band and the verdict's confirmation.
:mod:`auditor.search.gate`
    The harm gate the gated strategies begin with (:func:`~auditor.search.gate.harm_gate`).
:mod:`auditor.search.stats`
    Small tests and intervals valid for a handful of seeds whose errors are bimodal (a
    trained model lands in a good or a bad basin): the paired sign-flip permutation test and
    the interval it inverts to, multiplicity corrections (Holm, Benjamini-Hochberg), the
    Clopper-Pearson interval, and named random streams.
:mod:`auditor.search.confirm`
    The confirmation round every strategy ends with (:func:`auditor.search.confirm.confirm`).

The package imports none of its modules: import them by name.
"""
