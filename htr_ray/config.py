"""Job configuration: one dataclass per job, and its command-line flags made from it.

Each field becomes ``--field-name``; its ``metadata["help"]`` is the flag's help text, so ``--help``
explains every setting and the dataclass stays the single place where a default is written.
Lists take several values (``--data a b c``); booleans take ``--flag`` / ``--no-flag``.
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
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _base_type(tp):
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return tp


def build_parser(cls: type, description: str | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        description=description or (cls.__doc__ or "").strip(),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(tp) in (list, tuple):
            (item,) = typing.get_args(tp)[:1] or (str,)
            parser.add_argument(flag, nargs="+", type=_base_type(item), default=default, required=required, help=help_text)
        else:
            parser.add_argument(flag, type=tp, default=default, required=required, help=help_text)
    return parser


def from_args(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    args = build_parser(cls, description).parse_args(argv)
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
