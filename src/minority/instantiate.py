"""Objects built from config nodes with ``_target_``, restricted to an allow-list of modules.

Every extension point (backbone, data source, guidance term, weight schedule, initialisation
policy, sampler, loggers, callbacks) is a config node whose ``_target_`` names a callable, built
by :func:`instantiate` (Hydra's ``instantiate`` underneath). A target must lie under one of the
allowed prefixes: ``minority`` always, plus the modules listed in the top-level
``allowed_targets`` of the config (a user's own package, a third-party logger). The whole
config is checked before anything runs (:func:`check_targets`), so an override such as
``+foo._target_=os.system`` stops with one sentence even where nothing would build ``foo``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from minority.errors import UserError

DEFAULT_PREFIXES = ("minority",)
TARGET_KEY = "_target_"


def allowed_prefixes(cfg: Any) -> tuple[str, ...]:
    """``minority`` and the config's ``allowed_targets`` (module or dotted-name prefixes)."""
    extra = OmegaConf.select(cfg, "allowed_targets", default=None) if cfg is not None else None
    return DEFAULT_PREFIXES + tuple(str(p).rstrip(".") for p in (extra or ()))


def is_allowed(target: str, prefixes: Sequence[str]) -> bool:
    """Whether dotted ``target`` is one of ``prefixes`` or lies under one of them."""
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def _targets(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(config path, value) of every ``_target_`` in a plain container, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            child_path = f"{path}.{key}" if path else str(key)
            if key == TARGET_KEY:
                yield child_path, value
            else:
                yield from _targets(value, child_path)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _targets(item, f"{path}[{index}]")


def check_targets(node: Any, prefixes: Sequence[str]) -> None:
    """Raise :class:`UserError` for a ``_target_`` in ``node`` outside ``prefixes``."""
    if isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.to_container(node, resolve=False)
    for path, target in _targets(node):
        if not isinstance(target, str) or not is_allowed(target, prefixes):
            raise UserError(
                f"{path}={target!r} is not an allowed target: targets must lie under "
                f"{', '.join(prefixes)}; add its module to allowed_targets to use it."
            )


def instantiate(node: Any, cfg: Any = None, /, **kwargs: Any) -> Any:
    """The object ``node`` describes, with ``kwargs`` passed to its ``_target_``.

    Args:
        node: a config node with ``_target_`` (nested nodes with ``_target_`` are built too).
        cfg: the whole config, for its ``allowed_targets``; None allows ``minority`` only.
        kwargs: arguments the caller supplies (e.g. a diffusion, a sample shape).

    Raises:
        UserError: a target outside the allow-list, or one Hydra cannot build (the reason in
            one sentence).
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    if not isinstance(node, DictConfig):
        node = OmegaConf.create(node)
    require_target(node)
    check_targets(node, allowed_prefixes(cfg))
    try:
        return hydra_instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as error:
        raise UserError(_reason(error, node[TARGET_KEY])) from error


def require_target(node: DictConfig) -> None:
    """Raise :class:`UserError` unless ``node`` names a ``_target_``."""
    if TARGET_KEY not in node:
        raise UserError(f"The config node {OmegaConf.to_yaml(node).strip()!r} has no _target_.")


def _reason(error: Exception, target: str) -> str:
    cause = error.__cause__ or error
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return f"Could not build {target}: {first.rstrip('.')}."
