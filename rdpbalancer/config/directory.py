"""``[directory.ldap]``: where AD group membership comes from."""

from __future__ import annotations

from typing import Self

from pydantic import Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator

from rdpbalancer.config.base import ConfigModel
from rdpbalancer.config.types import ConfigPath, PositiveDuration

DEFAULT_REFRESH_S = 300.0  # membership changes are rare; 5 minutes keeps AD load negligible
MAX_PAGE_SIZE = 1000  # AD's default MaxPageSize: larger pages are cut by the server anyway


class LdapSection(ConfigModel):
    urls: tuple[StrictStr, ...]
    bind_user: StrictStr = Field(min_length=1)
    password_file: ConfigPath | None = None
    password_env: StrictStr | None = None
    base_dn: StrictStr = Field(min_length=3)
    start_tls: StrictBool = False
    ca_file: ConfigPath | None = None
    tls_verify: StrictBool = True
    connect_timeout: PositiveDuration = 5.0
    timeout: PositiveDuration = 10.0
    refresh: PositiveDuration = DEFAULT_REFRESH_S
    page_size: StrictInt = Field(default=500, ge=1, le=MAX_PAGE_SIZE)
    user_attribute: StrictStr = "sAMAccountName"
    cache_path: ConfigPath | None = None  # default: groups-cache.json beside the sticky table

    @field_validator("urls")
    @classmethod
    def _ldap_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        if not urls:
            raise ValueError("at least one URL is required, e.g. \"ldaps://dc1.corp.example\"")
        for url in urls:
            if not url.lower().startswith(("ldap://", "ldaps://")):
                raise ValueError(f"invalid URL {url!r}: use ldap://host[:port] or ldaps://host[:port]")
        return urls

    @model_validator(mode="after")
    def _one_password_source(self) -> Self:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError(
                "give the bind password with exactly one of password_file = \"/etc/rdpbalancer/ldap.secret\" "
                "or password_env = \"VARIABLE\" (never inline in the configuration)"
            )
        return self


class DirectorySection(ConfigModel):
    ldap: LdapSection | None = None
