"""The file format behind cdc.config: YAML parsing, ${VAR} interpolation, error messages.

Its one job is the file-format side of :mod:`cdc.config`: parse YAML rejecting duplicate
keys, interpolate ``${NAME}``, ``${NAME:-default}`` and ``$${`` (a literal ``${``) from an
environment mapping, and ``${file:/path}`` from a file (a Kubernetes or Docker secret),
into string values, and turn a pydantic ``ValidationError`` into one
:class:`~cdc.errors.ConfigError` naming the file, the dotted key and what is expected. It
knows no model of its own; :mod:`cdc.config` defines those.

No I/O except :func:`read_config_file` and :func:`read_secret_file`, which read one file
each. This module must not log or print, and no message it produces may echo a value (a
value may be a password).
"""

from __future__ import annotations

import difflib
import inspect
import re
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from cdc.errors import ConfigError

__all__ = [
    "config_error",
    "format_key",
    "interpolate_env",
    "load_model",
    "parse_yaml",
    "read_config_file",
    "read_secret_file",
    "yaml_type",
]

_ENV_REFERENCE = re.compile(
    r"(?P<escape>\$\$\{)"
    r"|\$\{file:(?P<file>/[^}]+)\}"
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>(?:(?!\$\{)[^}])*))?\}"
    r"|(?P<invalid>\$\{)"
)

SecretReader = Callable[[str], str]


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _UniqueKeyLoader.construct_mapping,
)


def parse_yaml(text: str, source: str, required_top: str) -> dict[str, Any]:
    """Parse one file's YAML text into its top-level mapping.

    Args:
        text: the file's contents.
        source: the file's path, used in error messages.
        required_top: a key the file must have, named when the file is empty.

    Raises:
        ConfigError: invalid YAML (without quoting the line), a duplicate key, an empty
            file, or a top level that is not a mapping.
    """
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # Never str(exc): it quotes the offending line, which may hold a password.
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"invalid YAML{where}: {exc.problem or exc.context}", source=source
        ) from None
    except yaml.YAMLError:
        raise ConfigError("invalid YAML", source=source) from None
    if data is None:
        raise ConfigError(
            f"file is empty; expected a mapping with at least the key {required_top!r}",
            source=source,
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping of keys at the top level, found {yaml_type(data)}",
            source=source,
        )
    return data


def yaml_type(value: object) -> str:
    """The YAML name of a parsed value's type, for messages that must not echo the value."""
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def format_key(loc: Sequence[int | str]) -> str | None:
    """A pydantic error location as the dotted key users write (``topics.partitions``)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            continue  # pydantic's marker for "the dict key itself"
        else:
            out += f".{part}" if out else part
    return out or None


def interpolate_env(
    value: Any,
    env: Mapping[str, str],
    source: str,
    loc: tuple[int | str, ...],
    read_secret: SecretReader | None = None,
) -> Any:
    """Replace ``${NAME}``, ``${NAME:-default}``, ``${file:/path}`` and ``$${`` in every
    string of ``value``.

    Runs after YAML parsing so a secret full of YAML-special characters is taken verbatim.
    ``read_secret`` reads a ``${file:...}`` reference (``read_secret_file`` by default).

    Raises:
        ConfigError: a malformed ``${``, an unset variable without a default, or a secret
            file that cannot be read, with the dotted key path ``loc`` leads to.
    """
    reader = read_secret_file if read_secret is None else read_secret
    if isinstance(value, str):
        return _interpolate_string(value, env, source, loc, reader) if "${" in value else value
    if isinstance(value, dict):
        return {
            key: interpolate_env(item, env, source, (*loc, key), reader)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            interpolate_env(item, env, source, (*loc, i), reader) for i, item in enumerate(value)
        ]
    return value


def _interpolate_string(
    text: str,
    env: Mapping[str, str],
    source: str,
    loc: tuple[int | str, ...],
    read_secret: SecretReader,
) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escape"]:
            return "${"
        if match["file"]:
            try:
                return read_secret(match["file"])
            except ConfigError as exc:
                raise ConfigError(str(exc), source=source, key=format_key(loc)) from None
        if match["invalid"]:
            raise ConfigError(
                "invalid ${...} reference; write ${NAME}, ${NAME:-default} or"
                " ${file:/absolute/path}, and $${ for a literal ${",
                source=source,
                key=format_key(loc),
            )
        name = match["name"]
        default = match["default"]
        found = env.get(name)
        if found:
            return found
        if default is not None:
            return default
        if found is not None:
            return found  # set but empty, and no default: empty is what was asked for
        raise ConfigError(
            f"environment variable {name} is not set; export it, or write "
            f"${{{name}:-default}} to give a default",
            source=source,
            key=format_key(loc),
        )

    return _ENV_REFERENCE.sub(replace, text)


def read_secret_file(path: str) -> str:
    """The text of a secret file (``${file:/run/secrets/pg_password}``), without the one
    trailing newline that ``echo`` and most secret tools leave (``\\n`` or ``\\r\\n``).

    Raises:
        ConfigError: the file is missing, unreadable or not UTF-8 (the message names the
            path, never the content).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"secret file {path} not found; mount the secret there, or fix the"
            " ${file:...} reference"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read secret file {path} ({exc.strerror}); check its permissions"
            " for the user cdc runs as"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"secret file {path} is not UTF-8 text") from None
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType, Annotated):
        for arg in get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    current: type[BaseModel] | None = root
    for part in loc:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return None
        current = _nested_model(current.model_fields[part].annotation)
    return current


def _describe(error: Any, root: type[BaseModel]) -> str:
    """One error as a sentence saying what is expected. Never includes the input value."""
    kind = error["type"]
    loc = error["loc"]
    if kind == "missing":
        return "required key is missing; add it"
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        if model is None:
            return "unknown key; remove it"
        allowed = list(model.model_fields)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key; {hint}allowed keys here: {', '.join(allowed)}"
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return f"expected a mapping of keys, found {yaml_type(error.get('input'))}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def config_error(
    exc: ValidationError,
    root: type[BaseModel],
    *,
    source: str | None,
    prefix: tuple[str, ...] = (),
) -> ConfigError:
    """Turn a ``ValidationError`` of ``root`` into one ``ConfigError``; never echo a value.

    ``prefix`` is prepended to every key, for a model validated below the file's top level.
    """
    # An unknown key first: it is usually the typo that also makes a required key "missing".
    errors = sorted(
        exc.errors(include_url=False, include_input=True),
        key=lambda error: error["type"] != "extra_forbidden",
    )
    first, rest = errors[0], errors[1:]
    message = _describe(first, root)
    for other in rest:
        key = format_key((*prefix, *other["loc"])) or "(top level)"
        message += f"\n  also {key}: {_describe(other, root)}"
    return ConfigError(message, source=source, key=format_key((*prefix, *first["loc"])))


_ModelT = TypeVar("_ModelT", bound=BaseModel)


def load_model(
    model: type[_ModelT],
    text: str,
    *,
    source: str,
    env: Mapping[str, str],
    required_top: str,
) -> _ModelT:
    """Parse, interpolate and validate one file's text into ``model``.

    Raises:
        ConfigError: invalid YAML, a missing variable, or a key that fails validation.
    """
    data = parse_yaml(text, source, required_top)
    data = interpolate_env(data, env, source, ())
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, model, source=source) from None


def read_config_file(path: Path) -> str:
    """Read one configuration file as UTF-8 text.

    Raises:
        ConfigError: the file is missing, unreadable or not UTF-8.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("file is not UTF-8 text", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", source=str(path)) from None
