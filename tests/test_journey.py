"""The whole journey in Chromium, in each of the person's languages: on a phone set to the language (its menu saying
which catalogues no speaker has reviewed), three real photos screened on the device, the six questions answered, a
PIN, consent, sent: the confirmation says the case is locked and offers its link in a one-line box to share or copy;
the phone allows notifications. The expert (desktop: the answer panel beside the case, each photo and its heat map
two squares of one size) asks a question, in the person's language or in English. The sending phone's list shows the
case as asked with a "new message" badge and a notification, by its device key (no PIN), and opens the case without
the PIN; a second browser with the same link finds it locked and needs the PIN. The person replies; the expert
concludes (in Portuguese first "retake the photo", which keeps the case open: the person sends a new photo on the
same link, then the expert concludes); the person reads the conclusion, marked new, in their language, told when
the expert wrote in another one. On each of the person's pages: axe-core (no violation at all), nothing wider
than the phone, no word cut in two. A screenshot of each step at 412 px in the artefacts folder, named by
language (journey-<language>-<step>.png). And a case composed offline: it waits on the phone, can be removed, and
arrives exactly once when the server is back."""

from __future__ import annotations

import pytest

from browser import (EXPERT, axe, consent_and_send, desktop, english_left, expert_signs_in, load_catalogues,
                     need_browser, phone, prefer, press, screen, shown, wait)
from conftest import chromium

from mpoxscan.deploy.runtime import bundled_model
from mpoxscan.web import i18n
from mpoxscan.web.app import create_app
from mpoxscan.web.cases import add_expert, case_by_number
from mpoxscan.web.settings import Settings
from mpoxscan.web.testing import ServerThread

