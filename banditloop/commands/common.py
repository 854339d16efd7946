"""Options and output shared by the sub-commands.

Imported by every command module when the parser is built, so it imports nothing heavy at module
level: ``banditloop --help`` and ``banditloop models`` must start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from banditloop.pipeline.database import default_db_url

if TYPE_CHECKING:
    from banditloop.core.features import FeatureSpec
    from banditloop.pipeline.model import ModelConfig


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


def warn(args: argparse.Namespace, message: str) -> None:
    """One ``banditloop COMMAND: warning: ...`` line on stderr."""
    print(f"banditloop {getattr(args, 'command', None) or ''}: warning: {message}".replace(" :", ":"),
          file=sys.stderr, flush=True)


# -- argument types: bad values are usage errors (one line, exit 2), caught before any work -----------
def _bounded(kind: Callable[[str], Any], lower: float, *, strict: bool) -> Callable[[str], Any]:
    relation = ">" if strict else ">="

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value) or value < lower or (strict and value == lower):
            raise argparse.ArgumentTypeError(f"must be {relation} {lower:g}, got {text}")
        return value

    convert.__name__ = f"{kind.__name__} {relation} {lower:g}"  # argparse names the type in errors
    return convert


#: integer >= 1
positive_int = _bounded(int, 0, strict=True)
#: integer >= 0
non_negative_int = _bounded(int, 0, strict=False)
#: number > 0
positive_float = _bounded(float, 0.0, strict=True)
#: number >= 0
non_negative_float = _bounded(float, 0.0, strict=False)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=None, metavar="URL",
                        help="SQLAlchemy database URL for checkpoints (default: $BANDITLOOP_DB or "
                             "sqlite:///banditloop.db in the current directory); PostgreSQL: "
                             "postgresql+psycopg://USER@HOST/DB with pip install 'banditloop[postgres]'")


def db_url(args: argparse.Namespace) -> str:
    return args.db or default_db_url()


def add_retention_option(parser: argparse.ArgumentParser) -> None:
    from banditloop.pipeline.database import DEFAULT_KEEP

    parser.add_argument("--keep", type=non_negative_int, default=DEFAULT_KEEP, metavar="N",
                        help="keep the newest N versions of each shard, pruned in the same transaction as each "
                             "write (0: keep all)")


def add_overwrite_options(parser: argparse.ArgumentParser, *, resume: str | None) -> None:
    """``--force`` (and ``--resume`` with its help text, when the command can resume)."""
    if resume is not None:
        parser.add_argument("--resume", action="store_true", help=resume)
    parser.add_argument("--force", action="store_true",
                        help="replace an existing --model written from another source or with another learner or "
                             "configuration (its old versions are deleted with the first new one)")


def add_model_options(parser: argparse.ArgumentParser, *, learner_required: bool = True) -> None:
    from banditloop.core.reward import REWARD_KINDS
    from banditloop.operators.registry import LEARNERS
    from banditloop.pipeline.join import JoinConfig

    group = parser.add_argument_group("model")
    group.add_argument("--learner", "--policy", dest="learner", required=learner_required, choices=list(LEARNERS),
                       help="learner (see `banditloop learners`)")
    group.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                       help="learner hyper-parameter, e.g. --param alpha=0.5 (repeatable; values are JSON)")
    group.add_argument("--model", default=None,
                       help="model name in the checkpoint database (default: the learner's name)")
    group.add_argument("--reward", choices=REWARD_KINDS, default="click", help="what counts as reward")
    group.add_argument("--conversion-weight", type=non_negative_float, default=1.0,
                       help="w in click + w·conversion value (--reward click+value)")
    group.add_argument("--click-window", type=positive_float, default=JoinConfig.click_window, metavar="SECONDS",
                       help="a click counts within this long of its impression")
    group.add_argument("--conversion-window", type=positive_float, default=JoinConfig.conversion_window,
                       metavar="SECONDS", help="a conversion counts within this long of its impression")
    group.add_argument("--allowed-lateness", type=non_negative_float, default=JoinConfig.allowed_lateness,
                       metavar="SECONDS", help="how far behind the newest event time an event may arrive")


def add_feature_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("features")
    group.add_argument("--dim", type=positive_int, default=32, help="feature vector length (hashing dimension)")
    group.add_argument("--numeric", default="", metavar="A,B,...",
                       help="numeric context fields given their own slots (no hashing collisions)")
    group.add_argument("--interaction", action="append", default=[], metavar="A:B",
                       help="add the product of two context fields (repeatable)")
    group.add_argument("--shared-dim", type=positive_int, default=64,
                       help="shared (context × arm) features, hybrid-linucb")


def parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--param expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params[key.strip().replace("-", "_")] = value
    return params


def model_config(args: argparse.Namespace, features: FeatureSpec) -> ModelConfig:
    from banditloop.core.features import FeatureSpec
    from banditloop.core.reward import RewardSpec
    from banditloop.operators.registry import learner_class
    from banditloop.pipeline.join import JoinConfig
    from banditloop.pipeline.model import ModelConfig

    params = parse_params(args.param)
    try:
        shared = FeatureSpec(dim=args.shared_dim) if learner_class(args.learner).shared_features else None
        config = ModelConfig(
            learner=args.learner, learner_params=params, features=features, shared_features=shared,
            reward=RewardSpec(kind=args.reward, weight=args.conversion_weight),
            join=JoinConfig(click_window=args.click_window, conversion_window=args.conversion_window,
                            allowed_lateness=args.allowed_lateness))
        config.new_learner()  # reject bad hyper-parameters before any work
    except TypeError as exc:
        cls = learner_class(args.learner)
        raise CommandError(f"bad --param for {args.learner} ({cls.__name__}): {exc}") from None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return config


def feature_spec(args: argparse.Namespace) -> FeatureSpec:
    from banditloop.core.features import FeatureSpec

    numeric = tuple(n for n in args.numeric.split(",") if n)
    pairs = []
    for item in args.interaction:
        a, sep, b = item.partition(":")
        if not sep or not a or not b:
            raise CommandError(f"--interaction expects A:B, got {item!r}")
        pairs.append((a, b))
    try:
        return FeatureSpec(dim=args.dim, numeric=numeric, interactions=tuple(pairs))
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def emit(summary: dict[str, Any], args: argparse.Namespace, *, hide: tuple[str, ...] = ("curve",)) -> None:
    """The summary: one JSON object with --json, else aligned ``key  value`` lines (``None`` values,
    such as the version of a run that wrote no checkpoint, are left out of the lines)."""
    if args.json:
        print(json.dumps(summary, default=_json_default))
        return
    shown = {k: v for k, v in summary.items() if k not in hide and v is not None}
    width = max((len(k) for k in shown), default=0)
    for key, value in shown.items():
        if isinstance(value, float):
            value = f"{value:.6g}" if math.isfinite(value) else str(value)
        elif isinstance(value, list | dict):
            if not value:
                continue
            value = json.dumps(value, default=_json_default)
        print(f"{key:<{width}}  {value}")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(type(value).__name__)


# -- defaults from the environment ---------------------------------------------------------------
#: every long option ``--some-option`` of every sub-command defaults from ``$BANDITLOOP_SOME_OPTION``
ENV_PREFIX = "BANDITLOOP_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def env_name(option: str) -> str:
    """``--reload-interval`` -> ``BANDITLOOP_RELOAD_INTERVAL``."""
    return ENV_PREFIX + option.lstrip("-").upper().replace("-", "_")


def apply_env_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """Let every long option of ``parser`` and its sub-commands default from ``$BANDITLOOP_<OPTION>``.

    Containers and compose files configure commands through the environment, so that one set of
    variables (``BANDITLOOP_DB``, ``BANDITLOOP_BOOTSTRAP``, ``BANDITLOOP_MODEL``, ...) configures every
    process alike. Precedence: command line > environment > built-in default. The variable is named
    after the option's first long name (``--learner``/``--policy`` -> ``BANDITLOOP_LEARNER``). Values
    are converted and checked like command-line values; a bad value is a usage error naming the
    variable, raised only by a sub-command that uses it and only when the command line does not set
    the option. An option that is required on the command line is not once its variable is set.
    Flags (``store_true``) take 1/true/yes/on or 0/false/no/off; repeatable options (``append``) take
    a shell-quoted, whitespace-separated list, to which command-line occurrences are added.
    Positional arguments never come from the environment. Call after every option is added.
    """
    environ = os.environ if environ is None else environ
    parsers = [parser]
    while parsers:
        current = parsers.pop()
        errors: dict[str, str] = {}
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(dict.fromkeys(action.choices.values()))  # aliases share one parser
                continue
            longs = [o for o in action.option_strings if o.startswith("--")]
            if not longs or isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            name = env_name(longs[0])
            if name not in environ:
                continue
            action.required = False
            try:
                action.default = _env_value(current, action, environ[name])
            except (argparse.ArgumentError, ValueError) as exc:
                message = exc.message if isinstance(exc, argparse.ArgumentError) else str(exc)
                errors[action.dest] = f"${name}={environ[name]!r}: {message}"
                action.default = [] if isinstance(action, argparse._AppendAction) else _EnvError()
        if errors:
            _report_env_errors(current, errors)


class _EnvError:
    """Default of an option whose environment variable is invalid (reported if it is used)."""


def _report_env_errors(parser: argparse.ArgumentParser, errors: dict[str, str]) -> None:
    original = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = original(args, namespace)
        for dest, message in errors.items():
            value = getattr(parsed, dest, None)
            if isinstance(value, _EnvError) or value == []:
                parser.error(message)
        return parsed, extras

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign,assignment]


def _env_value(parser: argparse.ArgumentParser, action: argparse.Action, raw: str) -> Any:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValueError("expected 1/true/yes/on or 0/false/no/off")
        return (word in _TRUE) == isinstance(action, argparse._StoreTrueAction)
    if isinstance(action, argparse._StoreConstAction | argparse._CountAction):
        raise ValueError(f"option {action.option_strings[0]} cannot be set from the environment")
    if isinstance(action, argparse._AppendAction) or action.nargs not in (None, argparse.OPTIONAL):
        return [_convert(parser, action, item) for item in shlex.split(raw)]
    return _convert(parser, action, raw)


def _convert(parser: argparse.ArgumentParser, action: argparse.Action, raw: str) -> Any:
    value = parser._get_value(action, raw)  # the option's type conversion, as on the command line
    if action.choices is not None:
        parser._check_value(action, value)
    return value
