"""Shared CLI plumbing.

* Errors: bad input prints ONE line to stderr and exits with code 2; a fault of the
  machine (no space left, an unreadable file) prints one line and exits 1; Ctrl-C prints
  one line and exits 130 (:func:`run_cli`).
* Flags derived from a dataclass (:func:`add_dataclass_flags`): a field ``batch_size`` is
  the flag ``--batch-size`` with the field's type, default and ``metadata["help"]``, so a
  setting is declared once, in its dataclass (nanoGPT's configurator idea).
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
import typing
import warnings
from typing import Any, Callable, Dict, Iterable, Mapping, NoReturn, Optional, Sequence


class UsageError(Exception):
    """Bad command-line input (reported as one line, exit status 2)."""


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def describe_os_error(e: OSError) -> str:
    """``"no space left on device (/path)"``: the cause in words, then the path if known."""
    cause = {errno.ENOSPC: "no space left on device", getattr(errno, "EDQUOT", -2): "disk quota exceeded",
             errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
             errno.EROFS: "read-only file system"}.get(e.errno or -1, e.strerror or _one_line(e))
    return f"{cause} ({e.filename})" if e.filename else cause


def run_cli(prog: str, body: Callable[[Sequence[str]], Optional[int]], argv: Optional[Sequence[str]]) -> int:
    """Run ``body(argv)`` and turn failures into one stderr line (set FSN_DEBUG=1 to see the
    traceback instead):

    * UsageError, ValueError, TypeError, FileNotFoundError, IsADirectoryError: exit 2;
    * any other OSError (no space left, permission denied, ...), MemoryError and CUDA out
      of memory: exit 1;
    * KeyboardInterrupt (Ctrl-C): exit 130.

    A DeprecationWarning raised by fsn (an old option name, say) is shown as one line,
    ``prog: warning: ...``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("always", category=DeprecationWarning, module="fsn_")
            warnings.showwarning = _one_line_warning(prog)
            return body(argv) or 0
    except (UsageError, ValueError, TypeError, FileNotFoundError, IsADirectoryError) as e:
        if os.environ.get("FSN_DEBUG"):
            raise
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        raise SystemExit(2)
    except OSError as e:
        if os.environ.get("FSN_DEBUG"):
            raise
        print(f"{prog}: error: {_one_line(e) if isinstance(e, ReportedOSError) else describe_os_error(e)}",
              file=sys.stderr)
        raise SystemExit(1)
    except MemoryError as e:
        if os.environ.get("FSN_DEBUG"):
            raise
        print(f"{prog}: error: out of memory ({_one_line(e)})", file=sys.stderr)
        raise SystemExit(1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130)


def _one_line_warning(prog: str):
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {_one_line(message) if isinstance(message, Warning) else message}",
              file=sys.stderr)
    return show


class ReportedOSError(OSError):
    """An OSError whose message is already the one line to show (cause, path, what was kept)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "I/O error"


# --- flags derived from a dataclass ---------------------------------------------------------

def flag_name(field_name: str) -> str:
    """``batch_size`` -> ``--batch-size``; a bool field that defaults to True is ``--no-<name>``."""
    return "--" + field_name.replace("_", "-")


def parse_knobs(text: str, what: str, types: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """``"n_layers=2,k1_init=1.0,delay=false"`` -> ``{"n_layers": 2, "k1_init": 1.0, "delay": False}``
    (ints, floats, true/false, else strings). Raises ValueError naming ``what``.

    ``types`` (default :func:`model_knob_types`): the type each known key takes. A number key
    refuses true/false (``lr=true`` is not lr 1), a bool key refuses numbers, an int key refuses
    fractions; a float key given an int gets the float."""
    types = model_knob_types() if types is None else types
    knobs: Dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, eq, val = part.partition("=")
        if not eq or not key.strip() or not val.strip():
            raise ValueError(f"{what}: expected key=value, got {part!r}")
        key = key.strip()
        knobs[key] = _typed_knob(key, _knob_value(val.strip()), types.get(key), what)
    return knobs


def model_knob_types() -> Dict[str, Any]:
    """The type of each ``build_model`` knob: the model configs' fields, plus ``head_dim``."""
    from .config import FSNConfig, TransformerConfig

    types: Dict[str, Any] = {"head_dim": int}
    for cls in (TransformerConfig, FSNConfig):
        types.update({name: _scalar_type(hint) for name, hint in typing.get_type_hints(cls).items()})
    return types