#: Per language: three photos of msld-v2 (two of one patient, one of another skin problem) so that no two cases are
#: alike, the answers to the six questions, the expert's request (canned, and a question with the language it is
#: written in), the person's reply, the expert's verdicts (more than one: "retake" keeps the case open) and message
#: with its language.
JOURNEYS = {
    "en": (("Monkeypox/MKP_10_01.jpg", "Monkeypox/MKP_10_02.jpg", "Healthy/HEALTHY_02_01.jpg"),
           {"symptom_duration": "3-7-days", "body_site": "hands", "fever": "yes", "swollen_glands": "yes",
            "mpox_contact": "unknown", "age_band": "18-29"},
           "another-photo", ("Does it itch or hurt?", "en"), "Since last week; it itches. Here is a closer photo.",
           ("likely-mpox",), ("Thank you. Please get tested at the health centre this week.", "en")),
    "fr": (("Monkeypox/MKP_17_01.jpg", "Monkeypox/MKP_17_02.jpg", "Chickenpox/CHP_02_01.jpg"),
           {"symptom_duration": "under-3-days", "body_site": "face", "fever": "no", "swollen_glands": "unknown",
            "mpox_contact": "yes", "age_band": "30-44"},
           "since-when", ("Est-ce que ça démange ou fait mal ?", "fr"), "Depuis deux jours ; ça démange un peu.",
           ("see-health-worker",), ("Merci. Montrez la lésion à l'infirmière du centre de santé cette semaine.", "fr")),
    "pt": (("Monkeypox/MKP_18_01.jpg", "Monkeypox/MKP_18_02.jpg", "Measles/MSL_01_01.jpg"),
           {"symptom_duration": "1-3-weeks", "body_site": "genitals-anus", "fever": "unknown", "swollen_glands": "no",
            "mpox_contact": "no", "age_band": "45-64"},
           "closer-photo", ("Tem comichão ou dói?", "pt"), "Dói um pouco, sobretudo à noite.",
           ("retake-photo", "see-health-worker"),
           ("Thank you: this photo is clear. Please show the lesion to a nurse this week.", "en")),
    "es": (("Monkeypox/MKP_19_01.jpg", "Monkeypox/MKP_19_02.jpg", "HFMD/HFMD_01_01.jpg"),
           {"symptom_duration": "over-3-weeks", "body_site": "several", "fever": "yes", "swollen_glands": "no",
            "mpox_contact": "unknown", "age_band": "5-17"},
           "since-when", ("¿Le pica o le duele?", "es"), "Desde hace un mes; no me duele.",
           ("unlikely-mpox",), ("Gracias. Si la lesión cambia, escríbanos de nuevo.", "es")),
    "sw": (("Monkeypox/MKP_20_01.jpg", "Monkeypox/MKP_20_02.jpg", "Cowpox/CWP_01_01.jpg"),
           {"symptom_duration": "unknown", "body_site": "legs-feet", "fever": "no", "swollen_glands": "yes",
            "mpox_contact": "yes", "age_band": "65-plus"},
           "another-photo", ("Is it itchy or painful?", "en"), "Inawasha kidogo tangu wiki iliyopita.",
           ("see-health-worker",), ("Asante. Tafadhali muone muuguzi wa kituo cha afya wiki hii.", "sw")),
}
#: The photo the person sends when the expert asks for a new one (after "retake the photo").
RETAKEN = "Monkeypox/MKP_21_01.jpg"
PIN = "4711"
#: The elements that stick out past either edge of the phone's screen (text that does not wrap, a wide table, a row
#: pushed off the left edge by a long menu); not the file inputs, hidden from everyone (aria-hidden) far to the left
#: behind the buttons that open them.
WIDER_THAN_THE_SCREEN = """
return [...document.body.querySelectorAll('*')].filter((e) => e.checkVisibility() && !e.closest('[aria-hidden=true]')
  && (e.getBoundingClientRect().right > document.documentElement.clientWidth + 1
      || e.getBoundingClientRect().left < -1))
  .map((e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : ''));
"""
#: The words cut in two at a line's end though they would fit on one line (a long link may be cut: it must; a
#: hyphenated word may end a line at its hyphen).
WORDS_CUT = """
const cut = [], walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT), range = document.createRange();
while (walker.nextNode()) {
  const node = walker.currentNode, box = node.parentElement;
  if (!box.checkVisibility()) continue;
  for (const m of node.textContent.matchAll(/[^\\s-]+/g)) {
    range.setStart(node, m.index);
    range.setEnd(node, m.index + m[0].length);
    const rects = [...range.getClientRects()].filter((r) => r.width > 0);
    const width = rects.reduce((sum, r) => sum + r.width, 0);
    if (new Set(rects.map((r) => Math.round(r.top))).size > 1 && width < box.getBoundingClientRect().width) {
      cut.push(m[0]);
    }
  }
}
return cut;
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One app and server for the five journeys (the model is loaded once), with the expert's account."""
    app = create_app(Settings(model=bundled_model(), data_dir=tmp_path_factory.mktemp("journey-data")))
    with ServerThread(app) as running:
        with app.state.sessions() as db:
            add_expert(db, *EXPERT)
        yield app, running.url


def _fits_the_phone(driver, where: str) -> None:
    assert driver.execute_script(WIDER_THAN_THE_SCREEN) == [], f"{where}: wider than a 412 px screen"
    assert driver.execute_script(WORDS_CUT) == [], f"{where}: words cut in two"


def _person_page_checks(driver, code: str, where: str) -> None:
    """On each of the person's pages: in the language (its lang attribute the catalogue's locale: pt-PT), nothing left
    in English, no axe-core violation, nothing wider than the phone, no word cut in two."""
    assert driver.execute_script("return document.documentElement.lang") == i18n.locale(code), where
    if code != "en":
        assert english_left(driver, code) == [], where
    axe(driver, f"{where} ({code})")
    _fits_the_phone(driver, f"{where} ({code})")


def _shot(driver, path, element_id: str | None = None) -> None:
    if element_id:
        driver.execute_script(f"document.getElementById('{element_id}').scrollIntoView()")
    else:
        driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))


#: The steps each journey leaves a screenshot of.
STEPS = ("1-three-photos", "2-questions", "3-sent", "4-dashboard-case", "5-my-cases-new", "6-follow-up-question",
         "7-other-browser-locked", "8-dashboard-reply", "9-follow-up-conclusion")


