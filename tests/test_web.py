"""The screening app: API routes (bad requests included) and the phone page screening on the device in Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
import re

from browser import axe, consent_and_send, desktop, expert_signs_in, need_browser, phone, press, screen, shown, wait
from conftest import chromium

from mpoxscan.deploy.runtime import Screener, bundled_model
from mpoxscan.web.app import create_app
from mpoxscan.web.settings import ORT_DIST, Settings
from mpoxscan.web.testing import ServerThread, count_requests


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings(model=bundled_model(), data_dir=tmp_path_factory.mktemp("data"), max_upload_bytes=2 * 1024 * 1024,
                    max_pixels=4_000_000)


@pytest.fixture(scope="module")
def client(settings):
    from fastapi.testclient import TestClient

    with TestClient(create_app(settings)) as client:  # the lifespan runs: database and migrations
        yield client


def _jpeg(size=(320, 240), seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _post_photo(client, path: str, data: bytes):
    """Post a photo as the page does: a multipart form with one file field, ``photo``."""
    return client.post(path, files={"photo": ("photo", data, "application/octet-stream")})


def test_page_model_and_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and "mpoxscan" in page.text
    assert re.search(r'<script src="/assets/[0-9a-f]{16}/app.js">', page.text)  # versioned (assets.py)
    for header in ("content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options"):
        assert header in page.headers
    assert page.headers["cross-origin-opener-policy"] == "same-origin"  # isolated: the on-device runtime's threads
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    info = client.get("/api/model").json()
    assert info["positive_class"] == "Monkeypox" and info["preprocessing"]["input_size"] == 224
    assert "not a diagnosis" in info["disclaimer"]
    sw = client.get("/sw.js")
    assert sw.status_code == 200 and "javascript" in sw.headers["content-type"] and "__VERSION__" not in sw.text
    manifest = client.get("/static/manifest.webmanifest")
    assert manifest.headers["content-type"].startswith("application/manifest+json")
    for icon in manifest.json()["icons"]:  # installable: its icons exist
        assert client.get(icon["src"]).status_code == 200
    assert 'rel="manifest"' in page.text
    model = client.get("/model.onnx")
    assert model.status_code == 200 and model.content == bundled_model().read_bytes()


def test_the_openapi_schema_documents_the_json_api(client):
    """Issue 14 (FastAPI's habits): the JSON routes have response models, and the photo routes take multipart forms
    (the photo a file, not base64), so /api/openapi.json says what each takes and answers."""
    spec = client.get("/api/openapi.json").json()
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    for path, method, status, model in [("/api/screen", "post", "200", "ScreenAnswer"),
                                        ("/api/cases", "post", "201", "CaseSent"),
                                        ("/api/cases/{token}", "get", "200", "CaseStatus"),
                                        ("/api/model", "get", "200", "ModelInfo"),
                                        ("/api/privacy", "get", "200", "Privacy")]:
        answer = paths[path][method]["responses"][status]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{model}"}, path
    for path, form in [("/api/screen", "PhotoForm"), ("/api/cases", "CaseForm")]:
        body = paths[path]["post"]["requestBody"]["content"]
        assert list(body) == ["multipart/form-data"] and body["multipart/form-data"]["schema"]["$ref"].endswith(form)
    case = schemas["CaseForm"]
    assert case["properties"]["consent"]["const"] == "true" and case["additionalProperties"] is False
    assert case["properties"]["photo"]["contentMediaType"] == "application/octet-stream"
    assert {"answer", "reason", "screening", "cam", "picture"} <= set(schemas["ScreenAnswer"]["properties"])


def test_the_manifest_has_an_id_png_icons_and_a_maskable_one(client):
    """Issue 16, item 7: installable on Android as well (PNG icons of 192 and 512 px, a maskable one, an id); the PNGs
    are those make_icons.py renders from icon.svg: transparent corners as drawn, the maskable one full-bleed."""
    manifest = client.get("/static/manifest.webmanifest").json()
    assert manifest["id"] == "/"
    pngs = {}
    for icon in manifest["icons"]:
        if icon["type"] == "image/png":
            image = Image.open(io.BytesIO(client.get(icon["src"]).content))
            assert image.format == "PNG" and icon["sizes"] == "{}x{}".format(*image.size), icon
            pngs[(image.size[0], icon["purpose"])] = image.convert("RGBA")
    assert {(192, "any"), (512, "any"), (512, "maskable")} <= set(pngs)
    assert pngs[(512, "any")].getpixel((0, 0))[3] == 0  # the rounded square, as drawn
    corners = [pngs[(512, "maskable")].getpixel(xy) for xy in ((0, 0), (511, 0), (0, 511), (511, 511))]
    assert all(c == (10, 88, 202, 255) for c in corners)  # the launcher's mask cuts a background, never a hole
    page = client.get("/").text
    assert re.search(r'rel="apple-touch-icon" href="/assets/[0-9a-f]{16}/icon-192.png"', page)


def test_the_photo_pickers_offer_the_gallery_too(client):
    """`capture` on a file input makes phones open the camera only: a photo already taken could not be chosen."""
    pickers = re.findall(r'<input[^>]*type="file"[^>]*>', client.get("/").text)
    assert len(pickers) == 2 and all('accept="image/*"' in p and "capture" not in p for p in pickers)


def test_every_script_of_the_page_is_kept_for_offline_use(client):
    """The service worker caches each script the phone page loads (a new one, such as messages.js, must be added)."""
    scripts = re.findall(r'<script src="([^"]+)"', client.get("/").text)
    assert any(src.endswith("/messages.js") for src in scripts)
    assets = client.get("/sw.js").text
    assert all(f'"{src}"' in assets for src in scripts), scripts


def test_api_screen_answers_like_the_cli(client, settings):
    photo = _jpeg()
    got = _post_photo(client, "/api/screen", photo).json()
    expected = Screener(bundled_model()).screen(Image.open(io.BytesIO(photo)).convert("RGB"))
    assert got["predicted"] == expected.predicted and got["computed"] == "server"
    assert got["screening"]["probability"] == pytest.approx(expected.positive_probability, abs=1e-5)
    assert np.array(got["cam"]).shape == (7, 7)


def test_api_screen_says_cannot_tell_with_a_reason(client):
    """The server applies the model file's own answer rule: no verdict for a photo it cannot judge."""
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (0, 0, 0)).save(buf, "PNG")
    got = _post_photo(client, "/api/screen", buf.getvalue()).json()
    assert got["answer"] == "cannot tell" and got["reason"] == "too dark" and got["screening"]["positive"] is None
    buf = io.BytesIO()
    Image.open(io.BytesIO(_jpeg())).resize((48, 40)).save(buf, "PNG")
    got = _post_photo(client, "/api/screen", buf.getvalue()).json()
    assert (got["answer"], got["reason"]) == ("cannot tell", "too small")
    assert set(got["measures"]) == {"brightness", "sharpness", "skin_share", "blockiness", "offtask"}
    rule = client.get("/api/model").json()["answer_rule"]
    assert rule["min_side"] == 64 and rule["max_offtask"] > 0
    # A photo kept at JPEG quality 10: its 8 x 8 blocks, measured on the upload before any resizing.
    smooth = Image.open(io.BytesIO(_jpeg((12, 9), 3))).resize((320, 240), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    smooth.save(buf, "JPEG", quality=10)
    got = _post_photo(client, "/api/screen", buf.getvalue()).json()
    assert (got["answer"], got["reason"]) == ("cannot tell", "too compressed")
    assert got["measures"]["blockiness"] > rule["max_blockiness"]


@pytest.mark.parametrize("body, status, reason", [
    (b"", 400, "photo: empty file (0 bytes)"),
    (b"%PDF-1.4 not a photo", 415, "not an image"),
    (_jpeg()[:200], 400, "truncated"),
])
def test_api_screen_refuses_bad_uploads_with_a_reason(client, body, status, reason):
    r = _post_photo(client, "/api/screen", body)
    assert r.status_code == status and reason in r.json()["detail"].lower()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("size, reason", [((50000, 1), "too small to be a photo"), ((1, 5000), "too small to be a photo"),
                                          ((600, 4), "too small to be a photo"), ((900, 60), "extreme aspect ratio")])
def test_api_screen_refuses_strips_before_any_resize(client, size, reason):
    """Issue 14: a 225-byte 50000 x 1 PNG answered 200 after 55 s at 10.5 GB (its short side scaled up to 224 px)."""
    r = _post_photo(client, "/api/screen", _png(Image.new("RGB", size, (200, 150, 150))))
    assert r.status_code == 400 and reason in r.json()["detail"]


def test_api_screen_refuses_huge_uploads_and_bombs(client, settings):
    r = _post_photo(client, "/api/screen", b"\xff" * (settings.max_upload_bytes + 1))
    assert r.status_code == 413 and r.json()["detail"] == "photo larger than 2 MB"
    r = _post_photo(client, "/api/screen", b"\xff" * (settings.max_upload_bytes + 1024 * 1024))
    assert r.status_code == 413 and r.json()["detail"] == "request larger than 2 MB"
    buf = io.BytesIO()
    Image.new("RGB", (4000, 4000), (200, 150, 150)).save(buf, "PNG")  # 16 MP of one colour: a small file
    r = _post_photo(client, "/api/screen", buf.getvalue())
    assert r.status_code == 400 and "pixels" in r.json()["detail"]


def _model_with_rule(folder: Path, name: str, **rule) -> Path:
    """A copy of the bundled model whose answer rule (in its metadata) is changed, e.g. a screening threshold of 0
    (every photo positive) or 1 (none), and ``min_side`` (older files have no rule: no size check)."""
    import json

    import onnx

    from mpoxscan.deploy.runtime import METADATA_KEY, read_metadata

    model = onnx.load(str(bundled_model()))
    meta = read_metadata(model)
    meta["answer_rule"] = {**(meta.get("answer_rule") or {}), **rule}
    if "screening_threshold" in rule:
        meta["screening_threshold"] = rule["screening_threshold"]
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = json.dumps(meta)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


PASSWORD = "correct horse battery staple"


def _send_photos(url: str, photos: list[Path]) -> list[str]:
    """Send real photos as cases through the API, with the answers ONNX Runtime gives here; their case numbers."""
    import json

    import httpx

    screener = Screener(bundled_model())
    info = httpx.get(url + "/api/model").json()
    numbers = []
    for photo in photos:
        answer = screener.screen(Image.open(photo).convert("RGB"))
        fields = {"consent": "true", "computed": "device", "probabilities": json.dumps(answer.probabilities),
                  "model_sha256": info["sha256"]}
        r = httpx.post(url + "/api/cases", data=fields, files={"photo": ("photo", photo.read_bytes())})
        assert r.status_code == 201, r.text
        numbers.append(r.json()["number"])
    return numbers


@pytest.mark.integration
def test_screen_on_the_phone_send_answer_as_expert_and_follow_up_in_chromium(settings, shared_data, tmp_path,
                                                                            artefacts, caplog):
    """The whole journey in headless Chromium. Phone-sized: choose a real photo, see the answer computed in the browser
    (no request reaches /api/screen; compared with ONNX Runtime in Python), agree and send it. Desktop-sized: sign in
    as the expert, find the case in the queue, open it, answer. Phone again: the follow-up link shows the answer.
    Last, offline: stop the server, reload, screen another photo from the service worker's cache. Screenshots of
    both sides go to test-artefacts/."""
    if not ORT_DIST.is_dir():
        message = "needs onnxruntime-web (make setup runs npm ci)"
        if os.environ.get("MPOXSCAN_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium.webdriver.common.by import By

    from mpoxscan.web.cases import add_expert, case_by_number

    driver = phone(chromium(tmp_path / "profile"))
    app_settings = Settings(model=settings.model, data_dir=tmp_path / "data")
    app = create_app(app_settings)
    requests = count_requests(app)
    server = ServerThread(app).start()
    with app.state.sessions() as db:  # once started: the lifespan has opened and migrated the database
        add_expert(db, "doc@example.org", PASSWORD)
    base = server.url
    photo = shared_data / "msld-v2" / "Monkeypox" / "MKP_01_01.jpg"
    caplog.set_level("DEBUG")
    try:
        # The person, on a phone.
        driver.get(base + "/")
        wait(driver, "return document.body.dataset.ready")
        assert driver.execute_script("return window.innerWidth") == 412
        assert "on this device" in driver.find_element(By.ID, "status").text
        # cross-origin isolated (the app's headers), so the network runs on the machine's cores but one, up to 4
        threads = "return [self.crossOriginIsolated, ort.env.wasm.numThreads, navigator.hardwareConcurrency]"
        isolated, n, cores = driver.execute_script(threads)
        assert isolated and n == max(1, min(4, cores - 1))
        result = screen(driver, photo)
        assert result and result["computed"] == "device"
        verdict = driver.find_element(By.ID, "verdict").text
        assert "health worker" in verdict or "No sign" in verdict
        driver.save_screenshot(str(artefacts / "phone-answer.png"))
        send = driver.find_element(By.ID, "send")
        assert send.get_attribute("aria-disabled") == "true"  # nothing leaves the phone without consent
        training = driver.find_element(By.ID, "training-consent")
        assert not training.is_selected()  # the second consent is never given for the person
        driver.find_element(By.ID, "consent").click()
        assert send.get_attribute("aria-disabled") == "false"
        training.click()  # optional: sending never waits for it
        send.click()
        sent = wait(driver, "return window.mpoxscanSent || null")
        assert sent and sent["number"] in driver.find_element(By.ID, "sent").text and sent["training_consent"]
        # Sent: the choices made give way to the confirmation (no consent to untick, no PIN box to type in).
        assert not shown(driver, "training-consent") and not shown(driver, "consent") and not shown(driver, "pin")
        assert driver.find_element(By.ID, "sent-lock").text.startswith("No PIN")
        follow_up = driver.find_element(By.ID, "sent-link").get_attribute("href")
        assert follow_up == base + sent["follow_up"]
        assert sent["number"] in driver.find_element(By.ID, "my-cases-list").text  # kept on the phone for later
        driver.execute_script("document.getElementById('sent').scrollIntoView({block: 'center'})")
        driver.save_screenshot(str(artefacts / "phone-sent.png"))
        # Four more people send real photos (through the API, as their pages would), so the queue has an order.
        others = _send_photos(server.url, [shared_data / "msld-v2" / c for c in
                                           ("Chickenpox/CHP_01_01.jpg", "Measles/MSL_01_01.jpg", "Healthy/HEALTHY_02_01.jpg",
                                            "Monkeypox/MKP_02_01.jpg")])
        # The expert, on a desktop browser.
        desktop(driver)
        driver.get(base + "/expert")
        assert driver.current_url == base + "/expert/login"
        driver.find_element(By.NAME, "email").send_keys("doc@example.org")
        driver.find_element(By.NAME, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "sign-in").click()
        wait(driver, "return document.getElementById('queue') !== null")
        rows = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#queue tbody tr")]
        assert len(rows) == 5 and {sent["number"], *others} == {r.split()[0] for r in rows}
        probabilities = [float(r.split(" %")[0].split()[-1]) for r in rows]
        answers = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#queue tbody tr td:nth-child(5)")]
        assert len(answers) == 5 and set(answers) <= {"positive", "negative"} | {a for a in answers if a.startswith("cannot tell")}
        rank = [0 if a == "positive" else 1 if a.startswith("cannot tell") else 2 for a in answers]
        assert rank == sorted(rank)  # screened positive first, then cannot tell, then negative; each by probability
        assert all(a >= b for (a, ra), (b, rb) in zip(zip(probabilities, rank), zip(probabilities[1:], rank[1:]))
                   if ra == rb)
        driver.save_screenshot(str(artefacts / "dashboard-queue.png"))
        fits = "return document.documentElement.scrollWidth <= window.innerWidth"
        loaded = ("return [...document.images].every(i => i.complete && i.naturalWidth > 0) "
                  "&& document.images.length === 2")
        phone(driver)  # an expert on a phone: a wide table scrolls in its box, the page never sideways
        driver.refresh()
        wait(driver, "return document.getElementById('queue') !== null")
        assert driver.execute_script(fits)
        driver.save_screenshot(str(artefacts / "dashboard-queue-phone.png"))
        driver.find_element(By.LINK_TEXT, sent["number"]).click()
        assert wait(driver, loaded)
        assert driver.execute_script(fits)
        driver.save_screenshot(str(artefacts / "dashboard-case-phone.png"))
        desktop(driver)
        driver.refresh()
        assert wait(driver, loaded)
        driver.save_screenshot(str(artefacts / "dashboard-case.png"))
        press(driver, driver.find_element(By.CSS_SELECTOR, "input[value='see-health-worker']"))
        driver.find_element(By.NAME, "message").send_keys("Please show the lesion to the nurse at your health centre.")
        press(driver, driver.find_element(By.ID, "send-answer"))
        assert driver.find_elements(By.ID, "answered-notice") == []  # the label is required: no answer without it
        press(driver, driver.find_element(By.CSS_SELECTOR, "input[name=label][value='Monkeypox']"))
        press(driver, driver.find_element(By.ID, "send-answer"))
        wait(driver, "return document.getElementById('answered-notice') !== null")
        assert sent["number"] in driver.find_element(By.ID, "answered-notice").text
        # The person opens the follow-up link.
        phone(driver)
        driver.get(follow_up)
        assert "nurse at your health centre" in driver.find_element(By.ID, "expert-message").text
        assert "not enough to say" in driver.find_element(By.ID, "verdict-text").text
        assert driver.find_element(By.ID, "withdraw-training").is_displayed()  # the training consent, withdrawable
        driver.save_screenshot(str(artefacts / "phone-follow-up.png"))
        # Offline after the first visit: stop the server, reload, screen another photo from the service worker's cache.
        driver.get(base + "/")
        wait(driver, "return document.body.dataset.ready")
        assert wait(driver, "return document.body.dataset.offline") == "1"
        server.stop()
        driver.refresh()
        wait(driver, "return document.body.dataset.ready")
        assert "on this device" in driver.find_element(By.ID, "status").text
        assert driver.execute_script(threads)[:2] == [True, n]  # the cached page keeps its headers
        offline = screen(driver, shared_data / "msld-v2" / "Healthy" / "HEALTHY_01_01.jpg")
        assert offline and offline["computed"] == "device" and offline["predicted"]
    finally:
        driver.quit()
        server.stop()
    assert requests["/api/screen"] == 0  # the answers never came from the server
    expected = Screener(settings.model).predict_proba([Image.open(photo).convert("RGB")])[0]
    got = np.array([result["probabilities"][c] for c in Screener(settings.model).classes])
    assert int(np.argmax(got)) == int(np.argmax(expected))
    # The same input (resize.js is exact); ONNX Runtime's wasm int8 kernels round differently from its CPU ones.
    assert np.abs(got - expected).max() < 0.05, (got, expected)
    with app.state.sessions() as db:
        case = case_by_number(db, sent["number"])
        assert case.status == "answered" and case.verdict == "see-health-worker" and case.computed == "device"
        assert case.training_consent and case.label == "Monkeypox" and case.label_test is None
        assert case.device_probabilities == pytest.approx(result["probabilities"])
    token = follow_up.rsplit("/", 1)[1]
    # Nothing personal in the server's logs (the test's own clients, Selenium and urllib3, log what they send).
    server_logs = [r.getMessage() for r in caplog.records if not r.name.startswith(("selenium", "urllib3"))]
    assert not any(token in m or "doc@example.org" in m or sent["number"] in m for m in server_logs)
    for name in ("phone-answer", "phone-sent", "dashboard-queue", "dashboard-case", "phone-follow-up"):
        assert (artefacts / f"{name}.png").stat().st_size > 10_000


@pytest.mark.integration
def test_without_webassembly_the_page_screens_on_the_server_and_can_still_send(settings, shared_data, tmp_path):
    """A browser without WebAssembly (removed from every page before its scripts run): the page says so, screens
    through /api/screen, and the case can be sent like any other."""
    from selenium.webdriver.common.by import By

    driver = phone(chromium(tmp_path / "profile"))
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": "delete globalThis.WebAssembly;"})
    app_settings = Settings(model=settings.model, data_dir=tmp_path / "data")
    app = create_app(app_settings)
    requests = count_requests(app)
    try:
        with ServerThread(app) as server:
            driver.get(server.url + "/")
            wait(driver, "return document.body.dataset.ready")
            assert driver.execute_script("return typeof WebAssembly") == "undefined"
            assert "screened by the server" in driver.find_element(By.ID, "status").text
            result = screen(driver, shared_data / "msld-v2" / "Monkeypox" / "MKP_01_01.jpg")
            assert result and result["computed"] == "server"
            # A second photo is screened the same way (by the server here) and sent with the first.
            driver.find_element(By.ID, "more-photo").send_keys(str(shared_data / "msld-v2" / "Healthy" /
                                                                     "HEALTHY_01_01.jpg"))
            more = wait(driver, "return (window.mpoxscanMore || [])[0] || null")
            assert more and more["computed"] == "server"
            sent = consent_and_send(driver)
    finally:
        driver.quit()
    assert requests["/api/screen"] == 2
    with app.state.sessions() as db:
        from mpoxscan.web.cases import case_by_number

        case = case_by_number(db, sent["number"])
        assert case.computed == "server" and case.photos[0].predicted == result["predicted"]
        assert [p.computed for p in case.photos] == ["server", "server"]
        assert case.photos[1].predicted == more["predicted"]


@pytest.mark.integration
def test_the_page_cuts_the_network_input_exactly_as_python(settings, shared_data, tmp_path):
    """resize.js against Preprocessing.resize_crop (Pillow) pixel for pixel: a real photo larger than the input, and
    phone-sized photos that take Pillow's reduce step (12 MP landscape and portrait, the sizes whose resize issue 28
    made twice as fast: only the part the centre square needs is read, red and blue summed in one number), with odd
    sizes (partial blocks), a panorama, and an EXIF orientation. The page reads opaque photos through a VideoFrame (one
    copy, in BGRX order where the browser keeps that) and resizes them with its WebAssembly loops (resize.wasm); each
    large one is also cut by the JavaScript loops (browsers without WebAssembly SIMD), the plain way (three sums) and
    through a canvas (the way of photos with transparency and of browsers without WebCodecs)."""

    from conftest import make_photo, wide_gamut_icc
    from mpoxscan.images import load_image

    photos = [shared_data / "msld-v2" / "HFMD" / "HFMD_137_01.jpg"]
    # ... tall ones, which Pillow 13 resamples vertically first (a screenshot's shape, and one reduced first), and
    # one whose reduced box (4000 / 3) is not a whole number: Pillow takes it in single precision
    for k, size in enumerate([(4032, 3024), (3024, 4032), (4003, 2999), (2401, 1801), (3001, 997), (1080, 2400),
                              (2400, 7001), (2400, 4000)]):
        photos.append(tmp_path / f"large-{k}.jpg")
        make_photo(k, (160, 120)).resize(size, Image.Resampling.BICUBIC).save(photos[-1], quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned by 90 degrees
    photos.append(tmp_path / "sideways.jpg")
    make_photo(7, (160, 120)).resize((1999, 1501), Image.Resampling.BICUBIC).save(photos[-1], quality=92,
                                                                                 exif=exif.tobytes())
    # A phone's photo tagged with a wide-gamut profile: the browser converts it to sRGB as Pillow does (through the
    # canvas: a VideoFrame would hand over the stored pixels), within the two colour engines' rounding.
    wide = tmp_path / "wide-gamut.jpg"
    make_photo(8, (160, 120)).resize((3024, 4032), Image.Resampling.BICUBIC).save(wide, quality=92,
                                                                                 icc_profile=wide_gamut_icc())
    photos.append(wide)
    preprocessing = Screener(settings.model).preprocessing
    plain = ("const done = arguments[arguments.length - 1];"
             "createImageBitmap(new Blob([Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0))]),"
             " { imageOrientation: 'from-image' }).then((bitmap) => MPOXSCAN_RESIZE.resizeCrop(bitmap, 224,"
             " meta.preprocessing.crop_pct ?? 1, JSON.parse(arguments[1])))"
             ".then((square) => done([Array.from(square.data), MPOXSCAN_RESIZE.lastSource(),"
             " MPOXSCAN_RESIZE.lastKernel()]))"
             ".catch((e) => done(String(e)))")
    driver = phone(chromium(tmp_path / "profile"))
    try:
        with ServerThread(create_app(Settings(model=settings.model, data_dir=tmp_path / "data"))) as server:
            driver.get(server.url + "/")
            wait(driver, "return document.body.dataset.ready")
            for photo in photos:
                driver.execute_script("window.mpoxscanLast = null")
                assert screen(driver, photo)
                pixels = driver.execute_script(
                    "return Array.from(document.getElementById('seen').getContext('2d').getImageData(0, 0, 224, 224).data)")
                got = np.array(pixels, np.int16).reshape(224, 224, 4)[..., :3]
                expected = np.asarray(preprocessing.resize_crop(load_image(photo)), np.int16)
                # identical, but for the colour conversion of the wide-gamut photo (Chromium's engine against lcms)
                exact = 2 if photo == wide else 0
                assert np.abs(got - expected).max() <= exact, photo.name
                # read through a VideoFrame, except the sideways one (its frame holds the pixels as stored) and the
                # wide-gamut one (its frame holds them unconverted)
                natural = "canvas" if photo.name in ("sideways.jpg", wide.name) else "frame"
                assert driver.execute_script("return MPOXSCAN_RESIZE.lastSource()") == natural, photo.name
                # resized by the WebAssembly kernels (resize.wasm), which the page fetched at its versioned address
                assert driver.execute_script("return MPOXSCAN_RESIZE.lastKernel()") == "wasm", photo.name
                if photo.stat().st_size > 100_000:  # the other ways too: the JavaScript loops (a browser without
                    # WebAssembly SIMD; the plain sums: blocks over 257 pixels) and the canvas (no WebCodecs)
                    for how, source, kernel in [({"script": True}, natural, "script"),
                                                ({"plain": True}, natural, "script"),
                                                ({"canvas": True}, "canvas", "wasm")]:
                        same = driver.execute_async_script(plain, base64.b64encode(photo.read_bytes()).decode(),
                                                           json.dumps(how))
                        assert not isinstance(same, str), same
                        got = np.array(same[0], np.int16).reshape(224, 224, 4)[..., :3]
                        assert np.abs(got - expected).max() <= exact, f"{photo.name}, {how}"
                        assert same[1:] == [source, kernel], how
    finally:
        driver.quit()


def test_api_screen_returns_the_screened_square_on_request(client):
    """?picture=1: the square the network saw, for a page that cannot decode the photo itself (HEIC)."""
    import base64

    plain = _post_photo(client, "/api/screen", _jpeg()).json()
    assert "picture" not in plain
    got = _post_photo(client, "/api/screen?picture=1", _jpeg()).json()
    prefix = "data:image/jpeg;base64,"
    assert got["picture"].startswith(prefix)
    square = Image.open(io.BytesIO(base64.b64decode(got["picture"][len(prefix):])))
    assert square.size == (224, 224) and not square.getexif()


@pytest.mark.integration
def test_the_headline_says_what_to_do_for_each_answer(shared_data, tmp_path, artefacts):
    """Positive: show it to a health worker, most positives are false alarms; negative: no sign found; cannot tell
    (a photo under the rule's min_side): retake it, why and how, with no verdict, numbers or map. The numbers go
    under Details, with the diseases' full names; the map has a caption and a legend. Answers are forced by copies of
    the model whose threshold is 0 (all positive) or 1 (none)."""
    need_browser()
    from selenium.webdriver.common.by import By

    from mpoxscan.deploy.answer import ADVICE
    from mpoxscan.deploy.compression import photo_blockiness
    from mpoxscan.images import load_image

    always = _model_with_rule(tmp_path, "always", screening_threshold=0.0, min_side=64)
    never = _model_with_rule(tmp_path, "never", screening_threshold=1.0, min_side=64)
    small = tmp_path / "small.jpg"
    Image.open(shared_data / "msld-v2" / "Monkeypox" / "MKP_01_01.jpg").convert("RGB").resize((60, 60)).save(small)
    driver = phone(chromium(tmp_path / "profile"))
    text = lambda element_id: driver.find_element(By.ID, element_id).text  # noqa: E731
    try:
        with ServerThread(create_app(Settings(model=always, data_dir=tmp_path / "a"))) as server:
            driver.get(server.url + "/")
            wait(driver, "return document.body.dataset.ready")
            assert driver.find_element(By.ID, "answer").get_attribute("aria-live") == "polite"
            # The photo picker is a real button: reachable and pressed from the keyboard.
            assert driver.execute_script("const b = document.getElementById('pick'); b.focus(); "
                                         "return document.activeElement === b && b.tagName === 'BUTTON'")
            result = screen(driver, shared_data / "msld-v2" / "Monkeypox" / "MKP_01_01.jpg")
            assert result["answer"] == "positive"
            assert text("verdict") == "Show this to a health worker"
            assert "Most positive screenings are false alarms" in text("explain")
            # Next steps (issue 16, item 6), from the page's message table: testing, close contact, warning signs.
            def steps(list_id: str) -> list[str]:
                return [li.text for li in driver.find_elements(By.CSS_SELECTOR, f"#{list_id} li")]

            table = driver.execute_script("return MPOXSCAN_MESSAGES")
            assert shown(driver, "next-steps") and text("next-title") == table["next.title"]
            assert steps("next-list") == table["next.positive"]
            assert "Get tested" in steps("next-list")[0] and "avoid close contact" in steps("next-list")[1]
            assert shown(driver, "urgent") and steps("urgent-list") == table["next.urgent"]
            assert "eyes" in text("urgent-list") and "trouble breathing" in text("urgent-list")
            driver.execute_script("document.getElementById('next-steps').scrollIntoView()")
            driver.save_screenshot(str(artefacts / "phone-next-steps.png"))
            assert shown(driver, "heat-figure") and "Where the screening looked" in text("heat-figure")
            assert shown(driver, "legend") and "less" in text("legend") and "more" in text("legend")
            assert not shown(driver, "probabilities") and not shown(driver, "retake")  # folded under Details
            driver.find_element(By.CSS_SELECTOR, "#details summary").click()
            names = [r.find_elements(By.TAG_NAME, "td")[0].text
                     for r in driver.find_elements(By.CSS_SELECTOR, "#probabilities tr")]
            lay = {"Monkeypox": "Mpox (monkeypox)", "Chickenpox": "Chickenpox (varicella)", "Cowpox": "Cowpox",
                   "HFMD": "Hand, foot and mouth disease", "Measles": "Measles", "Healthy": "Healthy skin",
                   "Acne": "Acne", "OtherRash": "Another rash, such as herpes, shingles or impetigo"}
            classes = Screener(bundled_model()).classes
            assert sorted(names) == sorted(lay[c] for c in classes)  # every class of the shipped model, in lay words
            # Issue 28, item 8: a lay reader's words: a resemblance, not a chance of disease, and the answer's own
            # words rather than "positive".
            assert "not the chance that you have it" in driver.find_element(By.CSS_SELECTOR, "#probabilities caption").text
            assert text("screening-line").startswith("Resemblance to mpox:") and '"positive"' not in text("screening-line")
            assert "model" not in text("result").lower()
            driver.execute_script("document.getElementById('result').scrollIntoView()")
            driver.save_screenshot(str(artefacts / "phone-details.png"))
            # A photo too small to judge: no verdict, no numbers, no map; why, how, and another try.
            result = screen(driver, small)
            assert result["answer"] == "cannot tell" and result["reason"] == "too small"
            assert text("verdict") == "Retake the photo"
            assert "too small" in text("explain") and ADVICE["too small"] in text("explain")
            assert "health worker" not in text("verdict") + text("explain")
            assert steps("next-list") == table["next.unsure"] and "Take the photo again" in text("next-list")
            assert not shown(driver, "urgent")
            assert not shown(driver, "details") and not shown(driver, "heat-figure") and not shown(driver, "legend")
            # An expert may still judge what the model cannot.
            assert shown(driver, "retake") and shown(driver, "send-section")
            driver.save_screenshot(str(artefacts / "phone-cannot-tell.png"))
            # Issue 28, item 8: a 64 px photo passes the size limit but is enlarged to the network's input, which
            # blurs it: it is "too small" (come closer), not "blurred" (hold the phone still), here as on the server.
            tiny = tmp_path / "tiny.jpg"
            Image.open(shared_data / "msld-v2" / "Monkeypox" / "MKP_01_03.jpg").convert("RGB").resize(
                (64, 64), Image.Resampling.BICUBIC).save(tiny, quality=95)
            result = screen(driver, tiny)
            assert (result["answer"], result["reason"]) == ("cannot tell", "too small")
            assert Screener(always).screen(load_image(tiny)).reason == "too small"
            assert ADVICE["too small"] in text("explain") and ADVICE["blurred"] not in text("explain")
            # A real photo kept at JPEG quality 10: the page measures its blocks as the server does (answer.js).
            q10 = tmp_path / "q10.jpg"
            Image.open(shared_data / "msld-v2" / "Monkeypox" / "MKP_01_01.jpg").save(q10, quality=10)
            result = screen(driver, q10)
            assert (result["answer"], result["reason"]) == ("cannot tell", "too compressed")
            assert result["measures"]["blockiness"] == pytest.approx(photo_blockiness(load_image(q10)), rel=0.05)
            assert "too compressed" in text("explain") and ADVICE["too compressed"] in text("explain")
            driver.save_screenshot(str(artefacts / "phone-too-compressed.png"))
        with ServerThread(create_app(Settings(model=never, data_dir=tmp_path / "b"))) as server:
            driver.get(server.url + "/")
            wait(driver, "return document.body.dataset.ready")
            result = screen(driver, shared_data / "msld-v2" / "Healthy" / "HEALTHY_01_01.jpg")
            assert result["answer"] == "negative"
            assert text("verdict") == "No sign of mpox found" and "not a diagnosis" in text("explain")
            assert steps("next-list") == table["next.negative"] and "Watch the lesion" in text("next-list")
            assert not shown(driver, "urgent")
            assert shown(driver, "details") and not shown(driver, "retake")
    finally:
        driver.quit()


def _damaged(path: Path) -> Path:
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(1).integers(0, 255, 4000, dtype=np.uint8)))
    return path


@pytest.mark.integration
def test_a_failed_photo_leaves_no_old_answer_and_send_says_why_it_waits(settings, shared_data, tmp_path, artefacts):
    """After a good photo: Send without consent says so (and looks disabled); a damaged file then clears the answer
    and the sending section (so the old photo cannot be sent) and shows one error line, gone after the next answer.
    A text file named .jpg is no photo either: it is not offered to the server as a format only the server reads."""
    need_browser()
    from selenium.webdriver.common.by import By

    photo = shared_data / "msld-v2" / "Monkeypox" / "MKP_01_01.jpg"
    app_settings = Settings(model=settings.model, data_dir=tmp_path / "data")
    app = create_app(app_settings)
    requests = count_requests(app)
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo, only text\n" * 20)
    driver = phone(chromium(tmp_path / "profile"))
    colour = "return getComputedStyle(document.getElementById('send')).backgroundColor"
    try:
        with ServerThread(app) as server:
            driver.get(server.url + "/")
            wait(driver, "return document.body.dataset.ready")
            assert screen(driver, photo)
            send = driver.find_element(By.ID, "send")
            disabled_colour = driver.execute_script(colour)
            send.click()
            assert "Tick the box" in driver.find_element(By.ID, "send-status").text
            driver.execute_script("document.getElementById('send').scrollIntoView({block: 'center'})")
            driver.save_screenshot(str(artefacts / "phone-send-without-consent.png"))
            assert driver.execute_script("return window.mpoxscanSent || null") is None
            driver.find_element(By.ID, "consent").click()
            assert driver.execute_script(colour) != disabled_colour  # the disabled look is visible
            assert driver.find_element(By.ID, "send-status").text == ""
            driver.find_element(By.ID, "photo").send_keys(str(_damaged(tmp_path / "damaged.jpg")))
            assert wait(driver, "return document.body.dataset.state === 'error'")
            assert "could not be opened" in driver.find_element(By.ID, "error").text
            driver.save_screenshot(str(artefacts / "phone-error.png"))
            assert driver.find_element(By.ID, "verdict").text == ""
            assert not shown(driver, "result") and not shown(driver, "send-section")
            assert driver.execute_script("return window.mpoxscanLast") is None
            assert screen(driver, photo)
            assert not shown(driver, "error") and shown(driver, "send-section")
            driver.find_element(By.ID, "photo").send_keys(str(text))
            assert wait(driver, "return document.body.dataset.state === 'error'")
            assert "could not be opened" in driver.find_element(By.ID, "error").text
            assert not shown(driver, "server-offer")
    finally:
        driver.quit()
    assert requests["/api/screen"] == 0
    with app.state.sessions() as db:
        from mpoxscan.web.cases import counts

        assert sum(counts(db).values()) == 0  # nothing was sent


@pytest.mark.integration
def test_a_heic_photo_the_browser_cannot_open_is_screened_by_the_server_once_agreed(settings, shared_data, tmp_path,
                                                                                   artefacts):
    """Chromium cannot decode HEIC: after an answer for another photo, the old answer goes, the page says the photo
    would be sent to the server and waits for the person; then /api/screen answers, the square the server screened
    is shown, and Send sends the file itself (the server strips its metadata)."""
    need_browser()
    import pillow_heif
    from selenium.webdriver.common.by import By

    from mpoxscan.web.cases import case_by_number

    pillow_heif.register_heif_opener()
    heic = tmp_path / "photo.heic"
    Image.open(shared_data / "msld-v2" / "Monkeypox" / "MKP_02_01.jpg").convert("RGB").save(heic, format="HEIF")
    app_settings = Settings(model=settings.model, data_dir=tmp_path / "data")
    app = create_app(app_settings)
    requests = count_requests(app)
    driver = phone(chromium(tmp_path / "profile"))
    try:
        with ServerThread(app) as server:
            driver.get(server.url + "/")
            wait(driver, "return document.body.dataset.ready")
            assert screen(driver, shared_data / "msld-v2" / "Healthy" / "HEALTHY_01_01.jpg")
            driver.find_element(By.ID, "photo").send_keys(str(heic))
            assert wait(driver, "return document.body.dataset.state === 'offer'")
            assert "sent to the server" in driver.find_element(By.ID, "server-offer").text
            driver.save_screenshot(str(artefacts / "phone-heic-offer.png"))
            assert not shown(driver, "result") and not shown(driver, "send-section")
            assert requests["/api/screen"] == 0  # not before the person agrees
            driver.find_element(By.ID, "screen-on-server").click()
            result = wait(driver, "return window.mpoxscanLast || null")
            assert result and result["computed"] == "server" and "picture" in result
            assert driver.find_element(By.ID, "verdict").text and not shown(driver, "error")
            assert shown(driver, "seen-figure") and driver.execute_script(
                "return document.getElementById('seen').getContext('2d').getImageData(0, 0, 224, 224).data"
                ".some(v => v > 0 && v < 255)")
            assert "server removes" in driver.find_element(By.ID, "send-what").text
            driver.save_screenshot(str(artefacts / "phone-heic-answer.png"))
            sent = consent_and_send(driver)
    finally:
        driver.quit()
    assert requests["/api/screen"] == 1
    expected = Screener(settings.model).screen(Image.open(heic).convert("RGB"))
    assert result["predicted"] == expected.predicted
    with app.state.sessions() as db:
        case = case_by_number(db, sent["number"])
        assert case.computed == "server" and case.predicted == expected.predicted


def _contrast(colour_a: str, colour_b: str) -> float:
    """WCAG contrast ratio of two CSS colours as getComputedStyle gives them ('rgb(r, g, b)')."""
    def luminance(css: str) -> float:
        rgb = [int(v) / 255 for v in css[css.index("(") + 1:css.index(")")].split(",")[:3]]
        r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(colour_a), luminance(colour_b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.integration
def test_every_page_passes_axe_and_the_first_step_works_from_the_keyboard(settings, shared_data, tmp_path, artefacts):
    """Issue 16, item 7. axe-core finds no serious or critical violation on the phone page (before a screening, with
    an answer, after sending), the follow-up page, the expert's sign-in, queue and case pages. From the keyboard, the
    first Tab reaches the language switch, the second the photo button, with a focus ring that stands out from the
    page (3:1 at least); the answer and the "sent" confirmation are live regions, and the focus moves to the
    confirmation after sending. The queue has no
    timed reload the expert cannot stop: a refresh link, and a minute's refresh that can be switched off."""
    need_browser()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from mpoxscan.web.cases import add_expert

    always = _model_with_rule(tmp_path, "always", screening_threshold=0.0, min_side=64)
    app = create_app(Settings(model=always, data_dir=tmp_path / "data"))
    driver = phone(chromium(tmp_path / "profile"))
    found = {}
    try:
        with ServerThread(app) as server:
            with app.state.sessions() as db:  # once started: the lifespan has opened and migrated the database
                add_expert(db, "doc@example.org", PASSWORD)
            driver.get(server.url + "/")
            wait(driver, "return document.body.dataset.ready")
            found["phone"] = axe(driver, "the phone page")
            # The language switch comes first (a person who cannot read the page's language needs it before
            # anything else), then the photo button; both show the focus ring.
            ActionChains(driver).send_keys(Keys.TAB).perform()
            assert driver.execute_script("return document.activeElement.id") == "language"
            assert driver.execute_script("return getComputedStyle(document.activeElement).outlineStyle") != "none"
            ActionChains(driver).send_keys(Keys.TAB).perform()
            focus = driver.execute_script(
                "const a = document.activeElement, s = getComputedStyle(a); return {id: a.id, visible: "
                "a.matches(':focus-visible'), style: s.outlineStyle, width: parseFloat(s.outlineWidth), "
                "colour: s.outlineColor, page: getComputedStyle(document.body).backgroundColor}")
            assert focus["id"] == "pick" and focus["visible"] and focus["style"] != "none" and focus["width"] >= 2
            assert _contrast(focus["colour"], focus["page"]) >= 3, focus  # WCAG 1.4.11: seen against the page
            driver.save_screenshot(str(artefacts / "phone-keyboard-focus.png"))
            assert screen(driver, shared_data / "msld-v2" / "Monkeypox" / "MKP_01_01.jpg")["answer"] == "positive"
            assert driver.find_element(By.ID, "answer").get_attribute("aria-live") == "polite"
            found["phone with an answer"] = axe(driver, "the phone page with an answer")
            driver.find_element(By.CSS_SELECTOR, "#details summary").click()  # the numbers too
            found["phone with details"] = axe(driver, "the phone page with its details open")
            sent = consent_and_send(driver)
            assert driver.execute_script("return document.activeElement.id") == "sent"  # not the page's body
            assert driver.execute_script(
                "return document.getElementById('sent').closest('[role=status][aria-live=polite]') !== null")
            found["phone after sending"] = axe(driver, "the phone page after sending")
            driver.get(server.url + sent["follow_up"])
            found["follow-up"] = axe(driver, "the follow-up page")
            desktop(driver)
            driver.get(server.url + "/expert/login")
            found["sign-in"] = axe(driver, "the sign-in page")
            driver.find_element(By.NAME, "email").send_keys("doc@example.org")
            driver.find_element(By.NAME, "password").send_keys(PASSWORD)
            driver.find_element(By.ID, "sign-in").click()
            wait(driver, "return document.body.dataset.autoRefresh")
            assert not driver.find_elements(By.CSS_SELECTOR, "meta[http-equiv=refresh]")
            found["queue"] = axe(driver, "the queue")
            assert driver.find_element(By.ID, "refresh").get_attribute("href").endswith("/expert?order=priority")
            assert driver.execute_script("return document.body.dataset.autoRefresh") == "on"
            driver.find_element(By.ID, "auto-refresh").click()  # switched off, and kept off after a reload
            assert driver.execute_script("return document.body.dataset.autoRefresh") == "off"
            driver.refresh()
            assert wait(driver, "return document.body.dataset.autoRefresh") == "off"
            assert not driver.find_element(By.ID, "auto-refresh").is_selected()
            driver.find_element(By.LINK_TEXT, sent["number"]).click()
            wait(driver, "return document.getElementById('send-answer') !== null")
            found["case"] = axe(driver, "a case page")
    finally:
        driver.quit()
    for where, violations in found.items():  # the lesser ones, for the reader of the test log
        print(where, [(v["id"], v["impact"], len(v["nodes"])) for v in violations])


@pytest.mark.integration
def test_before_consent_the_page_says_what_is_kept_and_the_sent_list_shows_status(settings, shared_data, tmp_path,
                                                                                  artefacts):
    """Issue 16, item 5. Before consent: what is sent, who sees it, how long it is kept (the server's --keep-days, from
    /api/privacy) and how to withdraw. "Cases sent from this phone" shows each case's status, asked from the server
    with the case's own link (waiting, then answered), drops a case withdrawn on its follow-up page, and one button
    clears the list (after a confirmation)."""
    need_browser()
    import hashlib
    import json

    import httpx
    from selenium.webdriver.common.by import By

    from mpoxscan.web.cases import add_expert, answer_case, case_by_number

    app = create_app(Settings(model=settings.model, data_dir=tmp_path / "data", keep_days=30))
    driver = phone(chromium(tmp_path / "profile"))
    statuses = "return [...document.querySelectorAll('#my-cases-list li')].map(li => li.dataset.status || '')"
    stored = "return JSON.parse(localStorage.getItem('mpoxscan-cases') || '[]').map(c => c.number)"
    try:
        with ServerThread(app) as server:
            with app.state.sessions() as db:  # once started: the lifespan has opened and migrated the database
                expert = add_expert(db, "doc@example.org", PASSWORD)
            driver.get(server.url + "/")
            wait(driver, "return document.body.dataset.ready")
            assert not shown(driver, "my-cases")
            assert screen(driver, shared_data / "msld-v2" / "Monkeypox" / "MKP_01_01.jpg")
            privacy = driver.find_element(By.ID, "privacy").text
            assert "What is sent" in privacy and "Who sees it" in privacy and "How to withdraw" in privacy
            assert "30 days after the answer" in driver.find_element(By.ID, "privacy-kept").text
            driver.execute_script("document.getElementById('send-section').scrollIntoView()")
            driver.save_screenshot(str(artefacts / "phone-privacy.png"))
            first = consent_and_send(driver)
            assert wait(driver, statuses + ".join() === 'waiting'")
            assert "waiting for an expert" in driver.find_element(By.ID, "my-cases-list").text
            # A second case sent from this phone (through the API, as the page would), kept in the phone's list.
            photo = (shared_data / "msld-v2" / "Healthy" / "HEALTHY_01_01.jpg").read_bytes()
            served = Screener(settings.model).classes
            second = httpx.post(server.url + "/api/cases", files={"photo": ("photo", photo)}, data={
                "consent": "true", "computed": "device",
                "probabilities": json.dumps({c: 1 / len(served) for c in served}),
                "model_sha256": hashlib.sha256(settings.model.read_bytes()).hexdigest()}).json()
            driver.execute_script(
                "const mine = JSON.parse(localStorage.getItem('mpoxscan-cases')); mine.unshift({number: arguments[0], "
                "link: location.origin + arguments[1], sent: arguments[2]}); "
                "localStorage.setItem('mpoxscan-cases', JSON.stringify(mine))",
                second["number"], second["follow_up"], second["sent_at"])
            with app.state.sessions() as db:
                answer_case(db, case_by_number(db, first["number"]), db.merge(expert), "unlikely-mpox", "")
            driver.refresh()
            wait(driver, "return document.body.dataset.ready")
            assert wait(driver, statuses + ".join() === 'waiting,answered'")
            assert "answered" in driver.find_elements(By.CSS_SELECTOR, "#my-cases-list li")[1].text
            driver.execute_script("document.getElementById('my-cases').scrollIntoView()")
            driver.save_screenshot(str(artefacts / "phone-my-cases.png"))
            # The person deletes the second case on its follow-up page: it leaves the list, here and in storage.
            driver.get(server.url + second["follow_up"])
            driver.find_element(By.CSS_SELECTOR, "details summary").click()
            driver.find_element(By.CSS_SELECTOR, "button.danger").click()
            # The form's answer is a new page: wait for it (looking at once raced the navigation on a loaded machine).
            assert wait(driver, "return document.getElementById('withdrawn') !== null")
            assert "deleted" in driver.find_element(By.ID, "withdrawn").text
            driver.get(server.url + "/")
            assert wait(driver, statuses + ".join() === 'answered'")
            assert driver.execute_script(stored) == [first["number"]]
            # One button clears the list (after a confirmation), for a shared phone.
            driver.find_element(By.ID, "clear-cases").click()
            driver.switch_to.alert.dismiss()  # changed their mind: nothing is forgotten
            assert driver.execute_script(stored) == [first["number"]]
            driver.find_element(By.ID, "clear-cases").click()
            driver.switch_to.alert.accept()
            assert driver.execute_script(stored) == []
            assert "cleared" in driver.find_element(By.ID, "my-cases-status").text
            assert not shown(driver, "my-cases-list") and not shown(driver, "clear-cases")
            driver.refresh()
            wait(driver, "return document.body.dataset.ready")
            assert not shown(driver, "my-cases")
    finally:
        driver.quit()
    with app.state.sessions() as db:
        assert case_by_number(db, first["number"]).status == "answered"  # clearing the list deletes nothing



@pytest.mark.integration
def test_three_photos_and_the_questions_reach_the_expert_in_chromium(settings, shared_data, tmp_path, artefacts):
    """The journey's items 2 and 3 in headless Chromium: screen a photo on the phone, add a second and a third (each
    screened on the device, by the same rule, and shown with its answer), answer some of the optional questions,
    agree (asked again after each photo added) and send. The server stores the three photos with the answers; the
    expert's case page shows the three photos, each with its heat map and answer, and what the person said.
    axe-core checks the phone page with three photos and the case page."""
    need_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from mpoxscan.web.cases import add_expert, case_by_number

    app = create_app(Settings(model=settings.model, data_dir=tmp_path / "data"))
    requests = count_requests(app)
    driver = phone(chromium(tmp_path / "profile"))
    photos = [shared_data / "msld-v2" / p for p in ("Monkeypox/MKP_01_01.jpg", "Monkeypox/MKP_01_02.jpg",
                                                    "Healthy/HEALTHY_01_01.jpg")]
    try:
        with ServerThread(app) as server:
            with app.state.sessions() as db:
                add_expert(db, "doc@example.org", PASSWORD)
            driver.get(server.url + "/")
            wait(driver, "return document.body.dataset.ready")
            first = screen(driver, photos[0])
            assert first["computed"] == "device"
            assert shown(driver, "add-photo") and shown(driver, "questions")
            driver.find_element(By.ID, "consent").click()  # given for one photo: asked again once one is added
            for n, photo in ((2, photos[1]), (3, photos[2])):
                driver.execute_script("document.getElementById('add-photo').focus()")  # as after a keyboard press
                driver.find_element(By.ID, "more-photo").send_keys(str(photo))
                added = wait(driver, f"return (window.mpoxscanMore || []).length === {n - 1} && "
                                      f"document.querySelectorAll('#more-list li').length === {n - 1}")
                assert added, driver.find_element(By.ID, "more-status").text
                assert f"Photo {n} added" in driver.find_element(By.ID, "more-status").text
                assert not driver.find_element(By.ID, "consent").is_selected()
            more = driver.execute_script("return window.mpoxscanMore")
            assert [m["computed"] for m in more] == ["device", "device"]
            items = driver.find_elements(By.CSS_SELECTOR, "#more-list li")
            for item, result in zip(items, more):  # each photo shown with its own answer
                assert item.get_attribute("data-answer") == result["answer"]
            assert not shown(driver, "add-photo")  # three: the most a case holds
            # The button gone, the focus is not left on it (nor dropped to the page's start): on the status line.
            assert driver.execute_script("return document.activeElement.id") == "more-status"
            assert "three photos" in driver.find_element(By.ID, "more-intro").text
            assert "these 3 photos" in driver.find_element(By.ID, "consent-text").text
            Select(driver.find_element(By.ID, "q-fever")).select_by_value("yes")
            Select(driver.find_element(By.ID, "q-symptom_duration")).select_by_value("3-7-days")
            Select(driver.find_element(By.ID, "q-body_site")).select_by_value("hands")
            Select(driver.find_element(By.ID, "q-age_band")).select_by_value("18-29")
            driver.save_screenshot(str(artefacts / "phone-three-photos.png"))
            axe(driver, "the phone page with three photos and the questions")
            sent = consent_and_send(driver)
            assert sent["photos"] == 3
            # The expert.
            expert_signs_in(driver, server.url)
            row = driver.find_element(By.CSS_SELECTOR, "#queue tbody tr").text
            assert sent["number"] in row and "Fever: Yes · Duration: 3 to 7 days" in row
            driver.find_element(By.LINK_TEXT, sent["number"]).click()
            assert wait(driver, "return [...document.images].every(i => i.complete && i.naturalWidth > 0) "
                                 "&& document.images.length === 6")
            for k in (1, 2, 3):
                assert driver.find_element(By.ID, f"photo-{k}-title").text.startswith(f"Photo {k}:")
            assert driver.find_element(By.ID, "q-fever").text == "Yes"
            assert driver.find_element(By.ID, "q-body_site").text == "Hands"
            assert driver.find_element(By.ID, "q-age_band").text == "18 to 29"
            assert not driver.find_elements(By.ID, "q-mpox_contact")  # left unanswered
            driver.save_screenshot(str(artefacts / "dashboard-three-photos.png"))
            axe(driver, "a case page with three photos")
    finally:
        driver.quit()
    assert requests["/api/screen"] == 0  # every photo was screened on the phone
    with app.state.sessions() as db:
        case = case_by_number(db, sent["number"])
        assert [p.computed for p in case.photos] == ["device"] * 3
        for photo, result in zip(case.photos, [first, *more]):
            assert photo.device_probabilities == pytest.approx(result["probabilities"])
        assert case.screening_probability == max(p.screening_probability for p in case.photos)
        assert (case.fever, case.symptom_duration, case.body_site, case.age_band, case.mpox_contact) == (
            "yes", "3-7-days", "hands", "18-29", None)
