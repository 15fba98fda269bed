"""The command line against the config tree: Hydra's own argument parser, the override grammar, the
jobs a ``-m`` sweep composes, and each job's composition (Hydra's errors as sentences: see
:mod:`tgp.checks.composition`).

The config tree is the one Hydra will use: tgp's ``conf/`` (or ``--config-path`` when absolute),
with ``--config-dir`` in front of it as Hydra puts it, and ``hydra.searchpath`` from the overrides.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from omegaconf import DictConfig

from tgp.checks.composition import check_added_keys, composition_error, one_line, yaml_error
from tgp.errors import ConfigError
from tgp.resources import CONFIG_DIR  # conf/ of a checkout, or the copy inside an installed wheel

MAX_JOBS_COMPOSED = 64  # a sweep with more group-option combinations composes each option once instead


def parse_args(argv: list[str]):
    """Hydra's own command-line parser; None when Hydra should handle the command line alone."""
    import io

    from hydra._internal.utils import get_args_parser

    if "--version" in argv:
        return None
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            args = get_args_parser().parse_args(argv)
    except SystemExit:  # a malformed flag: Hydra prints its usage
        return None
    if args.help or args.hydra_help or args.shell_completion or args.info or args.experimental_rerun:
        return None
    if args.config_path and not os.path.isabs(args.config_path):  # relative to tgp/run.py: Hydra resolves it
        return None
    return args


@contextlib.contextmanager
def hydra_session(args) -> Iterator:
    """Hydra initialized on the config tree this command line composes from; yields its config loader."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import setup_globals
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from hydra.version import setbase

    setbase("1.3")
    setup_globals()
    backup = get_gh_backup()
    search_path = create_config_search_path(args.config_path or CONFIG_DIR)
    if args.config_dir:
        extra = os.path.abspath(args.config_dir)
        if not os.path.isdir(extra):
            raise ConfigError("--config-dir", args.config_dir, f"there is no folder {extra}.",
                              "point --config-dir to a folder of config files (e.g. one with method/<name>.yaml).")
        search_path.prepend(provider="command-line", path=f"file://{extra}", anchor=SearchPathQuery(provider="schema"))
    Hydra.create_main_hydra2(task_name="run", config_search_path=search_path)
    try:
        yield GlobalHydra.instance().config_loader()
    finally:
        restore_gh_from_backup(backup)


def parse_overrides(parser, strings: list[str]) -> list:
    """Hydra's parsed overrides; a string the grammar rejects is one paragraph."""
    from hydra.errors import OverrideParseException

    parsed = []
    for s in strings:
        try:
            parsed.extend(parser.parse_overrides([s]))
        except OverrideParseException as e:
            key, _, value = s.partition("=")
            raise ConfigError(key, value, f"Hydra cannot parse this override ({one_line(e)}).",
                              "quote values with special characters for the shell and for Hydra, e.g. "
                              "\"key='a b'\" or 'key=[1,2]' (grammar: https://hydra.cc/docs/advanced/override_grammar/basic/).") from None
    return parsed


def override_string(o, value: str | None = None) -> str:
    if value is not None:
        return f"{o.get_key_element()}={value}"
    return o.input_line or f"{o.get_key_element()}={o.get_value_element_as_str()}"


def sweep_jobs(overrides: list, loader, multirun: bool) -> list[tuple[list[str], str]]:
    """The override lists to compose: one job, or under ``-m`` the sweep's combinations of group options.

    Swept plain values (``pruning.sparsity=0.5,0.9``) cannot change which keys exist, so only their
    first value is composed (:func:`tgp.checks.values.check_swept_values` types the others); swept group
    options (``method=tgp,imp``) can, so their combinations are composed (each option once if there are
    more than ``MAX_JOBS_COMPOSED``). Each job comes with a label naming its swept group options ("" when
    nothing is swept).
    """
    import itertools

    if not multirun:
        return [([override_string(o) for o in overrides], "")]
    base, group_sweeps = [], []
    for i, o in enumerate(overrides):
        if not o.is_sweep_override():
            base.append(override_string(o))
            continue
        if not o.is_discrete_sweep():
            return []  # interval sweeps are for other sweepers: Hydra reports them
        values = [override_string(o, v) for v in o.sweep_string_iterator()]
        if not values:
            return []
        base.append(values[0])
        if loader.repository.group_exists(o.key_or_group):
            group_sweeps.append((i, values))
    n = 1
    for _, values in group_sweeps:
        n *= len(values)
    if n <= MAX_JOBS_COMPOSED:
        jobs = []
        for combo in itertools.product(*(values for _, values in group_sweeps)):
            job = list(base)
            for (i, _), s in zip(group_sweeps, combo):
                job[i] = s
            jobs.append((job, ", ".join(combo)))
        return jobs
    jobs = [(base, ", ".join(base[i] for i, _ in group_sweeps))]
    for i, values in group_sweeps:
        jobs += [([*base[:i], s, *base[i + 1:]], s) for s in values[1:]]
    return jobs


def compose_job(config_name: str, job: list[str], parser, loader) -> DictConfig:
    """The job's config with Hydra's node, or the paragraph that says why it does not compose."""
    import yaml
    from hydra import compose
    from hydra.errors import HydraException

    try:
        cfg = compose(config_name=config_name, overrides=job, return_hydra_config=True)
    except yaml.MarkedYAMLError as e:
        raise yaml_error(e) from None
    except HydraException as e:
        raise composition_error(e, config_name, job, parser, loader) from None
    check_added_keys(cfg, config_name, job, parser, loader)
    return cfg
