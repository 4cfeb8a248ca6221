"""ldap3, imported once, without the DeprecationWarnings its import triggers in pyasn1 >= 0.6.

ldap3 2.9.1 (the latest release) imports `tagMap` and `typeMap` from pyasn1, deprecated aliases
there since 0.6; the warning is about ldap3's code, not ours, and would fail a test run that treats
warnings as errors. Everything in this package imports ldap3 from here.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(tagMap|typeMap) is deprecated", DeprecationWarning)
    import ldap3
    from ldap3.core import exceptions as ldap3_exceptions
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn

__all__ = ["escape_filter_chars", "ldap3", "ldap3_exceptions", "parse_dn"]
