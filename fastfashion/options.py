"""Options stated once: a config dataclass field carries its command-line spelling and help in its metadata.

``epochs: int = option(45, help="epochs")`` is an ordinary field (default 45) that also says how the command line
spells it; :func:`add_options` makes the argparse flags of a config class from that metadata and
:func:`config_values` reads the parsed values back into field values, so a flag, its help, its choices and its
default are written once, beside the field. Fields without :func:`option` metadata are library-only knobs.

A leaf: imports nothing of fastfashion and no torch, so that building the parser (``fastfashion --help``) stays
cheap.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from .errors import ConfigError

_KEY = "fastfashion.option"
_BUILTIN_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


@dataclasses.dataclass(frozen=True)
class Option:
    """How the command line spells one config field (see :func:`option`)."""

    help: str
    flag: str | None = None            # None: --field-name
    metavar: str | None = None         # None: N for int, X for float, argparse's own otherwise
    choices: tuple | None = None
    type: Callable | None = None       # text -> value; None: from the field's annotation (int, float, str)
    parse: Callable | None = None      # text -> field value, applied by config_values (errors exit 1, not 2)
    required: bool | None = None       # None: when the field has no default
    dest: str | None = None            # only for a --no-X flag stored as no_x (True -> the field is False)
    action: str | None = None          # e.g. "append" (a repeatable flag; its list goes through parse)


def option(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING,
           **spelling) -> Any:
    """A dataclass field with ``default`` (or ``default_factory``) and its command-line spelling
    (:class:`Option`'s fields: ``flag``, ``metavar``, ``choices``, ``type``, ``parse``, ``required``, ``dest``,
    ``action``). A bool field is a switch: ``--x`` when its default is False, ``--no-x`` (``flag``) when True."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={_KEY: Option(help=help, **spelling)})


def option_of(field: dataclasses.Field) -> Option | None:
    """The :class:`Option` of a dataclass field, or None for a library-only field."""
    return field.metadata.get(_KEY)


def options(cls) -> dict[str, tuple[dataclasses.Field, Option]]:
    """Field name -> (field, its Option) for every field of ``cls`` that has a command-line spelling."""
    return {f.name: (f, option_of(f)) for f in dataclasses.fields(cls) if option_of(f) is not None}


def flag_of(name: str, opt: Option) -> str:
    return opt.flag or "--" + name.replace("_", "-")


def dest_of(name: str, opt: Option) -> str:
    return opt.dest or name


def field_type(field: dataclasses.Field, opt: Option) -> Callable | None:
    """The argparse ``type`` of a field: the option's own, else the first type of the annotation if builtin."""
    if opt.type is not None:
        return opt.type
    if opt.parse is not None:
        return None  # text, turned into the value by config_values
    annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    first = annotation.split("|")[0].split("[")[0].strip()
    t = _BUILTIN_TYPES.get(first)
    return None if t is str else t


def to_text(value: Any) -> Any:
    """A default as the command line spells it: tuples comma-separated (``0.8,0.1,0.1``), the rest as is."""
    if isinstance(value, tuple):
        return ",".join(format_value(v) for v in value)
    return value


def format_value(value: Any) -> str:
    """A value as help texts, ``--print-config`` readers and the README show it: 1e-4 (not 0.0001), 0.08,1 for a
    pair, off for None, on/off for a bool."""
    if value is None or value is False:
        return "off"
    if value is True:
        return "on"
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-2:
            mantissa, exponent = f"{value:e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:g}"
    return str(value)


def _arg_type(parse: Callable) -> Callable:
    """A library parser as an argparse type: its ValueError becomes the usage error's message as it is."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def add_options(parser, cls, names: Iterable[str] | None = None, *, exclude: Iterable[str] = (),
                unset: bool = False, note: Callable[[str], str] | None = None) -> None:
    """Add the flags of ``cls``'s option fields to ``parser`` (an ArgumentParser or argument group): ``names`` in
    that order, else every option field in field order, less ``exclude``. ``unset``: every flag defaults to None
    (a switch to not given), meaning "keep the value from elsewhere" (a recipe); ``note(name)``, if given, is
    appended to each help text in parentheses."""
    table = options(cls)
    chosen = list(names) if names is not None else [n for n in table if n not in set(exclude)]
    for name in chosen:
        field, opt = table[name]
        kwargs: dict[str, Any] = {"dest": dest_of(name, opt),
                                  "help": opt.help + (f" ({note(name)})" if note else "")}
        has_default = field.default is not dataclasses.MISSING
        default = field.default if has_default else None  # a default_factory's value is the library's to pick
        if field_type(field, opt) is bool or isinstance(default, bool):
            if opt.dest:  # --no-x stored as no_x: not given -> False
                kwargs["action"] = "store_true"
            else:
                kwargs["action"] = "store_false" if default else "store_true"
                if unset:
                    kwargs["default"] = None
        else:
            t = field_type(field, opt)
            if t is not None:
                kwargs["type"] = t if t in (int, float) else _arg_type(t)
            metavar = opt.metavar or {int: "N", float: "X"}.get(t)
            if metavar and not opt.choices:
                kwargs["metavar"] = metavar
            if opt.choices:
                kwargs["choices"] = opt.choices
            if opt.action:
                kwargs["action"] = opt.action
            kwargs["default"] = None if unset else to_text(default) if opt.parse else default
        required = opt.required if opt.required is not None else not has_default and (
            field.default_factory is dataclasses.MISSING)
        if required:
            kwargs["required"] = True
        parser.add_argument(flag_of(name, opt), **kwargs)


def config_values(cls, args: argparse.Namespace, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Field name -> value of every option field of ``cls`` that ``args`` holds (the flags :func:`add_options`
    added to this verb), less ``exclude``. A None value (a flag not given, without a default) is left out, so the
    field keeps its default (or the recipe's value); ``parse`` turns the text into the field's value."""
    out = {}
    for name, (_field, opt) in options(cls).items():
        dest = dest_of(name, opt)
        if name in exclude or not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if opt.dest:  # --no-x stored as no_x
            value = False if value else None
        if value is None or (opt.parse and value == ""):
            continue
        out[name] = opt.parse(value) if opt.parse else value
    return out


def config_from_args(cls, args: argparse.Namespace, **values):
    """``cls`` built from the parsed options (:func:`config_values`) and ``values`` (which take precedence)."""
    return cls(**{**config_values(cls, args, exclude=values), **values})


def parse_fraction_pair(text: str) -> tuple[float, float]:
    """``LO,HI``: two fractions with 0 < LO <= HI <= 1 (``--crop-scale``). Raises ConfigError (a ValueError)."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"expected two fractions LO,HI such as 0.35,1, got {text!r}") from None
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"expected 0 < LO <= HI <= 1, got {text!r}")
    return lo, hi
