"""Plugins: a Python file or importable module that calls the public ``register_*`` functions.

``load`` imports each plugin once. A plugin file's folder is on ``sys.path`` while it imports
(and after), so it can import the modules beside it (``from my_layers import Block``). Every
entry a plugin registers remembers the plugin as its origin, and a run config that names such
an entry gets ``plugin_hash``, a hash of the source of exactly the plugins it uses and of the
modules beside them that they imported (``hash_for``): a record made with older plugin code,
or with an older version of a module it imports, is never reused for new code, and configs
that use no plugin keep their ids.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from vgbench import registry

_LOADED: dict[str, str] = {}   # plugin key -> sha256 of its source and its local modules'
_SOURCE: dict[str, str] = {}   # plugin key -> sha256 of its own source


class PluginError(ValueError):
    """A plugin could not be found, imported or registered."""


def _source_of_module(name: str) -> tuple[str, bytes]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise PluginError(f"plugin {name!r}: no such file or importable module")
    return name, Path(spec.origin).read_bytes() if Path(spec.origin).exists() else name.encode()


def is_path(ref: str) -> bool:
    """Whether a plugin reference names a file (else an importable module)."""
    return ref.endswith(".py") or "/" in ref or "\\" in ref


def resolve(ref: str, *, base: Path | None = None) -> str:
    """A plugin reference as its key: a file's absolute path (relative to ``base``), or the
    module name."""
    if not is_path(ref):
        return ref
    path = Path(ref).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(path.resolve())


def load_one(ref: str, *, base: Path | None = None, where: str = "plugins") -> str:
    """Import one plugin (a .py path, relative to ``base``, or a module name); return its source hash."""
    if not isinstance(ref, str) or not ref:
        raise PluginError(f"{where}: a plugin must be a non-empty string (a .py path or a module name), "
                          f"got {ref!r}")
    by_path = is_path(ref)
    if by_path:
        path = Path(resolve(ref, base=base))
        if not path.is_file():
            raise PluginError(f"{where}: plugin file {str(path)!r} does not exist")
        key, source = str(path), path.read_bytes()
    else:
        try:
            key, source = _source_of_module(ref)
        except (ImportError, ValueError) as err:
            raise PluginError(f"{where}: plugin {ref!r}: {err}") from None
    digest = hashlib.sha256(source).hexdigest()
    if _SOURCE.get(key) == digest:
        return _LOADED[key]
    if key in _LOADED:
        raise PluginError(f"{where}: plugin {ref!r} changed since it was imported in this process; "
                          "restart to load the new code")
    registry.import_builtins()   # built-in entries must register as vgbench's, not as the plugin's
    registry._ORIGINS.append(key)
    before = set(sys.modules)
    folder = str(Path(key).parent) if by_path else None
    if folder is not None and folder not in sys.path:
        sys.path.insert(0, folder)   # the modules beside the plugin are importable from it
    try:
        if by_path:
            mod_name = "vgbench_plugin_" + hashlib.sha256(key.encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(mod_name, key)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(ref)
    except PluginError:
        raise
    except Exception as err:  # an import error of any kind is the plugin's, and named as such
        raise PluginError(f"{where}: plugin {ref!r} failed to import: {type(err).__name__}: {err}") from err
    finally:
        registry._ORIGINS.pop()
    _SOURCE[key] = digest
    _LOADED[key] = _with_local_modules(digest, key if by_path else None, set(sys.modules) - before)
    return _LOADED[key]


def _with_local_modules(digest: str, plugin_file: str | None, imported: set) -> str:
    """The plugin's digest, combined with the source of each module it imported from its own
    folder (or below): a change to one of them is a change to the plugin. Unchanged where it
    imported none (records made before this rule keep their ids)."""
    if plugin_file is None:
        return digest
    folder = Path(plugin_file).parent.resolve()
    local = []
    for name in sorted(imported):
        origin = getattr(sys.modules.get(name), "__file__", None)
        if not origin or Path(origin).resolve() == Path(plugin_file).resolve():
            continue
        path = Path(origin).resolve()
        if path.suffix == ".py" and path.is_file() and folder in path.parents:
            local.append(f"{path.relative_to(folder).as_posix()}:"
                         f"{hashlib.sha256(path.read_bytes()).hexdigest()}")
    if not local:
        return digest
    return hashlib.sha256((digest + "\n" + "\n".join(local)).encode()).hexdigest()


def load(refs, *, base: Path | None = None, where: str = "plugins") -> str | None:
    """Import plugins in order; return one hash over all their sources (None when there are none)."""
    if isinstance(refs, str) or not isinstance(refs, (list, tuple)):
        raise PluginError(f"{where}: plugins must be a list of file paths or module names, got {refs!r}")
    digests = [load_one(r, base=base, where=where) for r in refs]
    if not digests:
        return None
    return hashlib.sha256("".join(digests).encode()).hexdigest()[:16]


# vgbench modules that turn a plugin's code into a model: their source is part of the hash of
# the entries they adapt (a change to how a flax network is probed re-runs its configs)
ADAPTERS = ("vgbench.models.flax_adapter", "vgbench.models.nnx_adapter")


def _adapter_digest(entry) -> str | None:
    module = getattr(getattr(entry, "func", entry), "__module__", None)
    if module not in ADAPTERS or module not in sys.modules:
        return None
    return hashlib.sha256(Path(sys.modules[module].__file__).read_bytes()).hexdigest()


def hash_for(spec) -> str | None:
    """Hash of the source of the plugins whose entries ``spec`` names, and of the vgbench
    adapter that turns an entry's code into a model (:data:`ADAPTERS`); None if it names no
    plugin entry."""
    digests = set()
    for field, reg in registry.axes().items():
        name = getattr(spec, field)
        if name in reg:
            origin = reg.origin(name)
            if origin in _LOADED:
                digests.add(_LOADED[origin])
                adapter = _adapter_digest(reg.get(name))
                if adapter is not None:
                    digests.add(adapter)
    if not digests:
        return None
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()[:16]
