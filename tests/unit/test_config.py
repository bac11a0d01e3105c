"""Settings from CDS_* variables: types, defaults, and combinations refused at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds_service.app import create_app
from cds_service.config import PROJECT, ConfigError, Settings


def test_defaults_follow_design_md() -> None:
    s = Settings.from_env({})
    assert s.auth == "jwt" and s.locale == "en" and s.timezone == "UTC"
    assert (s.http_host, s.http_port, s.mllp_host, s.mllp_port) == (
        "127.0.0.1",
        8080,
        "127.0.0.1",
        2575,
    )
    assert s.database_url == f"sqlite:///{PROJECT / 'var' / 'cds_service.db'}"
    assert s.max_body_bytes == 5 * 1024 * 1024 and s.fhir_deadline_ms == 2000
    assert (
        s.max_result_age_hours == 24
        and s.retention_days == 400
        and s.mllp_allow == ("127.0.0.0/8",)
    )


def test_types_and_lists_are_parsed() -> None:
    s = Settings.from_env({
        "CDS_HTTP_PORT": "9000", "CDS_SHADOW": "1", "CDS_OUTBOUND": "fhir, hl7",
        "CDS_FHIR_ALLOWLIST": "https://a.org/r4,https://b.org/fhir", "CDS_MAX_RESULT_AGE_HOURS": "12.5",
    })  # fmt: skip
    assert s.http_port == 9000 and s.shadow is True and s.outbound == ("fhir", "hl7")
    assert s.fhir_allowlist == ("https://a.org/r4", "https://b.org/fhir")
    assert s.max_result_age_hours == 12.5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CDS_AUTH": "basic"}, "CDS_AUTH"),
        ({"CDS_LOCALE": "fr"}, "CDS_LOCALE"),
        ({"CDS_OUTBOUND": "email"}, "CDS_OUTBOUND"),
        ({"CDS_AUTH": "off", "CDS_CORS_ORIGINS": "*"}, "CDS_CORS_ORIGINS"),
        ({"CDS_HTTP_PORT": "eighty"}, "CDS_HTTP_PORT"),
    ],
)
def test_unusable_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_jwt_without_a_secret_is_refused(tmp_path: Path) -> None:
    """Identifier hashes must be keyed: no production start without CDS_SECRET."""
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    with pytest.raises(ConfigError, match="CDS_SECRET"):
        create_app({"CDS_DATABASE_URL": url, "CDS_AUTH": "jwt"})


def test_every_setting_is_documented_in_the_deployment_guide() -> None:
    """docs/deployment.md "Every setting" lists each CDS_* variable Settings reads."""
    from dataclasses import fields
    from pathlib import Path

    from cds_service.config import Settings

    doc = (Path(__file__).parents[2] / "docs" / "deployment.md").read_text(encoding="utf-8")
    table = doc.split("### Every setting", 1)[1].split("\n## ", 1)[0]
    names = [f"CDS_{f.name.upper()}" for f in fields(Settings) if f.name != "extra"]
    assert len(names) > 20
    missing = [n for n in names if f"`{n}`" not in table]
    assert not missing, missing
