"""A run's workdir at start-up: its saved config (refused when it differs, unless
--override) and every path the run will touch, checked before anything compiles."""

from __future__ import annotations

import json

import jax

from imagen_jax import config as config_lib
from imagen_jax import storage


class ConfigMismatchError(ValueError):
    """The workdir holds a run made with another config."""


def check_workdir_config(config, workdir: str, override: bool) -> None:
    """Refuse a workdir whose saved config.json differs from `config` unless `override`;
    write config.json (process 0) for a new run or an accepted override."""
    path = storage.path(workdir) / "config.json"
    given = config_lib.upgrade_saved_config(config)  # both sides read alike
    if path.exists():
        saved = config_lib.upgrade_saved_config(json.loads(path.read_text()))
        diff = config_lib.config_diff(saved, given)
        if diff and not override:
            raise ConfigMismatchError(
                f"{workdir} holds a run with another config ({len(diff)} difference(s)):\n  "
                + "\n  ".join(diff[:20])
                + "\nUse another --workdir, or pass --override to continue this run with the new config."
            )
        if not diff:
            return
    if jax.process_index() == 0:
        storage.write_text(path, json.dumps(given, indent=2, sort_keys=True))


def check_storage(config, workdir: str) -> None:
    """Every path the run will touch, checked at start-up before any compile (storage.StorageError
    names the path and the fix): the workdir is writable; the dataset's folder (writable when
    the run may write its embedding cache there), a given embedding cache, `init_from` and a T5
    directory are readable; datasets and caches on gs:// have their mount."""
    from imagen_jax.data.sources import resolve_data_dir

    storage.check_access(workdir, write=True)
    data_dir = resolve_data_dir(config.data.data_dir or None)
    # The embedding cache is written beside the dataset, by every process, when it is missing.
    own_cache = not config.data.text_embedding_dir and config.data.get("text", "embedding") == "embedding"
    storage.check_access(data_dir, write=own_cache)
    storage.local_view(data_dir)
    if config.data.text_embedding_dir:
        storage.check_access(config.data.text_embedding_dir, write=False)
        storage.local_view(config.data.text_embedding_dir)
    for source in (config.train.get("init_from"), config.text.encoder):  # local ones: only the scheme
        if source:
            storage.check_access(source, write=False)
