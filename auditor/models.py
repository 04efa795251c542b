"""The model registry: which student an audit retrains in every trial.

A *model* turns a data set and an audit configuration into a :class:`auditor.trials.Problem`
(the one interface the audit engine and the executors talk to). Models come from three
places, looked up in this order:

1. the built-ins: ``ssm`` (the paper's standalone diagonal SSM, setting B; several
   channels or outputs widen it to the multi-input, multi-output SSM of :mod:`auditor.mimo`),
   ``network`` (the SSM followed by a ReLU MLP, setting C, one channel and one output),
   both regression students, and ``s4d`` (the
   deep S4D classifier of :mod:`auditor.deep_problem`);
2. installed packages' entry points in the group ``auditor.models``
   (``[project.entry-points."auditor.models"] mymodel = "mypkg.models:factory"``);
3. ``module:attr`` strings, resolved by import (the library and the command line; a
   service refuses them, see ``allow_import``).

What a name resolves to may be a *builder* (any object with a method
``problem(dataset, config) -> Problem``, such as :class:`auditor.TorchModel`), or a plain
callable ``seed -> torch.nn.Module``, which is wrapped in ``TorchModel(factory)`` with its
documented defaults.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

ENTRY_POINT_GROUP = "auditor.models"
BUILTIN = ("ssm", "network", "s4d")
REGRESSION_BUILTINS = ("ssm", "network")    # the paper's students; classification sets get s4d instead
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
NAME = re.compile(r"^[A-Za-z0-9][\w.\-]{0,99}$")


class ModelError(ValueError):
    """A model name that does not resolve; the message says why, in one line."""


@runtime_checkable
class ModelBuilder(Protocol):
    """Anything that builds the audit problem of a data set."""

    def problem(self, dataset, config):
        """The :class:`auditor.trials.Problem` whose trials train this model on ``dataset``."""


@dataclass(frozen=True)
class Builtin:
    """A built-in student: ``build(dataset, config) -> Problem``."""

    name: str
    description: str
    build: Callable[[Any, Any], Any]

    def problem(self, dataset, config):
        return self.build(dataset, config)


# --------------------------------------------------------------------------- built-ins


def _student(config):
    """The paper's student that ``config.model`` names (``ssm`` or ``network``): its
    architecture and initialization (:class:`auditor.ssm.SSMSpec`) and its optimizer and
    stopping rule (:class:`auditor.train.TrainConfig`)."""
    from auditor.ssm import SSMSpec
    from auditor.train import TrainConfig

    if config.model == "network":
        spec = SSMSpec(state_dim=config.state_dim, sigma_a=0.01, sigma_b=0.01, sigma_c=0.01,
                       offset=0.001, width=15, sigma_mlp=0.03)
        train = TrainConfig(optimizer="adam", lr=0.01, eps=0.01, extra_steps=1000, max_steps=config.max_steps)
    else:
        spec = SSMSpec(state_dim=config.state_dim, sigma_a=1e-3)
        train = TrainConfig(optimizer="gd", lr=0.01, eps=0.01, extra_steps=3000, max_steps=config.max_steps)
    return spec, train


def _regression_problem(dataset, config):
    """The paper's SSM students (``ssm`` or ``network``, by ``config.model``), trained on the
    data divided by its scales (:func:`data_scales`).

    One channel and one output (x (n, k) or (n, k, 1), y (n,) or (n, 1)): the student of
    :mod:`auditor.trials` (closed-form gradients). Several channels or outputs (``ssm``
    only): the same student widened to B (d, c) and C (m, d) (:mod:`auditor.mimo`), trained
    by :class:`auditor.TorchModel` with the same optimizer and stopping rule; its audit
    needs the trusted reference set.
    """
    from dataclasses import replace

    from auditor.data import DatasetError, check_auditable
    from auditor.trials import AuditProblem

    if dataset.task != "regression":
        raise DatasetError("the paper's students take float regression labels y (n,) or (n, outputs); "
                           f"got y {dataset.y.shape} {dataset.y.dtype}")
    spec, train = _student(config)
    x_scale, y_scale = data_scales(dataset.x, dataset.y)
    scaled = lambda v, s: None if v is None else v / s                      # noqa: E731
    dataset = replace(dataset, x=dataset.x / x_scale, y=dataset.y / y_scale, x_val=scaled(dataset.x_val, x_scale),
                      y_val=scaled(dataset.y_val, y_scale))
    channels, outputs = dataset.channels, 1 if dataset.y.ndim == 1 else int(dataset.y.shape[1])
    if channels == 1 and outputs == 1:
        x_val = None if dataset.x_val is None else dataset.x_val.reshape(dataset.x_val.shape[:2])
        y_val = None if dataset.y_val is None else dataset.y_val.reshape(-1)
        return AuditProblem(x=dataset.x.reshape(dataset.x.shape[:2]), y=dataset.y.reshape(-1), x_val=x_val,
                            y_val=y_val, spec=spec, train=train, device=config.device,
                            x_scale=x_scale, y_scale=y_scale)
    if spec.is_network:
        raise DatasetError(f"the network student reads one channel into one output; got x {dataset.x.shape}, "
                           f"y {dataset.y.shape} (use the ssm student)")
    from auditor.mimo import mimo_model

    check_auditable(dataset)                    # the reference set it is measured on
    return mimo_model(spec, train, channels=channels, outputs=outputs).problem(dataset, config)


def data_scales(x, y) -> tuple[float, float]:
    """The RMS of the training inputs and of the training labels (1 where it is 0).

    The regression students train on x / x_scale and y / y_scale (the reference set scaled
    by the same scalars), so that data of any scale meets the same initialization, step
    size and fitting threshold (``eps`` is an absolute mean squared error: with labels x100
    no model reached it). Only scalars, and no shift, are used, so every function of the
    student stays one of the student's functions: the SSM is linear in x and in y
    (scaling y by s scales C by s, scaling x by s scales B by 1/s), and the ``network``
    student's ReLU MLP has no biases, so it is positively homogeneous and positive scalars
    move through it in the same way. The trusted-set relative error ||y_hat - y|| / ||y|| is
    unchanged when y_hat and y are scaled alike, and the screens rank the same examples.
    """
    import numpy as np

    rms = lambda v: float(np.sqrt(np.mean(np.square(v, dtype=np.float64))))   # noqa: E731
    return tuple(s if s > 0 and np.isfinite(s) else 1.0 for s in (rms(x), rms(y)))


def _deep_problem(dataset, config):
    from auditor.deep_problem import build_deep_problem

    return build_deep_problem(dataset, config)


BUILTINS: dict[str, Builtin] = {
    "ssm": Builtin("ssm", "the paper's standalone diagonal SSM (setting B), normalized gradient descent; "
                   "several channels or outputs widen B and C",
                   _regression_problem),
    "network": Builtin("network", "the SSM followed by a ReLU MLP (setting C), Adam", _regression_problem),
    "s4d": Builtin("s4d", "deep S4D classifier (integer labels), mini-batch Adam", _deep_problem),
}


# --------------------------------------------------------------------------- lookup


def entry_point_names() -> list[str]:
    """Names registered by installed packages in the ``auditor.models`` group."""
    return sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})


def registered_models() -> dict[str, str]:
    """Every name a service may ask for: built-ins and entry points, name -> where it comes from."""
    out = {name: b.description for name, b in BUILTINS.items()}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        out.setdefault(ep.name, f"entry point {ep.value}")
    return out


def is_import_path(name: str) -> bool:
    """Whether ``name`` has the ``module:attr`` form (``pkg.mod:obj`` or ``pkg.mod:Class.attr``)."""
    return bool(IMPORT_PATH.match(name))


def check_model_name(name: str, *, allow_import: bool = True) -> str:
    """Check a model name without importing anything; return it.

    Parameters
    ----------
    name : str
        A registered name (built-in or entry point), or ``module:attr``.
    allow_import : bool
        Whether the ``module:attr`` form is allowed. A service that takes names from
        clients passes False: importing a client-chosen module runs its code.

    Raises
    ------
    ModelError
    """
    if not isinstance(name, str):
        raise ModelError(f"a model name is a string, got {type(name).__name__}")
    if name in BUILTINS:
        return name
    if is_import_path(name):
        if not allow_import:
            raise ModelError(f"model {name!r}: only registered models are allowed here "
                             f"({', '.join(registered_models())})")
        return name
    if NAME.match(name) and name in entry_point_names():
        return name
    known = ", ".join(registered_models())
    raise ModelError(f"unknown model {name!r}: use a registered name ({known}) or module:attr")


def resolve_model(name: str, *, allow_import: bool = True) -> ModelBuilder:
    """What a model name stands for, as a builder of audit problems.

    Parameters
    ----------
    name : str
        A built-in (``ssm``, ``network``, ``s4d``), an entry point of the ``auditor.models``
        group, or (with ``allow_import``) ``module:attr``.
    allow_import : bool
        False refuses ``module:attr`` (for names that come from a service's clients).

    Returns
    -------
    ModelBuilder
        ``builder.problem(dataset, config)`` builds the audit's problem.

    Raises
    ------
    ModelError
        An unknown name, a module that does not import, an attribute that is missing, or an
        object that is neither a builder nor a callable.
    """
    check_model_name(name, allow_import=allow_import)
    if name in BUILTINS:
        return BUILTINS[name]
    if is_import_path(name):
        obj = _import(name)
    else:
        ep = next(ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name)
        try:
            obj = ep.load()
        except Exception as exc:          # noqa: BLE001 - any failure of a third-party import
            raise ModelError(f"model {name!r}: entry point {ep.value} failed to load: {exc}") from exc
    return as_builder(obj, name=name)


def as_builder(obj: Any, *, name: str = "model") -> ModelBuilder:
    """``obj`` as a builder: builders pass through, a callable ``seed -> nn.Module`` is wrapped
    in :class:`auditor.TorchModel` with its defaults."""
    if isinstance(obj, ModelBuilder):
        return obj
    if callable(obj):
        from auditor.torch_model import TorchModel

        return TorchModel(obj)
    raise ModelError(f"model {name!r} is a {type(obj).__name__}: expected a TorchModel, an object with "
                     "problem(dataset, config), or a callable seed -> torch.nn.Module")


def _import(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:              # noqa: BLE001 - report any import failure in one line
        raise ModelError(f"model {path!r}: cannot import {module_name}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelError(f"model {path!r}: {module_name} has no attribute {attr}") from None
    return obj


def model_for(dataset, config, *, allow_import: bool = True) -> ModelBuilder:
    """The model an audit of ``dataset`` under ``config`` trains.

    Classification data (integer labels) gets the deep classifier ``s4d`` while the config
    names one of the paper's regression students (``ssm``, the default, or ``network``);
    any other name is used as given. A service passes ``allow_import=False``: its configs
    come from clients, and only registered models may run there.
    """
    name = config.model
    if dataset.task == "classification" and name in REGRESSION_BUILTINS:
        name = "s4d"
    return resolve_model(name, allow_import=allow_import)
