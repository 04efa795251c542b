"""auditor: find clean-label poisons that distort the implicit bias of state-space models.

The library in one call (heavy modules load on first use, so ``import auditor`` stays light)::

    import auditor
    report = auditor.audit(x, y, x_val=x_val, y_val=y_val)  # or auditor.audit("data.npz"), .csv, .parquet
    report.flagged, report.scores, report.evaluation
    report.save_html("report.html")

``auditor.audit`` is also the module :mod:`auditor.audit` (``run_audit``, ``build_problem``):
calling it runs :func:`auditor.library.audit`. Bring your own PyTorch model with
:class:`auditor.TorchModel` (see docs/models.md).
"""

import sys
import types

__version__ = "0.1.0"

_LAZY = {"TorchModel": "auditor.torch_model", "AuditReport": "auditor.library",
         "resolve_model": "auditor.models", "registered_models": "auditor.models"}


class _CallableModule(types.ModuleType):
    """:mod:`auditor.audit`, callable as :func:`auditor.library.audit`."""

    def __call__(self, *args, **kwargs):
        from auditor.library import audit

        return audit(*args, **kwargs)


class _Package(types.ModuleType):
    """The package: its submodule ``audit`` becomes callable as it is imported."""

    def __setattr__(self, name, value):
        if name == "audit" and isinstance(value, types.ModuleType) and not isinstance(value, _CallableModule):
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name):
    if name == "audit":
        import importlib

        return importlib.import_module("auditor.audit")
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'auditor' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | {"audit"})