def _typed_knob(key: str, value: Any, kind: Any, what: str) -> Any:
    """``value`` checked against ``kind`` (None: any); see :func:`parse_knobs`."""
    kind = _scalar_type(kind) if kind is not None else None
    shown = str(value).lower() if isinstance(value, bool) else repr(value)
    if kind in (int, float) and isinstance(value, bool):
        raise ValueError(f"{what}: {key} takes a number, got {shown}")
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"{what}: {key} takes true or false, got {shown}")
    if kind is int and not isinstance(value, int):
        raise ValueError(f"{what}: {key} takes an integer, got {shown}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _knob_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _scalar_type(hint: Any) -> Any:
    """The type a flag parses to: Optional[X] -> X; a Union with str (e.g. int | "250k") -> str."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union:
        return str if str in args else _scalar_type(args[0])
    return hint


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, names: Optional[Iterable[str]] = None,
                        defaults: Optional[Mapping[str, Any]] = None, helps: Optional[Mapping[str, str]] = None
                        ) -> None:
    """Add a flag for each field of dataclass ``cls`` named in ``names`` (default: all).

    The flag is :func:`flag_name` of the field, its type the field's annotation, its
    default the field's (or ``defaults[name]``), its help ``metadata["help"]`` (or
    ``helps[name]``), with ``metadata["choices"]`` / ``metadata["metavar"]`` when given. A
    bool field is a switch: ``--name`` when it defaults to False, ``--no-name`` when it
    defaults to True. A dict field takes ``key=value,...`` (:func:`parse_knobs`).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults, helps = dict(defaults or {}), dict(helps or {})
    for name in (fields if names is None else names):
        f = fields[name]
        if name in defaults:
            default = defaults[name]
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = f.default
        help_text = helps.get(name, f.metadata.get("help"))
        kind = _scalar_type(hints[name])
        if kind is bool:
            if default:
                parser.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_false", default=True,
                                    help=help_text)
            else:
                parser.add_argument(flag_name(name), dest=name, action="store_true", help=help_text)
            continue
        extra: Dict[str, Any] = {}
        for key in ("choices", "metavar"):
            if key in f.metadata:
                extra[key] = list(f.metadata[key]) if key == "choices" else f.metadata[key]
        if typing.get_origin(kind) in (dict, Dict) or kind in (dict, Dict):
            extra["type"] = _knobs_parser(flag_name(name))
            extra.setdefault("metavar", "KEY=VALUE,...")
        elif kind in (int, float):
            extra["type"] = kind
        parser.add_argument(flag_name(name), dest=name, default=default, help=help_text, **extra)


def _knobs_parser(flag: str) -> Callable[[str], Dict[str, Any]]:
    def parse(text: str) -> Dict[str, Any]:
        try:
            return parse_knobs(text, f"{flag} {text!r}")
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def values_for(args: argparse.Namespace, names: Iterable[str]) -> Dict[str, Any]:
    """``{name: args.name}`` for the fields whose flags :func:`add_dataclass_flags` added."""
    return {name: getattr(args, name) for name in names}


def explicit_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Dict[str, Any]:
    """The options given on the command line (not defaults), parsed. Changes ``parser``'s defaults."""
    unset = object()  # not a str, so argparse never converts it with the option's type
    parser.set_defaults(**{k: unset for k in vars(parser.parse_args(argv))})
    return {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not unset}
