"""Shared pieces for the two sides' pydantic-settings config: strict models, TOML + env loading,
secrets from files, and validation errors that name the field and where its value came from."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, TomlConfigSettingsSource


class Section(BaseModel):
    """A config section: unknown keys are an error, so a typo fails at start, not at 3 a.m."""

    model_config = ConfigDict(extra="forbid")


class ConfigError(Exception):
    """The config is invalid; the message says which field, what is wrong and where it came from."""


class TomlEnvSettings(BaseSettings):
    """Settings read from one TOML file, overridden by `<PREFIX>KEY` variables (nested with `__`)."""

    _toml_path: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_path))
        return tuple(sources)


def _env_name(prefix: str, loc: tuple[Any, ...]) -> str:
    return prefix + "__".join(str(p).upper() for p in loc)


T = TypeVar("T", bound=TomlEnvSettings)


def load_settings(cls: type[T], path: Path | None, prefix: str, **overrides: Any) -> T:
    """Load `cls` from `path` (may be None: defaults + environment), raising ConfigError on bad input."""
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist (pass --config FILE or create it)")
    cls._toml_path = path
    try:
        return cls(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(toml_error(path, exc)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not isinstance(p, int)) or err["loc"]
            field = ".".join(str(p) for p in loc)
            env = _env_name(prefix, loc)
            # The leaf may come from a parent variable (EDGE_MQTT='{"port": ...}'): check each level.
            from_env = next(
                (_env_name(prefix, loc[:i]) for i in range(len(loc), 0, -1)
                 if _env_name(prefix, loc[:i]) in os.environ),
                None,
            )
            where = f"environment variable {from_env}" if from_env else (
                f"file {path}" if path is not None else "the defaults")
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"  {field}: {err['msg']}{shown}; from {where} (override with {env})")
        raise ConfigError("invalid config:\n" + "\n".join(lines)) from None
    finally:
        cls._toml_path = None


def plain_errors(exc: ValidationError) -> str:
    """A pydantic ValidationError as a person reads it: `field: what is wrong`, one per problem, without
    pydantic's type codes, echoed input and documentation links."""
    parts = []
    for err in exc.errors():
        msg = re.sub(r"^(Value error|Assertion failed), ", "", str(err["msg"]))
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def toml_error(path: Path | None, exc: tomllib.TOMLDecodeError) -> str:
    """`FILE:LINE:COLUMN: what is wrong` for a TOML syntax error, the way editors and compilers say it."""
    text = str(exc)
    m = re.search(r"\(at line (\d+), column (\d+)\)", text)
    what = re.sub(r"\s*\(at line \d+, column \d+\)", "", text) or "syntax error"
    where = f"{path}:{m.group(1)}:{m.group(2)}" if m else str(path)
    return (f"{where}: TOML syntax error: {what}. Fix that line (strings need quotes, e.g. "
            'device_id = "kitchen-1"; sections look like [mqtt])')


def read_secret(path: Path | str | None) -> str | None:
    """Read a secret from a file, white space stripped. A relative path is looked up in systemd's
    $CREDENTIALS_DIRECTORY first (LoadCredential=), then taken as it is."""
    if path is None or str(path) == "":
        return None
    p = Path(path)
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not p.is_absolute() and creds and (Path(creds) / p).is_file():
        p = Path(creds) / p
    try:
        return p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {p}: {exc.strerror}") from None
