"""Resolving a run config against the registries: a model's defaults, entry names, plugins.

:mod:`vgbench.spec` is a leaf: it knows a config's fields, their types and ranges, and its
run id. What a config means beyond that is known to the registries: the defaults and checks
of the model it names, which entry names (and options) are valid, which plugin registered an
entry. The registries import ``spec`` (for the field names), so ``spec`` cannot import them
back without an import circle. This module sits above both and installs itself as the
spec's :class:`~vgbench.spec.Resolver`; ``vgbench/__init__.py`` imports it, so it is in place
before any caller can reach ``spec`` (importing ``vgbench.spec`` runs the package first).

Why a resolver that ``spec`` consults rather than a ``make(**fields)`` here that callers use
instead of ``RunSpec(...)``: ``RunSpec(model="rnn")`` taking the rnn model's defaults and
rejecting an unknown name on construction is the public way to build a config, used by the
command line, grid files, plugins, tests and users' scripts alike. A second constructor
would leave every ``RunSpec(...)`` built directly without its model's defaults and unchecked,
a config that quietly means something else. With the resolver, ``RunSpec(...)`` behaves as it
always has and the import graph is still acyclic (``tests/test_imports.py``): ``spec``
depends on nothing above it, only on the functions handed to it.

Importing this module does not import JAX. Resolving a config does: the registries' entries
are JAX functions, registered by the modules that define them, and the valid names are known
only once those modules are imported.
"""

from __future__ import annotations

from typing import Any

from vgbench import plugins, registry, spec


def model_defaults(model: Any) -> dict[str, Any]:
    """The config fields a run of ``model`` takes where its config does not set them; none for
    a name that is no model (the name check then rejects it with the valid names)."""
    from vgbench import models

    return models.model_defaults(model) if isinstance(model, str) and model in models.MODELS else {}


def canonical_names(config) -> dict[str, str]:
    """Every entry name of ``config`` in its canonical form; an unknown name, an unknown option
    or an option of the wrong type raises, naming the field and the valid choices."""
    return {field: reg.canonical(getattr(config, field), field=field)
            for field, reg in registry.axes().items()}


def check(config) -> None:
    """Raise ValueError where the config's fields do not fit its model."""
    from vgbench import models

    models.check_compatible(config)


spec.set_resolver(spec.Resolver(model_defaults=model_defaults, canonical_names=canonical_names,
                                check=check, plugin_hash=plugins.hash_for))