def _same_size_pairs(driver) -> list:
    """Each photo and its heat map on the expert's case page: [width, height] of both (they must be one square)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('.pair')].map((p) => [...p.querySelectorAll('img')].map((i) => "
        "[Math.round(i.getBoundingClientRect().width), Math.round(i.getBoundingClientRect().height)]))")


def _expert_writes(driver, language: str) -> None:
    """The expert says which language their words are in (the person is told when it is not theirs)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    menus = [m for m in driver.find_elements(By.CSS_SELECTOR, "select[name=language]") if m.is_displayed()]
    for menu in menus:
        Select(menu).select_by_value(language)


@pytest.mark.integration
@pytest.mark.parametrize("code", i18n.LANGUAGES)
def test_the_whole_journey_in_each_language_in_chromium(code, server, shared_data, tmp_path, artefacts):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    need_browser()
    app, url = server
    t = load_catalogues()[code]
    names, answers, request, (question, asked_in), reply, verdicts, (message, written_in) = JOURNEYS[code]
    photos = [shared_data / "msld-v2" / name for name in names]
    shot = lambda step: artefacts / f"journey-{code}-{step}.png"  # noqa: E731
    text = lambda element_id: driver.find_element(By.ID, element_id).text  # noqa: E731
    driver = phone(chromium(tmp_path / "profile"))
    other = None
    try:
        # A phone whose browser is set to the language (its Accept-Language and navigator.languages).
        prefer(driver, driver.execute_script("return navigator.userAgent"),
               "en-US,en" if code == "en" else f"{code}-XY,{code};q=0.9,en;q=0.5")
        driver.get(url + "/")
        wait(driver, "return document.body.dataset.ready")
        assert driver.execute_script("return document.documentElement.lang") == i18n.locale(code)
        assert driver.title == t["page.title"] and text("status") == t["status.device"] and text("pick") == t["pick"]
        # The menu names each language in itself, and says of each catalogue no speaker reviewed that it is not.
        menu = Select(driver.find_element(By.ID, "language"))
        assert menu.first_selected_option.text == i18n.menu_name(code)
        assert [o.text for o in menu.options] == [i18n.menu_name(c) for c in i18n.LANGUAGES]
        if code != "en":
            assert t["_meta"]["unreviewed"] in menu.first_selected_option.text

        # Three photos, each screened on the phone.
        first = screen(driver, photos[0])
        assert first and first["computed"] == "device"
        assert text("more-intro") == t["more.intro"]
        for n, photo in ((2, photos[1]), (3, photos[2])):
            driver.find_element(By.ID, "more-photo").send_keys(str(photo))
            assert wait(driver, f"return (window.mpoxscanMore || []).length === {n - 1} && "
                                f"document.querySelectorAll('#more-list li').length === {n - 1}"), text("more-status")
            assert text("more-status").startswith(t["more.added"].split("{")[0].format())
        assert [m["computed"] for m in driver.execute_script("return window.mpoxscanMore")] == ["device", "device"]
        assert text("more-intro") == t["more.full"]
        _person_page_checks(driver, code, "the phone page with three photos")
        _shot(driver, shot("1-three-photos"), "more")

        # The six questions, each answer shown in the language; a PIN; consent; sent.
        for field, value in answers.items():
            menu = Select(driver.find_element(By.ID, f"q-{field}"))
            menu.select_by_value(value)
            assert menu.first_selected_option.text == t[f"q.{field}.{value}"]
        _shot(driver, shot("2-questions"), "questions")
        driver.find_element(By.ID, "pin").send_keys(PIN)
        if code == "en":  # a phone with a share sheet (Web Share): the link goes to it
            driver.execute_script("navigator.share = (data) => { window.mpoxscanShared = data; return Promise.resolve(); }")
        sent = consent_and_send(driver)
        link = url + sent["follow_up"]
        assert sent["photos"] == 3 and sent["locked"] and sent["device_key"]
        assert text("sent-text") == t["sent"].replace("{number}", sent["number"])
        # Issue 28, item 8: what was chosen is no longer offered (no empty PIN box, no ticked consent), and the
        # confirmation says that the PIN locks the case.
        assert not shown(driver, "pin") and not shown(driver, "consent") and not shown(driver, "send")
        assert text("sent-lock") == t["sent.pin.set"]
        # Item 2: the link in a one-line box (never cut in two), to share or copy.
        box = driver.find_element(By.ID, "sent-link-box")
        assert box.get_attribute("value") == link and box.tag_name == "input" and box.get_attribute("readonly")
        assert driver.find_element(By.ID, "sent-link").get_attribute("href") == link
        if code == "en":
            driver.find_element(By.ID, "share-link").click()
            assert wait(driver, "return window.mpoxscanShared && window.mpoxscanShared.url") == link
            driver.execute_cdp_cmd("Browser.grantPermissions", {"origin": url, "permissions": [
                "clipboardReadWrite", "clipboardSanitizedWrite"]})
            driver.find_element(By.ID, "copy-link").click()
            assert wait(driver, "return document.getElementById('copy-status').textContent") == t["sent.copied"]
            assert driver.execute_async_script(
                "const done = arguments[arguments.length - 1]; navigator.clipboard.readText().then(done, "
                "(e) => done(String(e)))") == link
        else:
            assert not shown(driver, "share-link")  # no share sheet in this browser: copy only
        # This phone keeps the device key beside the link, never in an address.
        kept = driver.execute_script("return JSON.parse(localStorage.getItem('mpoxscan-cases'))[0]")
        assert kept["key"] == sent["device_key"] and sent["device_key"] not in kept["link"]
        # Notifications: the button (the test's browser grants what the person would).
        driver.execute_cdp_cmd("Browser.grantPermissions", {"origin": url, "permissions": ["notifications"]})
        assert wait(driver, "return !document.getElementById('notify').hidden")
        driver.find_element(By.ID, "notify").click()
        assert wait(driver, "return document.getElementById('notify-status').textContent") == t["notify.on"]
        _person_page_checks(driver, code, "the phone page once sent")
        _shot(driver, shot("3-sent"), "sent")

        # The expert reads the case (three photos beside their maps, the six answers, the language) and asks.
        expert_signs_in(driver, url)
        driver.find_element(By.LINK_TEXT, sent["number"]).click()
        assert wait(driver, "return document.images.length === 6 && "
                            "[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert text("case-language").endswith(f"({code})")
        assert all(text(f"q-{field}") for field in answers)  # the six answers, in the expert's English
        pairs = _same_size_pairs(driver)
        assert len(pairs) == 3 and all(a == b and a[0] == a[1] > 200 for a, b in pairs), pairs
        # Item 7: the answer panel is on the first screen, beside the case.
        assert driver.execute_script("return document.getElementById('decide').getBoundingClientRect().top "
                                     "< innerHeight && document.getElementById('decide').getBoundingClientRect().left "
                                     "> document.querySelector('.case-main').getBoundingClientRect().right")
        axe(driver, f"the case page ({code})")
        _shot(driver, shot("4-dashboard-case"))
        press(driver, driver.find_element(By.CSS_SELECTOR, f"input[name=request][value='{request}']"))
        driver.find_element(By.CSS_SELECTOR, "#ask-form textarea[name=text]").send_keys(question)
        Select(driver.find_element(By.ID, "ask-language")).select_by_value(asked_in)
        press(driver, driver.find_element(By.ID, "send-question"))
        assert wait(driver, "return document.getElementById('asked-notice') !== null")

        # Item 1: the sending phone's list shows the locked case as asked, with the "new" badge, and a notification
        # (its device key: no PIN asked).
        phone(driver)
        driver.get(url + "/")
        item = "document.querySelector('#my-cases-list li')"
        assert wait(driver, f"return {item}?.dataset.status === 'asked' && {item}?.dataset.new === '1'")
        assert driver.find_element(By.CSS_SELECTOR, "#my-cases-list .new-badge").text == t["cases.new"]
        assert t["cases.status.asked"] in driver.find_element(By.ID, "my-cases-list").text
        assert wait(driver, "return (window.mpoxscanNotified || []).length") == 1
        assert driver.execute_script("return window.mpoxscanNotified") == [sent["number"]]
        _person_page_checks(driver, code, "the phone page with a new message")
        _shot(driver, shot("5-my-cases-new"), "my-cases")
        # The list's link opens the case on this phone without the PIN; the question is marked new.
        press(driver, driver.find_element(By.CSS_SELECTOR, "#my-cases-list a"))
        assert wait(driver, "return document.getElementById('reply-section') !== null")
        [asked] = driver.find_elements(By.CSS_SELECTOR, "#thread li[data-new]")
        assert t[f"request.{request}"] in asked.text and question in asked.text
        assert asked.find_element(By.CLASS_NAME, "new-badge").text == t["thread.new"]
        assert text("reply-title") == t["reply.title"]
        if asked_in != code:  # item 6: told, in their language, that the expert wrote in another one
            note = t["thread.written"].replace("{language}", i18n.language_in(asked_in, code))
            assert asked.find_element(By.CLASS_NAME, "written-in").text == note
            assert asked.find_element(By.CLASS_NAME, "message-text").get_attribute("lang") == asked_in
        else:
            assert not asked.find_elements(By.CLASS_NAME, "written-in")
        _person_page_checks(driver, code, "the follow-up page with a question")
        _shot(driver, shot("6-follow-up-question"), "thread")

        # Anyone else with the link (another browser): locked, the PIN needed.
        other = phone(chromium(tmp_path / "other-profile"))
        prefer(other, other.execute_script("return navigator.userAgent"),
               "en-US,en" if code == "en" else f"{code}-XY,{code};q=0.9,en;q=0.5")
        other.get(link)
        assert other.find_element(By.ID, "locked").text == t["pin.locked"] and sent["number"] not in other.page_source
        assert other.execute_script(
            "return fetch(location.pathname.replace('/c/', '/api/cases/')).then((r) => r.status)") == 401
        _person_page_checks(other, code, "the follow-up page in another browser")
        _shot(other, shot("7-other-browser-locked"))
        other.find_element(By.ID, "pin").send_keys(PIN)
        other.find_element(By.ID, "unlock").click()
        assert wait(other, "return document.getElementById('reply-section') !== null")
        other.quit()
        other = None

        # The person replies on their phone.
        driver.find_element(By.ID, "reply-text").send_keys(reply)
        # The photo field speaks the person's language (the browser's own file field would not): a button and the
        # chosen file's name, from the catalogue.
        assert text("reply-pick") == t["pick"] and text("reply-photo-name") == t["reply.photo.none"]
        assert not driver.find_element(By.ID, "reply-photo").is_displayed()
        if code == "en":  # one photo reply is enough: the server screens it, which takes a while here
            driver.find_element(By.ID, "reply-photo").send_keys(str(shared_data / "msld-v2/Monkeypox/MKP_11_01.jpg"))
            assert text("reply-photo-name") == t["reply.photo.chosen"].replace("{name}", "MKP_11_01.jpg")
        driver.find_element(By.ID, "send-reply").click()
        assert wait(driver, "return document.getElementById('reply-sent') !== null")
        assert text("reply-sent") == t["reply.sent"] and text("waiting") == t["reply.waiting"]

        # The expert sees the reply and concludes (a "retake" first keeps the case open for a new photo).
        for k, verdict in enumerate(verdicts):
            desktop(driver)
            driver.get(url + f"/expert/cases/{sent['number']}")
            assert reply in driver.find_element(By.ID, "thread").text
            assert len(driver.find_elements(By.CSS_SELECTOR, "#thread .reply-photo img")) == (code == "en") + k
            assert text("case-status") == "replied"
            if k == 0:
                _shot(driver, shot("8-dashboard-reply"), "thread")
            press(driver, driver.find_element(By.CSS_SELECTOR, f"input[name=verdict][value='{verdict}']"))
            press(driver, driver.find_element(By.CSS_SELECTOR, "input[name=label][value='unsure']"))
            if verdict != "retake-photo":
                driver.find_element(By.NAME, "message").send_keys(message)
                Select(driver.find_element(By.ID, "answer-language")).select_by_value(written_in)
            press(driver, driver.find_element(By.ID, "send-answer"))
            if verdict == "retake-photo":  # item 5: the same link takes the new photo
                assert wait(driver, "return document.getElementById('asked-notice') !== null")
                phone(driver)
                driver.get(link)
                assert wait(driver, "return document.getElementById('reply-section') !== null")
                assert text("reply-title") == t["reply.retake.title"]
                assert t["verdict.retake-photo"] in driver.find_element(By.ID, "thread").text
                _person_page_checks(driver, code, "the follow-up page asking for a new photo")
                _shot(driver, shot("8b-follow-up-retake"), "reply-section")
                driver.find_element(By.ID, "reply-photo").send_keys(str(shared_data / "msld-v2" / RETAKEN))
                driver.find_element(By.ID, "send-reply").click()
                assert wait(driver, "return document.getElementById('reply-sent') !== null")
            else:
                assert wait(driver, "return document.getElementById('answered-notice') !== null")

        # The person reads the conclusion, in their language, marked new (and told if written in another one).
        phone(driver)
        driver.get(link)
        assert text("answer-new") == t["thread.new"]
        assert text("verdict-text") == t[f"verdict.{verdicts[-1]}"] and text("expert-message") == message
        if written_in != code:
            assert text("expert-message-language") == t["thread.written"].replace(
                "{language}", i18n.language_in(written_in, code))
        else:
            assert not driver.find_elements(By.ID, "expert-message-language")
        _person_page_checks(driver, code, "the follow-up page with the conclusion")
        _shot(driver, shot("9-follow-up-conclusion"), "expert-answer")
    finally:
        driver.quit()
        if other is not None:
            other.quit()

    with app.state.sessions() as db:
        case = case_by_number(db, sent["number"])
        assert case.language == code and case.status == "answered" and case.verdict == verdicts[-1]
        assert [p.computed for p in case.photos] == ["device"] * 3
        assert {field: getattr(case, field) for field in answers} == answers
        kinds = [(m.author, m.kind) for m in case.messages][1:]
        expected = [("person", "reply")] + [("expert", "conclusion"), ("person", "reply")] * (len(verdicts) - 1)
        assert kinds == expected + [("expert", "conclusion")]
    for step in STEPS + (("8b-follow-up-retake",) if "retake-photo" in verdicts else ()):
        assert (artefacts / f"journey-{code}-{step}.png").stat().st_size > 10_000


def _compose_and_send(driver, photo, pin: str = "") -> None:
    from selenium.webdriver.common.by import By

    assert screen(driver, photo)
    if pin:
        driver.find_element(By.ID, "pin").send_keys(pin)
    driver.find_element(By.ID, "consent").click()
    driver.find_element(By.ID, "send").click()


@pytest.mark.integration
def test_a_case_composed_offline_waits_on_the_phone_and_arrives_once(shared_data, tmp_path, artefacts):
    """Issue 28, item 4: the server out of reach (stopped: for the page and its service worker alike), the person
    sends two cases: each waits on the phone under "Waiting to send", with the consent given then; one is removed.
    The page opened again while the server is away comes from the service worker's cache, the case still waiting.
    The server back, Background Sync wakes the service worker (dispatched through the DevTools protocol, as the
    browser does when the connection returns): it sends the case, and the open page lists it (its device key
    kept) without being reloaded. A third case, composed with the server away again, goes on the next visit (the
    way of a browser without Background Sync). Each arrives exactly once; no later visit sends one again, and the
    removed one never arrives."""
    from selenium.webdriver.common.by import By
    from sqlalchemy import select

    from mpoxscan.web.tables import Case

    need_browser()
    t = load_catalogues()["en"]
    data = tmp_path / "data"
    app = create_app(Settings(model=bundled_model(), data_dir=data))
    server = ServerThread(app).start()
    url, port = server.url, server.port
    driver = phone(chromium(tmp_path / "profile"))
    waiting = "return (window.mpoxscanOutbox || []).join()"
    msld = shared_data / "msld-v2"

    def back():  # the server again, at the same address (the same site for the browser)
        nonlocal app, server
        app = create_app(Settings(model=bundled_model(), data_dir=data))
        server = ServerThread(app, port=port).start()

    try:
        driver.get(url + "/")
        wait(driver, "return document.body.dataset.ready && document.body.dataset.offline")  # kept for offline use
        server.stop()  # no connection
        for photo, pin in (("Monkeypox/MKP_03_01.jpg", "2580"), ("Healthy/HEALTHY_03_01.jpg", "")):
            _compose_and_send(driver, msld / photo, pin)
            assert wait(driver, "return document.getElementById('send-status').textContent === arguments[0]",
                        args=(t["send.queued"],)), text_of(driver, "send-status")
            assert not shown(driver, "compose")  # sent as far as the person is concerned: nothing to do twice
        assert wait(driver, waiting + " === 'waiting,waiting'")
        items = driver.find_elements(By.CSS_SELECTOR, "#outbox-list li")
        assert [i.find_element(By.TAG_NAME, "span").text.split(",")[0] for i in items] == ["1 photo", "1 photo"]
        assert driver.find_element(By.CSS_SELECTOR, "#outbox h2").text == t["outbox.title"]
        axe(driver, "the phone page with cases waiting")
        driver.execute_script("document.getElementById('outbox').scrollIntoView()")
        driver.save_screenshot(str(artefacts / "phone-waiting-to-send.png"))
        # The second one is removed (after a confirmation).
        items[1].find_element(By.TAG_NAME, "button").click()
        driver.switch_to.alert.accept()
        assert wait(driver, waiting + " === 'waiting'")
        assert text_of(driver, "outbox-status") == t["outbox.removed"]
        # Opened again with the server still away: the page comes from the service worker, the case still waits.
        driver.get(url + "/")
        wait(driver, "return document.body.dataset.ready")
        assert wait(driver, waiting + " === 'waiting'")
        # The server is back: Background Sync wakes the service worker (this fresh profile's one registration is
        # number 0), which sends the case; the open page is told and lists it, without a reload.
        back()
        driver.execute_cdp_cmd("ServiceWorker.enable", {})
        driver.execute_cdp_cmd("ServiceWorker.dispatchSyncEvent", {"origin": url, "registrationId": "0",
                                                                  "tag": "mpoxscan-outbox", "lastChance": False})
        assert wait(driver, waiting + " === '' && (window.mpoxscanOutboxSent || 0) === 1")
        mine = driver.execute_script("return JSON.parse(localStorage.getItem('mpoxscan-cases'))")
        assert len(mine) == 1 and mine[0]["key"]  # locked with its PIN: the device key kept
        first = mine[0]["number"]
        assert text_of(driver, "outbox-status") == t["outbox.sent"].replace("{number}", first)
        assert wait(driver, "return document.querySelector('#my-cases-list li')?.dataset.status") == "waiting"
        axe(driver, "the phone page once the waiting case is sent")
        driver.execute_script("document.getElementById('my-cases').scrollIntoView()")
        driver.save_screenshot(str(artefacts / "phone-sent-when-back-online.png"))
        # Away again: a third case waits, and goes on the next visit once the server is back.
        server.stop()
        _compose_and_send(driver, msld / "Monkeypox" / "MKP_04_01.jpg")
        assert wait(driver, waiting + " === 'waiting'")
        back()
        driver.get(url + "/")
        wait(driver, "return document.body.dataset.ready")
        assert wait(driver, waiting + " === '' && document.querySelectorAll('#my-cases-list li').length === 2")
        driver.get(url + "/")  # another visit: nothing left to send
        wait(driver, "return document.body.dataset.ready")
        assert wait(driver, "return document.querySelectorAll('#my-cases-list li').length") == 2
        numbers = [c["number"] for c in driver.execute_script("return JSON.parse(localStorage.getItem('mpoxscan-cases'))")]
        with app.state.sessions() as db:
            cases = {c.number: c for c in db.scalars(select(Case))}
        assert sorted(cases) == sorted(numbers) and first in cases  # exactly the two kept, each once
        assert cases[first].pin_hash is not None and all(c.idempotency_hash for c in cases.values())
    finally:
        driver.quit()
        server.stop()


def text_of(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")
