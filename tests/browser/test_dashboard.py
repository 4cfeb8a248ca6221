"""The live dashboard at `/` of the admin API, driven in real headless Chromium.

Each test gets a fresh balancer (checks every 100 ms, rise 1, fall 1) and fake RDP servers; the
page is never reloaded after it is opened: what it shows comes from its own polling.
With RDPB_SCREENSHOT=docs/dashboard.png, test_overview also writes the docs' screenshot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from rdpbalancer import __version__
from tests.browser.conftest import (
    WINDOW,
    By,
    Farm,
    NoAlertPresentException,
    leave,
    open_dashboard,
    text_of,
    wait_until,
)

HOSTILE_USERS = ("<img src=x onerror=alert(1)>", '"><script>alert(1)</script>')


def decision_rows(driver: Any) -> list[dict[str, str]]:
    """The decisions table as rendered, read in one call (the table is rebuilt while we look)."""
    rows: list[dict[str, str]] = driver.execute_script("""
        return [...document.querySelectorAll('#decisions tbody tr')].map((tr) => ({
            user: tr.querySelector('td.user').innerText, server: tr.querySelector('td.server').innerText,
            shown_reason: tr.querySelector('td.reason-cell').innerText, reason: tr.dataset.reason}));""")
    return rows


def shown(driver: Any, server: str, what: str) -> str:
    return text_of(driver, f'[data-server="{server}"] .{what}')


def severe_console_entries(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_lists_servers_and_shows_a_decision(page: Any, farm: Farm) -> None:
    for name in ("TS01", "TS02", "TS03"):
        assert shown(page, name, "health") == "up"
        assert shown(page, name, "admin-state") == "ready"
    pools = [p.get_attribute("data-pool") for p in page.find_elements(By.CSS_SELECTOR, "#pools .pool")]
    assert pools == ["default", "admins"]
    wait_until(page, lambda d: text_of(d, "#version") == f"v{__version__}", "the version in the header")
    assert text_of(page, "#config-listen") == f"127.0.0.1:{farm.port}"

    server = farm.connect("alice")

    row = wait_until(page, lambda d: next((r for r in decision_rows(d) if r["user"] == "alice"), None),
                     "alice's decision in the table")
    assert row == {"user": "alice", "server": server, "shown_reason": "new", "reason": "new"}
    wait_until(page, lambda d: shown(d, server, "homed") == "1", f"{server} homing alice")
    # The page ran under its Content-Security-Policy, with its script and style from /static/: a
    # blocked resource or a script error would be in the console log.
    assert page.find_element(By.CSS_SELECTOR, 'meta[http-equiv="Content-Security-Policy"]')
    assert severe_console_entries(page) == []


def test_shows_a_server_going_down_and_back_without_reload(page: Any, farm: Farm) -> None:
    page.execute_script("window.rdpbNoReload = true")

    farm.run(farm.servers["TS02"].stop_listening())

    wait_until(page, lambda d: shown(d, "TS02", "health") == "down", "TS02 shown down")
    assert "row-down" in page.find_element(By.CSS_SELECTOR, '#pools tr[data-server="TS02"]').get_attribute("class")
    wait_until(page, lambda d: shown(d, "TS02", "last-error") != "", "TS02's last check error")
    down_event = '#events tr[data-event-server="TS02"][data-event-health="down"]'
    wait_until(page, lambda d: d.find_elements(By.CSS_SELECTOR, down_event), "the down event of TS02")
    assert text_of(page, "#sum-down") == "1"
    assert shown(page, "TS01", "health") == "up"

    farm.run(farm.servers["TS02"].listen_again())

    wait_until(page, lambda d: shown(d, "TS02", "health") == "up", "TS02 shown up again")
    wait_until(page, lambda d: shown(d, "TS02", "last-error") == "", "TS02's error gone")
    assert page.execute_script("return window.rdpbNoReload") is True


def test_drain_button_needs_the_token(page: Any, farm: Farm) -> None:
    drain = '#pools button[data-action="drain"][data-server="TS01"]'
    status = "#action-status"

    page.find_element(By.CSS_SELECTOR, drain).click()

    wait_until(page, lambda d: d.find_element(By.CSS_SELECTOR, status).get_attribute("data-kind") == "error",
               "an error after drain without a token")
    message = text_of(page, status)
    assert "401" in message and "enter the admin token" in message, message
    assert farm.server("TS01")["admin_state"] == "ready"
    assert shown(page, "TS01", "admin-state") == "ready"

    page.find_element(By.CSS_SELECTOR, "#token").send_keys("not-the-token-at-all")
    page.find_element(By.CSS_SELECTOR, drain).click()
    wait_until(page, lambda d: "not accepted" in text_of(d, status), "the wrong token refused")
    assert farm.server("TS01")["admin_state"] == "ready"

    page.find_element(By.CSS_SELECTOR, "#token-clear").click()
    page.find_element(By.CSS_SELECTOR, "#token").send_keys(farm.token)
    page.find_element(By.CSS_SELECTOR, drain).click()

    wait_until(page, lambda _: farm.server("TS01")["admin_state"] == "drain", "the API reporting TS01 drain")
    wait_until(page, lambda d: shown(d, "TS01", "admin-state") == "drain", "TS01 shown drain")
    assert page.find_element(By.CSS_SELECTOR, status).get_attribute("data-kind") == "ok"
    assert page.find_element(By.CSS_SELECTOR, drain).get_attribute("aria-pressed") == "true"
    assert text_of(page, "#sum-drain") == "1"
    storage = page.execute_script("return [sessionStorage.getItem('rdpbalancer.token'), localStorage.length]")
    assert storage == [farm.token, 0]


def test_hostile_user_names_render_as_text(page: Any, farm: Farm) -> None:
    for user in HOSTILE_USERS:
        farm.connect(user)

    api_users = {d["user"] for d in farm.api("/api/v1/decisions")["decisions"]}
    assert api_users == set(HOSTILE_USERS)  # the balancer kept them as they were sent
    wait_until(page, lambda d: {r["user"] for r in decision_rows(d)} == set(HOSTILE_USERS),
               "both hostile names in the decisions table, literally")
    assert page.find_elements(By.CSS_SELECTOR, "#decisions img, #decisions script") == []

    page.find_element(By.CSS_SELECTOR, "#lookup-user").send_keys(HOSTILE_USERS[0])
    page.find_element(By.CSS_SELECTOR, "#lookup-go").click()
    wait_until(page, lambda d: text_of(d, "#lookup-verdict .user") == HOSTILE_USERS[0], "the lookup, literally")

    assert page.find_elements(By.CSS_SELECTOR, "main img, main script") == []
    with pytest.raises(NoAlertPresentException):
        _ = page.switch_to.alert


def test_user_lookup_explains_where_alice_goes(page: Any, farm: Farm) -> None:
    server = farm.connect("alice")
    user = page.find_element(By.CSS_SELECTOR, "#lookup-user")

    user.send_keys("alice")
    page.find_element(By.CSS_SELECTOR, "#lookup-go").click()

    wait_until(page, lambda d: text_of(d, "#lookup-reason") == "sticky-hit", "alice's lookup")
    assert text_of(page, "#lookup-pool") == "default"
    assert text_of(page, "#lookup-servers") == server
    assert f"alice -> {server}" in text_of(page, "#lookup-facts")
    steps = [[c.text for c in r.find_elements(By.CSS_SELECTOR, "td")]
             for r in page.find_elements(By.CSS_SELECTOR, "#lookup-steps tbody tr")]
    assert [s[:2] for s in steps] == [["route[0] (admins)", "✗ no"], ["route[1] (blocked)", "✗ no"],
                                      ["route[2] (everyone)", "✓ yes"]]
    assert "Admins" in steps[0][2]
    assert "default" in steps[2][2]

    user.clear()
    user.send_keys("mallory")
    page.find_element(By.CSS_SELECTOR, "#lookup-go").click()
    wait_until(page, lambda d: text_of(d, "#lookup-reason") == "denied", "mallory's lookup")
    assert text_of(page, "#lookup-servers") == "refused"


def test_disconnected_banner_and_recovery(browser: Any, make_farm: Any, fixed_port: Any) -> None:
    farm = make_farm(admin_port=fixed_port())  # a fixed port, so the API comes back where the page looks
    page = open_dashboard(browser, farm)
    try:
        assert not page.find_element(By.CSS_SELECTOR, "#banner").is_displayed()

        farm.run(farm.bal.admin.stop())

        wait_until(page, lambda d: "Disconnected" in text_of(d, "#banner"), "the disconnected banner")
        assert "stale" in page.find_element(By.CSS_SELECTOR, "#main").get_attribute("class")

        farm.run(farm.bal.admin.start())
        farm.run(farm.servers["TS02"].stop_listening())  # news the page can only have from the API

        wait_until(page, lambda d: not d.find_element(By.CSS_SELECTOR, "#banner").is_displayed(), "the banner gone")
        wait_until(page, lambda d: shown(d, "TS02", "health") == "down", "fresh data after the API came back")
    finally:
        leave(browser)


def test_overview_with_mixed_states(browser: Any, make_farm: Any) -> None:
    """Four servers and two pools, one down, one draining, varied decisions; the docs' screenshot."""
    pools = {"default": ["TS01", "TS02", "TS03", "TS04"], "admins": ["TS05"]}
    farm = make_farm(pools, health='failover_after = "0s"')
    for user in ("alice", "bob", "dave", "erin", "frank", "grace", "heidi"):
        farm.open_session(user) if user in ("alice", "bob", "erin") else farm.connect(user)
    farm.open_session("carol")
    on_ts03 = [d["user"] for d in farm.api("/api/v1/decisions")["decisions"] if d["server"] == "TS03"]
    farm.api("/api/v1/servers/TS04/state", method="POST", body={"state": "drain"}, token=farm.token)
    page = open_dashboard(browser, farm)
    try:
        farm.run(farm.servers["TS03"].stop_listening())
        wait_until(page, lambda d: shown(d, "TS03", "health") == "down", "TS03 shown down")
        for user in on_ts03:
            farm.connect(user)  # moved at once: failover_after = "0s"
        farm.connect("alice")  # back to her server: sticky-hit
        farm.refused("mallory")  # a deny route
        farm.send_raw(b"GET / HTTP/1.1\r\nHost: rdp\r\n\r\n")  # not RDP at all
        farm.connect("ivan")

        reasons = {"failover", "sticky-hit", "denied", "new"} if on_ts03 else {"sticky-hit", "denied", "new"}
        wait_until(page, lambda d: reasons <= {r["reason"] for r in decision_rows(d)}, f"decisions {reasons}")
        wait_until(page, lambda d: any(r["user"] == "ivan" for r in decision_rows(d)), "the latest decision")
        assert shown(page, "TS04", "admin-state") == "drain"
        assert shown(page, "TS05", "sessions") == "1"
        page.find_element(By.CSS_SELECTOR, "#lookup-user").send_keys("alice")
        page.find_element(By.CSS_SELECTOR, "#lookup-go").click()
        wait_until(page, lambda d: text_of(d, "#lookup-reason") == "sticky-hit", "alice's lookup")
        assert severe_console_entries(page) == []
        target = os.environ.get("RDPB_SCREENSHOT")
        if target:
            page.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                 {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
            try:
                assert page.execute_script("return [innerWidth, innerHeight]") == list(WINDOW)
                Path(target).write_bytes(page.get_screenshot_as_png())
            finally:
                page.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    finally:
        leave(browser)


def test_the_session_directory_panel_shows_hosts_ages_errors_and_duplicates(
        browser: Any, make_farm: Any, tmp_path: Path) -> None:
    tokens = tmp_path / "push.toml"
    tokens.write_text("".join(f'{s} = "{s.lower()}-token-0123456789"\n' for s in ("TS01", "TS02", "TS03")))
    tokens.chmod(0o600)
    farm = make_farm({"default": ["TS01", "TS02", "TS03"]}, routes="",
                     extra=f'[sessions]\nsource = "push"\npush_tokens = "{tokens}"\n')
    for server in ("TS01", "TS02"):
        farm.api(f"/api/v1/hosts/{server}/sessions", method="PUT", token=f"{server.lower()}-token-0123456789",
                 body={"sessions": [{"user": "alice", "state": "disconnected"}, {"user": f"u-{server}"}],
                       "deny_new": server == "TS02"})
    page = open_dashboard(browser, farm)
    try:
        wait_until(page, lambda d: d.find_element(By.CSS_SELECTOR, "#hosts-panel").is_displayed(), "hosts panel")
        rows = page.execute_script("""
            return [...document.querySelectorAll('#hosts tbody tr')].map((tr) => [tr.dataset.host,
                tr.dataset.fresh, tr.children[1].innerText, tr.children[2].innerText, tr.children[3].innerText]);""")
        assert [r[:4] for r in rows] == [["TS01", "true", "2", "1 / 1"], ["TS02", "true", "2", "1 / 1"],
                                         ["TS03", "false", "0", "0 / 0"]]
        assert rows[2][4] == "never"
        assert "refuses new logons" in text_of(page, '[data-host="TS02"] .server')
        assert text_of(page, "#duplicates") == "Sessions on several hosts: alice (TS01, TS02)"
        assert severe_console_entries(page) == []
    finally:
        leave(browser)


def test_a_backup_and_a_server_in_slow_start_are_marked(browser: Any, make_farm: Any) -> None:
    farm = make_farm({"default": ["TS01", "TS02", "SPARE"]}, routes="",
                     options={"TS02": 'slowstart = "10m"', "SPARE": "backup = true"})
    page = open_dashboard(browser, farm)
    try:
        wait_until(page, lambda d: shown(d, "SPARE", "backup") == "backup", "SPARE marked as a backup")
        assert not page.find_element(By.CSS_SELECTOR, '[data-server="TS01"] .backup').is_displayed()
        assert not page.find_element(By.CSS_SELECTOR, '[data-server="TS02"] .ramp').is_displayed()  # at start
        for state in ("drain", "ready"):  # out of drain: a ramp begins
            farm.api("/api/v1/servers/TS02/state", method="POST", body={"state": state}, token=farm.token)
        wait_until(page, lambda d: shown(d, "TS02", "ramp").startswith("ramping "), "TS02 shown ramping")
        pill = page.find_element(By.CSS_SELECTOR, '[data-server="TS02"] .ramp')
        assert shown(page, "TS02", "ramp") == "ramping 5%"  # 10 minutes: it stays at the floor for 30 s
        assert "slow start: 5% of its weight" in pill.get_attribute("title")
        assert farm.server("TS02")["slowstart"]["share"] == 0.05
        assert severe_console_entries(page) == []
    finally:
        leave(browser)


def test_a_capped_server_shows_its_usage_against_max_sessions(browser: Any, make_farm: Any) -> None:
    farm = make_farm({"default": ["TS01", "TS02"]}, routes="", caps={"TS01": 1})
    page = open_dashboard(browser, farm)
    try:
        wait_until(page, lambda d: shown(d, "TS01", "connections") == "0 / 1", "TS01's usage against its cap")
        assert shown(page, "TS02", "connections") == "0"  # no cap: the plain count
        assert {farm.open_session(user) for user in ("alice", "bob")} == {"TS01", "TS02"}  # TS01 is full
        wait_until(page, lambda d: shown(d, "TS01", "connections") == "1 / 1", "TS01 at its cap")
        cell = page.find_element(By.CSS_SELECTOR, '[data-server="TS01"] .connections')
        assert "at-cap" in cell.get_attribute("class") and "max_sessions 1" in cell.get_attribute("title")
        assert severe_console_entries(page) == []
    finally:
        leave(browser)
