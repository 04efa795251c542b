"""auditor: find clean-label poisons that distort the implicit bias of state-space models.

The library in one call (heavy modules load on first use, so ``import auditor`` stays light)::

    import auditor
    report = auditor.audit(x, y, x_val=x_val, y_val=y_val)        # or auditor.audit("data.npz")
    report.flagged, report.scores, report.evaluation
    report.save_html("report.html")

:func:`auditor.audit` is :func:`auditor.library.audit`; the engine under it (``run_audit``,
``build_problem``) is :mod:`auditor.engine`. Bring your own PyTorch model with
:class:`auditor.TorchModel` (see docs/models.md).
"""

__version__ = "0.1.0"

_LAZY = {"audit": "auditor.library", "TorchModel": "auditor.torch_model", "AuditReport": "auditor.library",
         "resolve_model": "auditor.models", "registered_models": "auditor.models"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'auditor' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
