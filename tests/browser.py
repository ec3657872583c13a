"""What the browser tests share: Chromium at a phone's or a desktop's size, waiting on the page, screening a photo,
sending, the expert's sign-in, axe-core, the browser's languages, and the catalogues the pages are checked against."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from mpoxscan.web import i18n
from mpoxscan.web.settings import ORT_DIST


#: The expert account the browser tests create.
EXPERT = ("doc@example.org", "correct horse battery staple")


def need_browser():
    if not ORT_DIST.is_dir():
        message = "needs onnxruntime-web (make setup runs npm ci)"
        if os.environ.get("MPOXSCAN_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)


def phone(driver):
    """Emulate a phone's screen, 412 x 915 CSS pixels (a window cannot do it: Chromium's are at least 500 px wide)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 412, "height": 915, "deviceScaleFactor": 1, "mobile": True})
    return driver


def desktop(driver):
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.set_window_size(1280, 1000)


def shown(driver, element_id: str) -> bool:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).is_displayed()


def press(driver, element) -> None:
    """Click an element after bringing it to the middle of the view, as a person scrolls to it: the case page's
    answer panel scrolls on its own and sticks beside the case, so WebDriver's own scrolling can leave a moving
    target under its click."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def wait(driver, script: str, tries: int = 300, args: tuple = ()):
    """Poll a JavaScript expression until it is truthy (30 s at most); its last value. ``args``: the script's
    arguments[0], [1], ..."""
    for _ in range(tries):
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.1)
    return value


def screen(driver, photo: Path):
    """Choose a photo on the page and return the answer the page computed."""
    from selenium.webdriver.common.by import By

    driver.execute_script("window.mpoxscanLast = null")
    driver.find_element(By.ID, "photo").send_keys(str(photo))
    return wait(driver, "return window.mpoxscanLast || null")


def consent_and_send(driver) -> dict:
    """Tick consent, press Send, and return the stored case the page received (checked to be waiting)."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "consent").click()
    driver.find_element(By.ID, "send").click()
    sent = wait(driver, "return window.mpoxscanSent || null")
    assert sent and sent["status"] == "waiting"
    return sent


def expert_signs_in(driver, url: str) -> None:
    """The expert signs in on the dashboard (at desktop size) and lands on the queue."""
    from selenium.webdriver.common.by import By

    desktop(driver)
    driver.get(url + "/expert/login")
    driver.find_element(By.NAME, "email").send_keys(EXPERT[0])
    driver.find_element(By.NAME, "password").send_keys(EXPERT[1])
    driver.find_element(By.ID, "sign-in").click()
    wait(driver, "return document.getElementById('queue') !== null")


AXE = ORT_DIST.parents[1] / "axe-core" / "axe.min.js"  # an npm dev dependency: read by the tests, never served


def axe(driver, where: str) -> list[dict]:
    """axe-core's audit of the page now open (its source injected with execute_script, so no page ships it): every
    violation as {id, impact, nodes}; fails on any (issue 28: zero violations on every page and state, the minor
    and moderate ones included)."""
    if not AXE.is_file():
        message = "needs axe-core (make setup runs npm ci)"
        if os.environ.get("MPOXSCAN_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    driver.execute_script(AXE.read_text())
    violations = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then((r) => done(r.violations.map((v) => ({id: v.id, "
        "impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' '))}))))"
        ".catch((e) => done(String(e)))")
    assert isinstance(violations, list), violations  # an error message otherwise
    assert not violations, f"{where}: {violations}"
    return violations


def load_catalogues() -> dict[str, dict]:
    return {code: json.loads((i18n.LOCALES / f"{code}.json").read_text(encoding="utf-8")) for code in i18n.LANGUAGES}


def strings(value) -> list[str]:
    """Every string of a catalogue value: a string, a list, or plural forms."""
    if isinstance(value, str):
        return [value]
    return list(value) if isinstance(value, list) else list(value.values())


VISIBLE_TEXT = """
const out = [document.title];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode, text = node.textContent.trim();
  if (text && node.parentElement.checkVisibility()) out.push(text);
}
for (const el of document.querySelectorAll("[aria-label]")) out.push(el.getAttribute("aria-label"));
return out;
"""


def english_left(driver, code: str) -> list[str]:
    """The visible texts of the page that are English catalogue texts with another text in ``code``'s catalogue."""
    catalogues = load_catalogues()
    translated = {t for k, v in catalogues[code].items() if not k.startswith("_") for t in strings(v)}
    english = {t for k, v in catalogues["en"].items() if not k.startswith("_") for t in strings(v)} - translated
    return [t for t in driver.execute_script(VISIBLE_TEXT) if t in english]


def prefer(driver, user_agent: str, accept_language: str) -> None:
    """The browser's own languages (navigator.languages and Accept-Language), as a phone set to them would send."""
    driver.execute_cdp_cmd("Emulation.setUserAgentOverride",
                           {"userAgent": user_agent, "acceptLanguage": accept_language})
