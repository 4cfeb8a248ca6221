"""User names are chosen by unauthenticated clients: the dashboard must show them as text.

Sessions whose `mstshash` cookies are markup go through a real balancer to fake RDP servers, and
real headless Chromium renders the dashboard. Each payload, if it were parsed as HTML, would set
`window.rdpbxss` (names are lower-cased by the identity layer, so the flag is lower-case too) or
leave an element behind. We assert the names appear literally, as the identity layer keyed them,
the flag stays unset, no injected element exists, and the console shows no error (a CSP report
about a blocked inline handler would mean markup got into the DOM even though CSP stopped it).

tests/browser/test_dashboard.py has the basic case (two names, decisions table, one lookup); here
more payloads, names that the identity layer rewrites, both the first render and the incremental
one, the decisions filter and the lookup of every name.
"""

from __future__ import annotations

from typing import Any

from rdpbalancer.policy.identity import user_key
from tests.browser.conftest import By, Farm, NoAlertPresentException, leave, open_dashboard, text_of, wait_until

# Sent as `Cookie: mstshash=<payload>`. The proto layer refuses control bytes; the identity layer
# keeps everything else, lower-cases it and strips `DOMAIN\` and `@domain` (strip_domain = true).
PAYLOADS = (
    '<img src=x onerror="window.rdpbxss=1">',
    '"><svg onload=window.rdpbxss=2>',
    "<script>window.rdpbxss=3</script>",
    "'><iframe srcdoc=\"<script>parent.rdpbxss=4</script>\"></iframe>",
    "<IMG SRC=x ONERROR=window.rdpbxss=5>@evil.example",  # upper case and a UPN suffix
    "CORP\\<b id=rdpb-injected onclick=window.rdpbxss=6>bold</b>",  # a DOMAIN\ prefix
)
KEYS = tuple(user_key(p.encode()) for p in PAYLOADS)
FIRST, LATER = PAYLOADS[:3], PAYLOADS[3:]  # rendered on page load / while the page is open
INJECTED = "main img, main svg, main script, main iframe, #rdpb-injected, [onerror], [onload], [onclick], [srcdoc]"


def shown_users(driver: Any) -> list[str]:
    users: list[str] = driver.execute_script(
        "return [...document.querySelectorAll('#decisions tbody td.user')].map((td) => td.textContent);")
    return users


def assert_nothing_ran(driver: Any) -> None:
    assert driver.execute_script("return [typeof window.rdpbxss, document.querySelectorAll(arguments[0]).length]",
                                 INJECTED) == ["undefined", 0]
    try:
        alert = driver.switch_to.alert.text
    except NoAlertPresentException:
        alert = None
    assert alert is None
    assert [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_identity_layer_keeps_the_markup() -> None:
    """What the browser test below relies on: the payloads survive as keys, rewritten only by the
    documented rules (lower case, domain parts stripped)."""
    assert KEYS == (
        '<img src=x onerror="window.rdpbxss=1">',
        '"><svg onload=window.rdpbxss=2>',
        "<script>window.rdpbxss=3</script>",
        "'><iframe srcdoc=\"<script>parent.rdpbxss=4</script>\"></iframe>",
        "<img src=x onerror=window.rdpbxss=5>",
        "<b id=rdpb-injected onclick=window.rdpbxss=6>bold</b>",
    )


def test_hostile_names_are_shown_as_literal_text(browser: Any, farm: Farm) -> None:
    for payload in FIRST:
        farm.connect(payload)
    page = open_dashboard(browser, farm)  # the first render has three names already
    try:
        for payload in LATER:
            farm.connect(payload)  # the incremental render of the open page gets the rest

        api_users = [d["user"] for d in farm.api("/api/v1/decisions")["decisions"]]
        assert sorted(api_users) == sorted(KEYS)  # the balancer routed every one, keyed as above
        wait_until(page, lambda d: sorted(shown_users(d)) == sorted(KEYS), "every hostile name, literally")
        assert_nothing_ran(page)

        # the filter matches on the text, and what it keeps is still text
        box = page.find_element(By.CSS_SELECTOR, "#decisions-filter")
        box.send_keys("<script>")
        wait_until(page, lambda d: sorted(shown_users(d)) == sorted([KEYS[2], KEYS[3]]),
                   "the two names holding <script>")
        assert_nothing_ran(page)
        page.execute_script("arguments[0].value = ''; arguments[0].dispatchEvent(new Event('input'))", box)
        wait_until(page, lambda d: len(shown_users(d)) == len(KEYS), "the filter cleared")

        # the user lookup echoes the name the API keyed, for every payload as a user would type it
        field = page.find_element(By.CSS_SELECTOR, "#lookup-user")
        for payload, key in zip(PAYLOADS, KEYS, strict=True):
            field.clear()
            field.send_keys(payload)
            page.find_element(By.CSS_SELECTOR, "#lookup-go").click()
            wait_until(page, lambda d, key=key: text_of(d, "#lookup-verdict .user") == key, f"the lookup of {key!r}")
            assert text_of(page, "#lookup-reason") == "sticky-hit"
        assert_nothing_ran(page)
    finally:
        leave(browser)
