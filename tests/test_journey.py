"""The whole journey in Chromium, in each of the person's languages: on a phone set to the language, three real
photos screened on the device, the six questions answered, a PIN, consent, sent; the expert (desktop) reads the case
and asks a question; the person unlocks the follow-up page, reads the question in their language and replies; the
expert concludes; the person reads the conclusion, marked new, in their language. On each of the person's pages:
axe-core, nothing wider than the phone, no word cut in two. A screenshot of each step in the artefacts folder,
named by language (journey-<language>-<step>.png)."""

from __future__ import annotations

import pytest

from browser import (EXPERT, axe, consent_and_send, desktop, english_left, expert_signs_in, load_catalogues,
                     need_browser, phone, prefer, screen, wait)
from conftest import chromium

from mpoxscan.deploy.runtime import bundled_model
from mpoxscan.web import i18n
from mpoxscan.web.app import create_app
from mpoxscan.web.cases import add_expert, case_by_number
from mpoxscan.web.settings import Settings
from mpoxscan.web.testing import ServerThread

#: Per language: three photos of msld-v2 (two of one patient, one of another skin problem) so that no two cases are
#: alike, the answers to the six questions, the expert's request (canned, and a question in the person's language),
#: the person's reply, the expert's verdict and message.
JOURNEYS = {
    "en": (("Monkeypox/MKP_10_01.jpg", "Monkeypox/MKP_10_02.jpg", "Healthy/HEALTHY_02_01.jpg"),
           {"symptom_duration": "3-7-days", "body_site": "hands", "fever": "yes", "swollen_glands": "yes",
            "mpox_contact": "unknown", "age_band": "18-29"},
           "another-photo", "Does it itch or hurt?", "Since last week; it itches. Here is a closer photo.",
           "likely-mpox", "Thank you. Please get tested at the health centre this week."),
    "fr": (("Monkeypox/MKP_17_01.jpg", "Monkeypox/MKP_17_02.jpg", "Chickenpox/CHP_02_01.jpg"),
           {"symptom_duration": "under-3-days", "body_site": "face", "fever": "no", "swollen_glands": "unknown",
            "mpox_contact": "yes", "age_band": "30-44"},
           "since-when", "Est-ce que ça démange ou fait mal ?", "Depuis deux jours ; ça démange un peu.",
           "see-health-worker", "Merci. Montrez la lésion à l'infirmière du centre de santé cette semaine."),
    "pt": (("Monkeypox/MKP_18_01.jpg", "Monkeypox/MKP_18_02.jpg", "Measles/MSL_01_01.jpg"),
           {"symptom_duration": "1-3-weeks", "body_site": "genitals-anus", "fever": "unknown", "swollen_glands": "no",
            "mpox_contact": "no", "age_band": "45-64"},
           "closer-photo", "Tem comichão ou dói?", "Dói um pouco, sobretudo à noite.",
           "retake-photo", "Obrigado. Tire a foto de perto, com luz do dia."),
    "es": (("Monkeypox/MKP_19_01.jpg", "Monkeypox/MKP_19_02.jpg", "HFMD/HFMD_01_01.jpg"),
           {"symptom_duration": "over-3-weeks", "body_site": "several", "fever": "yes", "swollen_glands": "no",
            "mpox_contact": "unknown", "age_band": "5-17"},
           "since-when", "¿Le pica o le duele?", "Desde hace un mes; no me duele.",
           "unlikely-mpox", "Gracias. Si la lesión cambia, escríbanos de nuevo."),
    "sw": (("Monkeypox/MKP_20_01.jpg", "Monkeypox/MKP_20_02.jpg", "Cowpox/CWP_01_01.jpg"),
           {"symptom_duration": "unknown", "body_site": "legs-feet", "fever": "no", "swollen_glands": "yes",
            "mpox_contact": "yes", "age_band": "65-plus"},
           "another-photo", "Je, inawasha au inauma?", "Inawasha kidogo tangu wiki iliyopita.",
           "see-health-worker", "Asante. Tafadhali muone muuguzi wa kituo cha afya wiki hii."),
}
PIN = "4711"
#: The elements that stick out past the right edge of the phone's screen (text that does not wrap, a wide table).
WIDER_THAN_THE_SCREEN = """
return [...document.body.querySelectorAll('*')].filter((e) => e.checkVisibility()
  && e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
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
    """On each of the person's pages: in the language, nothing left in English, no serious axe-core violation, nothing
    wider than the phone, no word cut in two."""
    assert driver.execute_script("return document.documentElement.lang") == code, where
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


@pytest.mark.integration
@pytest.mark.parametrize("code", i18n.LANGUAGES)
def test_the_whole_journey_in_each_language_in_chromium(code, server, shared_data, tmp_path, artefacts):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    need_browser()
    app, url = server
    t = load_catalogues()[code]
    names, answers, request, question, reply, verdict, message = JOURNEYS[code]
    photos = [shared_data / "msld-v2" / name for name in names]
    shot = lambda step: artefacts / f"journey-{code}-{step}.png"  # noqa: E731
    text = lambda element_id: driver.find_element(By.ID, element_id).text  # noqa: E731
    driver = phone(chromium(tmp_path / "profile"))
    try:
        # A phone whose browser is set to the language (its Accept-Language and navigator.languages).
        prefer(driver, driver.execute_script("return navigator.userAgent"),
               "en-US,en" if code == "en" else f"{code}-XY,{code};q=0.9,en;q=0.5")
        driver.get(url + "/")
        wait(driver, "return document.body.dataset.ready")
        assert driver.execute_script("return document.documentElement.lang") == code
        assert driver.title == t["page.title"] and text("status") == t["status.device"] and text("pick") == t["pick"]
        assert Select(driver.find_element(By.ID, "language")).first_selected_option.text == t["_meta"]["name"]

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
        sent = consent_and_send(driver)
        assert sent["photos"] == 3 and sent["locked"]
        assert text("sent").startswith(t["sent"].split("{")[0] + sent["number"])
        _person_page_checks(driver, code, "the phone page once sent")
        _shot(driver, shot("3-sent"), "sent")

        # The expert reads the case (three photos, the six answers, the language) and asks.
        expert_signs_in(driver, url)
        driver.find_element(By.LINK_TEXT, sent["number"]).click()
        assert wait(driver, "return document.images.length === 6 && "
                            "[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert text("case-language").endswith(f"({code})")
        assert all(text(f"q-{field}") for field in answers)  # the six answers, in the expert's English
        _shot(driver, shot("4-dashboard-case"))
        driver.find_element(By.CSS_SELECTOR, f"input[name=request][value='{request}']").click()
        driver.find_element(By.CSS_SELECTOR, "#ask-form textarea[name=text]").send_keys(question)
        driver.find_element(By.ID, "send-question").click()
        assert wait(driver, "return document.getElementById('asked-notice') !== null")

        # The person: the link, locked; the PIN; the question in their language, marked new; a reply.
        phone(driver)
        driver.get(url + sent["follow_up"])
        assert text("locked") == t["pin.locked"] and sent["number"] not in driver.page_source
        _person_page_checks(driver, code, "the locked follow-up page")
        driver.find_element(By.ID, "pin").send_keys(PIN)
        driver.find_element(By.ID, "unlock").click()
        assert wait(driver, "return document.getElementById('reply-section') !== null")
        [asked] = driver.find_elements(By.CSS_SELECTOR, "#thread li[data-new]")
        assert t[f"request.{request}"] in asked.text and question in asked.text
        assert asked.find_element(By.CLASS_NAME, "new-badge").text == t["thread.new"]
        assert text("reply-title") == t["reply.title"]
        _person_page_checks(driver, code, "the follow-up page with a question")
        _shot(driver, shot("5-follow-up-question"), "thread")
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

        # The expert sees the reply and concludes.
        desktop(driver)
        driver.get(url + f"/expert/cases/{sent['number']}")
        assert reply in driver.find_element(By.ID, "thread").text
        assert len(driver.find_elements(By.CSS_SELECTOR, "#thread .reply-photo img")) == (code == "en")
        assert text("case-status") == "replied"
        _shot(driver, shot("6-dashboard-reply"), "thread")
        driver.find_element(By.CSS_SELECTOR, f"input[name=verdict][value='{verdict}']").click()
        driver.find_element(By.CSS_SELECTOR, "input[name=label][value='unsure']").click()
        driver.find_element(By.NAME, "message").send_keys(message)
        driver.find_element(By.ID, "send-answer").click()
        assert wait(driver, "return document.getElementById('answered-notice') !== null")

        # The person reads the conclusion, in their language, marked new.
        phone(driver)
        driver.get(url + sent["follow_up"])
        assert text("answer-new") == t["thread.new"]
        assert text("verdict-text") == t[f"verdict.{verdict}"] and text("expert-message") == message
        _person_page_checks(driver, code, "the follow-up page with the conclusion")
        _shot(driver, shot("7-follow-up-conclusion"), "expert-answer")
    finally:
        driver.quit()

    with app.state.sessions() as db:
        case = case_by_number(db, sent["number"])
        assert case.language == code and case.status == "answered" and case.verdict == verdict
        assert [p.computed for p in case.photos] == ["device"] * 3
        assert {field: getattr(case, field) for field in answers} == answers
        assert [(m.author, m.kind) for m in case.messages][1:] == [("person", "reply"), ("expert", "conclusion")]
        assert (case.messages[-2].photo_file is not None) == (code == "en")
    for step in ("1-three-photos", "2-questions", "3-sent", "4-dashboard-case", "5-follow-up-question",
                 "6-dashboard-reply", "7-follow-up-conclusion"):
        assert (artefacts / f"journey-{code}-{step}.png").stat().st_size > 10_000
