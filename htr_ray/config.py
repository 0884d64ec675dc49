"""Job configuration: one dataclass per job, and its command-line flags made from it.

Each field becomes ``--field-name``; its ``metadata["help"]`` is the flag's help text, so ``--help``
explains every setting and the dataclass stays the single place where a default is written.
Lists take several values (``--data a b c``); booleans take ``--flag`` / ``--no-flag``. A field whose
type is itself a dataclass (the :class:`htr_ray.recognition.spec.RecognizerSpec` every job embeds) is
flattened: its fields become flags of their own, under their own names, and are gathered back into it.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


def field(default: Any = dataclasses.MISSING, help: str = "", **kwargs) -> Any:
    """A dataclass field with help text for its flag."""
    metadata = {"help": help}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata, **kwargs)
    if dataclasses.is_dataclass(default) and not isinstance(default, type):  # an embedded spec: one copy each
        value = default
        return dataclasses.field(default_factory=lambda: dataclasses.replace(value), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _base_type(tp):
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return tp


def _is_nested(tp) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def build_parser(cls: type, description: str | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        description=description or (cls.__doc__ or "").strip(),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _base_type(hints[f.name])
        if _is_nested(tp):
            group = parser.add_argument_group(f.name, (tp.__doc__ or "").strip().splitlines()[0])
            _add_flags(group, tp, defaults=_default(f))
            continue
        _add_flags(parser, cls, only=f)
    return parser


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _add_flags(parser, cls: type, only: dataclasses.Field | None = None, defaults=None) -> None:
    hints = typing.get_type_hints(cls)
    for f in [only] if only is not None else dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = _default(f)
        if defaults is not None and defaults is not dataclasses.MISSING:
            default = getattr(defaults, f.name)  # the embedding config's own default for the spec
        required = default is dataclasses.MISSING
        default = None if required else default
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(tp) in (list, tuple):
            (item,) = typing.get_args(tp)[:1] or (str,)
            parser.add_argument(flag, nargs="+", type=_base_type(item), default=default, required=required, help=help_text)
        else:
            parser.add_argument(flag, type=tp, default=default, required=required, help=help_text)


def from_args(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    args = build_parser(cls, description).parse_args(argv)
    return from_namespace(cls, vars(args))


def from_namespace(cls: type[T], values: dict) -> T:
    """Build ``cls`` from flat flag values, gathering the fields of embedded dataclasses."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = _base_type(hints[f.name])
        if _is_nested(tp):
            kwargs[f.name] = from_namespace(tp, values)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
