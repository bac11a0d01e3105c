"""Settings from the environment (prefix ``CDS_``), or from a dict in tests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PROJECT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting has a value the service cannot use."""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclass(frozen=True)
class Settings:
    """Every ``CDS_*`` setting of design.md, typed, with its default."""

    database_url: str = f"sqlite:///{PROJECT / 'var' / 'cds_service.db'}"
    auth: str = "jwt"
    trusted_issuers: str = ""
    audience: str = ""
    fhir_allowlist: tuple[str, ...] = ()
    fhir_base: str = ""
    fhir_token_url: str = ""
    fhir_client_id: str = ""
    fhir_client_key: str = ""
    locale: str = "en"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575
    hl7_outbound: str = ""
    site_mappings: str = ""
    mappings: str = str(PROJECT / "mappings")
    timezone: str = "UTC"
    outbound: tuple[str, ...] = ()
    events_token: str = ""
    mllp_allow: tuple[str, ...] = ("127.0.0.0/8",)
    hl7_encoding: str = "UTF-8"
    max_result_age_hours: float = 24.0
    max_body_bytes: int = 5 * 1024 * 1024
    fhir_deadline_ms: int = 2000
    cors_origins: tuple[str, ...] = ()
    retention_days: int = 400
    secret: str = ""
    shadow: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build settings from ``{"CDS_X": ...}`` or ``{"x": ...}`` keys.

        :raises ConfigError: a value of the wrong form.
        """
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for raw_key, value in values.items():
            key = raw_key[4:].lower() if raw_key.upper().startswith("CDS_") else raw_key.lower()
            if key not in known:
                extra[raw_key] = value
                continue
            default = getattr(cls, key, None)
            try:
                kwargs[key] = _coerce(value, default)
            except ValueError:
                raise ConfigError(f"CDS_{key.upper()}: cannot use {value!r}") from None
        settings = cls(**kwargs, extra=extra)
        settings.check()
        return settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``CDS_*`` environment variables.

        :raises ConfigError: a value of the wrong form.
        """
        env = os.environ if environ is None else environ
        return cls.from_mapping({k: v for k, v in env.items() if k.startswith("CDS_")})

    def check(self) -> None:
        """Reject combinations the service must not run with.

        :raises ConfigError: an unusable combination.
        """
        if self.auth not in ("jwt", "off"):
            raise ConfigError("CDS_AUTH must be 'jwt' or 'off'")
        if self.locale not in ("en", "zh-CN"):
            raise ConfigError("CDS_LOCALE must be 'en' or 'zh-CN'")
        for channel in self.outbound:
            if channel not in ("fhir", "hl7"):
                raise ConfigError("CDS_OUTBOUND takes fhir, hl7 or fhir,hl7")
        if "*" in self.cors_origins and self.auth == "off":
            raise ConfigError("CDS_CORS_ORIGINS='*' is allowed only with CDS_AUTH=jwt")

    @property
    def site_path(self) -> Path | None:
        """The site mapping file, if one is configured."""
        return Path(self.site_mappings) if self.site_mappings else None

    def zone(self) -> ZoneInfo:
        """``CDS_TIMEZONE`` as a timezone.

        :raises ConfigError: not a known IANA timezone.
        """
        return zone(self.timezone)


def zone(name: str) -> ZoneInfo:
    """The IANA timezone ``name``.

    :raises ConfigError: not a known timezone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"CDS_TIMEZONE: unknown timezone {name!r}") from None


def settings_for_command() -> Settings:
    """The settings of a CLI command (``cds-service`` reports a ConfigError in one line, exit 2).

    :raises ConfigError: a value of the wrong form, named.
    """
    return Settings.from_env()


def _coerce(value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        return (
            value
            if isinstance(value, bool)
            else str(value).strip().lower() in ("1", "true", "yes", "on")
        )
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, tuple):
        return tuple(value) if isinstance(value, list | tuple) else _csv(str(value))
    return str(value)
