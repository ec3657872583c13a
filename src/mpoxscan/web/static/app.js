// The phone page: preprocessing and screening on the device (ONNX Runtime Web, WebAssembly), then the answer rule
// (answer.js: positive, negative or cannot tell, from the model file's own outputs and thresholds). The server's
// /api/screen is used where WebAssembly is missing, and, when the person agrees, for a photo this browser cannot
// open (an iPhone's HEIC photo in most browsers other than Safari).
"use strict";
const $ = (id) => document.getElementById(id);
let meta = null, session = null;
// The photo on screen and its answer: {result, bitmap} (decoded here) or {result, file} (screened by the server).
// null whenever no answer is on screen, so that "Send" can never send another photo than the one answered.
let current = null;
let picks = 0;  // which pick is the latest: an answer that arrives after a newer pick is dropped
let offered = null;  // the file waiting for the person's go-ahead to be screened by the server
let sending = false;
let adding = false;  // photo 2 or 3 is being screened: neither another one nor sending until it is done
const MAX_PHOTOS = 3;  // a case's photos at most (the server's cases.MAX_PHOTOS)
let readyStatus = ["status.loading"];  // the status line's id (and values) once the model is loaded, restored later
const MY_CASES = "mpoxscan-cases";  // this phone's own list of sent cases (number + follow-up link), nowhere else
// The heat map's colours: the dashboard's ramp (mpoxscan.explain.overlay._RAMP) and its blending, mirrored.
const RAMP = [[0, 0, 0.5], [0, 0.4, 1], [0, 0.9, 0.9], [1, 0.95, 0], [1, 0.4, 0], [0.75, 0, 0]];
const HEAT_ALPHA = 0.45;

async function start() {
  await mpoxscanLoadCatalogues();  // the page in the person's language before anything else (messages.js)
  mpoxscanApply();
  mpoxscanSwitcher($("language"));
  // This phone's cases first (what waits to be sent, what was answered): none of it needs the model.
  listMyCases();
  sendWaiting();  // cases composed on an earlier visit without a connection
  showRetention();
  meta = await (await fetch("/api/model")).json();
  if (typeof WebAssembly === "object" && typeof ort === "object") {
    try {
      // The runtime's module and binary and the model at their versioned addresses (cached for good, compressed).
      ort.env.wasm.wasmPaths = MPOXSCAN_FILES.ortWasm ? { mjs: MPOXSCAN_FILES.ortMjs, wasm: MPOXSCAN_FILES.ortWasm }
        : "/ort/";
      // Several threads where the page is cross-origin isolated (the app's headers grant SharedArrayBuffer) and the
      // phone has the cores, one core left to the page itself (on 2 cores, 2 threads measured no faster in the median
      // than 1, and more spread: benchmarks/results/web/threads.md); one thread elsewhere, which works on any browser.
      ort.env.wasm.numThreads = self.crossOriginIsolated
        ? Math.max(1, Math.min(4, (navigator.hardwareConcurrency || 1) - 1)) : 1;
      session = await ort.InferenceSession.create(MPOXSCAN_FILES.model || "/model.onnx",
                                                  { executionProviders: ["wasm"] });
      // One run on a blank photo now: WebAssembly's first run of a graph sets up its kernels and memory (several
      // times a normal run), and it is better spent while the person picks a photo than after.
      const s = meta.preprocessing.input_size;
      await session.run({ image: new ort.Tensor("float32", new Float32Array(3 * s * s), [1, 3, s, s]) });
      readyStatus = ["status.device"];
    } catch (err) {
      session = null;
      readyStatus = ["status.device.failed", { error: err.message }];
    }
  } else {
    readyStatus = ["status.no.wasm"];
  }
  restoreStatus();
  window.mpoxscanReadyAt = performance.now();  // ms since the visit began (benchmarks/wire_bench.py)
  document.body.dataset.ready = "1";
  if ("serviceWorker" in navigator) {
    // Keep the page, the runtime and the model for offline use (after this first visit).
    navigator.serviceWorker.register("/sw.js").then(() => navigator.serviceWorker.ready)
      .then(() => { document.body.dataset.offline = "1"; }).catch(() => {});
  }
}

function setState(state) { document.body.dataset.state = state; }
const T = MPOXSCAN_TEXT;  // the page's texts, by id (messages.js)
const SAY = MPOXSCAN_SAY;  // an element's text by id: redrawn when the person switches the language

// How long the server keeps a case, told before consent: the server's own setting (serve --keep-days).
async function showRetention() {
  let days = null;
  try { days = (await (await fetch("/api/privacy")).json()).answered_cases_kept_days; } catch (err) { /* offline */ }
  if (Number.isInteger(days)) SAY($("privacy-kept"), "privacy.kept", { days, count: days });
  else SAY($("privacy-kept"), "privacy.kept.unknown");
}

// A new photo was picked (or a pick failed): nothing of the previous photo stays on screen or can be sent.
function clearAnswer() {
  current = null; offered = null; window.mpoxscanLast = null;
  $("result").hidden = true; $("send-section").hidden = true; $("server-offer").hidden = true;
  SAY($("verdict"), null); SAY($("explain"), null); $("verdict").className = "";
  $("verdict").hidden = true; $("next-steps").hidden = true;  // no empty heading between answers
  $("error").hidden = true; SAY($("error"), null);
  $("consent").checked = false; $("pin").value = ""; sending = false; adding = false;
  $("training-consent").checked = false; $("training-consent").disabled = false;
  // The other photos and the answers to the questions belong to the case of the photo that was on screen.
  $("more-list").replaceChildren(); SAY($("more-status"), null);
  for (const select of $("questions").querySelectorAll("select")) select.value = "";
  $("questions").disabled = false;
  updateSend(); updateMore();
  SAY($("send-status"), null); $("sent").hidden = true; $("compose").hidden = false;
}

function fail(id, vars) {
  clearAnswer();
  SAY($("error"), id, vars); $("error").hidden = false;
  setState("error");
}

function toTensor(canvas) {
  const p = meta.preprocessing, s = p.input_size, px = canvas.getContext("2d").getImageData(0, 0, s, s).data;
  const data = new Float32Array(3 * s * s);
  for (let i = 0; i < s * s; i++) for (let c = 0; c < 3; c++) data[c * s * s + i] = (px[4 * i + c] / 255 - p.mean[c]) / p.std[c];
  return new ort.Tensor("float32", data, [1, 3, s, s]);
}

function rampColour(v) {
  const pos = Math.max(0, Math.min(1, v)) * (RAMP.length - 1), low = Math.min(Math.floor(pos), RAMP.length - 2);
  const f = pos - low;
  return RAMP[low].map((c, j) => 255 * (c * (1 - f) + RAMP[low + 1][j] * f));
}

// The photo the network saw with the model's map over it, as the dashboard draws it (explain/overlay.py): the map
// resized bilinearly, coloured with the same ramp, blended where it is strong (weak evidence stays see-through).
function drawHeat(cam, picture = $("seen"), heat = $("heat")) {
  const ctx = heat.getContext("2d"), w = heat.width, h = heat.height, k = cam.length;
  ctx.drawImage(picture, 0, 0, w, h);
  const img = ctx.getImageData(0, 0, w, h), d = img.data;
  const at = (y, x) => cam[Math.max(0, Math.min(k - 1, y))][Math.max(0, Math.min(k - 1, x))];
  for (let y = 0; y < h; y++) {
    const sy = (y + 0.5) * k / h - 0.5, y0 = Math.floor(sy), fy = sy - y0;
    for (let x = 0; x < w; x++) {
      const sx = (x + 0.5) * k / w - 0.5, x0 = Math.floor(sx), fx = sx - x0;
      const v = Math.max(0, Math.min(1, (at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx) * (1 - fy)
                                        + (at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx) * fy));
      const c = rampColour(v), a = HEAT_ALPHA * Math.sqrt(v), o = 4 * (y * w + x);
      for (let j = 0; j < 3; j++) d[o + j] = d[o + j] * (1 - a) + c[j] * a;
    }
  }
  ctx.putImageData(img, 0, 0);
}

// The cam as rows: the device gives a flat k*k array, the server a list of rows.
function camRows(cam) {
  if (!cam || !cam.length) return null;
  if (Array.isArray(cam[0])) return cam;
  const k = Math.round(Math.sqrt(cam.length));
  return Array.from({ length: k }, (_, i) => Array.from(cam.slice(i * k, (i + 1) * k)));
}

const percent = (p) => ({ percent: p });  // formatted for the language when drawn (Intl.NumberFormat)

// What to do first, then why; the numbers go under "Details". A reason and its advice are ids of the catalogues
// ("too small" -> reason.too-small), with the model file's own words for a reason they do not know.
function headline(result) {
  const kind = result.answer === "cannot tell" ? "unsure" : result.answer === "positive" ? "positive" : "negative";
  const slug = String(result.reason || "").replace(/ /g, "-");
  const vars = kind !== "unsure" ? {} : {
    reason: { id: `reason.${slug}`, fallback: result.reason },
    advice: { id: `advice.${slug}`, fallback: meta.advice[result.reason] || "" } };
  return [kind, `answer.${kind}.title`, `answer.${kind}.text`, vars];
}

// Next steps under every answer: testing, close contact and warning signs (positive), what to watch for
// (negative), how to retake (cannot tell).
function showNextSteps(kind) {
  SAY($("next-title"), "next.title");
  SAY($("next-list"), `next.${kind}`);  // a list in the catalogue: drawn as <li>s
  $("urgent").hidden = kind !== "positive";
  if (kind === "positive") {
    SAY($("urgent-title"), "next.urgent.title");
    SAY($("urgent-list"), "next.urgent");
    SAY($("urgent-who"), "next.urgent.who");
  }
  $("next-steps").hidden = false;
}

function show(result, picture) {
  const unsure = result.answer === "cannot tell", s = result.screening;
  const [kind, title, text, vars] = headline(result);
  $("verdict").className = kind; SAY($("verdict"), title); SAY($("explain"), text, vars);
  $("verdict").hidden = false;
  showNextSteps(kind);
  $("result").hidden = false; $("retake").hidden = !unsure;
  // A photo the model cannot judge gets no verdict at all: no numbers, no map, only why and how to retake it.
  $("details").hidden = unsure;
  const cam = unsure ? null : camRows(result.cam);
  $("heat-figure").hidden = !cam; $("legend").hidden = !cam;
  $("seen-figure").hidden = !picture;
  const ctx = $("seen").getContext("2d");
  ctx.clearRect(0, 0, $("seen").width, $("seen").height);
  if (picture) ctx.drawImage(picture, 0, 0, $("seen").width, $("seen").height);
  if (cam && picture) drawHeat(cam); else { $("heat-figure").hidden = true; $("legend").hidden = true; }
  SAY($("screening-line"), "details.line", { probability: percent(s.probability), threshold: percent(s.threshold) });
  const table = $("probabilities");
  while (table.rows.length) table.deleteRow(0);
  for (const [name, p] of Object.entries(result.probabilities).sort((a, b) => b[1] - a[1])) {
    const row = table.insertRow();
    // The diseases' names for people; a class the catalogues do not name (another model's) keeps its own name.
    const cell = row.insertCell();
    if (`class.${name}` in MPOXSCAN_CATALOGUES.en) SAY(cell, `class.${name}`); else cell.textContent = name;
    MPOXSCAN_SAY_VALUE(row.insertCell(), percent(p));
  }
  if (result.computed === "device") SAY($("timing"), "details.timing.device", { ms: { number: result.ms } });
  else SAY($("timing"), "details.timing.server");
  window.mpoxscanLast = result;
  setState("answer");
}

// Consent is asked again for each photo; the button looks disabled until it is given, and says why when pressed.
function updateSend() {
  const ready = !!current && $("consent").checked && !sending && !adding;
  $("send").setAttribute("aria-disabled", ready ? "false" : "true");
  if (ready && $("send-status").dataset.hint) {
    SAY($("send-status"), null); delete $("send-status").dataset.hint;
  }
}

function offerSending(fromFile) {
  $("send-section").hidden = false; $("consent").checked = false; sending = false; showComposed(true);
  $("pin").value = "";
  $("training-consent").checked = false; $("training-consent").disabled = false;  // never carried over
  SAY($("send-what"), fromFile ? "privacy.what.file" : "privacy.what.device");
  SAY($("send-status"), null); $("sent").hidden = true;
  updateSend(); updateMore();
}

// The "add another photo" button while the case has room, and the consent's words for one photo or several.
function updateMore() {
  const count = current ? 1 + current.extras.length : 1, hide = !current || count >= MAX_PHOTOS || $("compose").hidden;
  if (hide && document.activeElement === $("add-photo")) {  // the focus would fall back to the page's start
    $("more-status").tabIndex = -1; $("more-status").focus();
  }
  $("add-photo").hidden = hide;
  SAY($("more-intro"), count >= MAX_PHOTOS ? "more.full" : "more.intro");
  if (count > 1) SAY($("consent-text"), "consent.photos", { count }); else SAY($("consent-text"), "consent");
}

// Photo 2 or 3 with its answer, under the first: the square the model saw (with its map where it judged the photo),
// then the answer's headline and its explanation, as for the first photo.
function drawMorePhoto(n, result, picture) {
  const [kind, title, text, vars] = headline(result);
  const li = document.createElement("li"), figure = document.createElement("figure");
  const canvas = Object.assign(document.createElement("canvas"), { width: 224, height: 224 });
  canvas.setAttribute("aria-hidden", "true");  // its caption and the answer beside it say what it shows
  const cam = result.answer === "cannot tell" ? null : camRows(result.cam);
  if (cam) drawHeat(cam, picture, canvas); else canvas.getContext("2d").drawImage(picture, 0, 0, 224, 224);
  const caption = document.createElement("figcaption");
  SAY(caption, "more.caption", { n });
  figure.append(canvas, caption);
  const body = document.createElement("div"), head = document.createElement("p"), explain = document.createElement("p");
  head.className = "more-answer " + kind;
  SAY(head, "more.item", { n, answer: { id: title } });
  explain.className = "small"; SAY(explain, text, vars);
  body.append(head, explain);
  li.dataset.answer = result.answer;
  li.append(figure, body);
  $("more-list").append(li);
}

// Photos 2 and 3: screened by the same rule as the first (on the device, or by the server where the model cannot
// run here) and added to the case on screen; a photo this browser cannot open is not offered to the server here.
async function screenMore(file) {
  const theCase = current;
  if (!theCase || sending || adding || theCase.extras.length >= MAX_PHOTOS - 1) return;
  const n = theCase.extras.length + 2;
  adding = true; updateSend();
  SAY($("more-status"), "more.screening", { n });
  let bitmap;
  try { bitmap = await createImageBitmap(file, { imageOrientation: "from-image" }); }
  catch (err) { bitmap = null; }
  if (current !== theCase) return;  // another first photo was picked meanwhile: a new case
  try {
    if (!bitmap) { SAY($("more-status"), "more.cannot.open"); return; }
    let result, picture;
    if (session) [result, picture] = await screenOnDevice(bitmap, file);
    else { picture = await networkInput(bitmap); result = await screenOnServer(file, false); }
    if (current !== theCase) return;
    theCase.extras.push({ result, bitmap });
    drawMorePhoto(n, result, picture);
    SAY($("more-status"), "more.added", { n, answer: { id: headline(result)[1] } });
    $("consent").checked = false;  // the consent given was for fewer photos: asked again
    $("training-consent").checked = false;
    window.mpoxscanMore = theCase.extras.map((extra) => extra.result);
  } catch (err) {
    if (current !== theCase) return;
    SAY($("more-status"), "more.failed", { n, reason: reasonOf(err) });
  } finally {
    if (current === theCase) { adding = false; updateSend(); updateMore(); }
  }
}

function reencode(bitmap, maxSide) {
  // Drawing into a canvas keeps only the pixels: EXIF (place, time, camera) and every other tag stay behind.
  const scale = Math.min(1, maxSide / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale); canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
}

/** The refusals of a case that the person reads in their language, by HTTP status. */
const REFUSALS = {
  413: "send.refused.too-large", 415: "send.refused.not-a-photo", 429: "send.refused.too-many",
  503: "send.refused.unavailable",
};

async function sendCase() {
  if (sending || adding) return;
  if (!current) return;
  if (!$("consent").checked) {
    SAY($("send-status"), "send.need.consent");
    $("send-status").dataset.hint = "1";
    $("consent").focus();
    return;
  }
  const pin = $("pin").value.trim();
  if (pin && !/^[0-9]{4,6}$/.test(pin)) {
    SAY($("send-status"), "pin.invalid");
    $("pin").focus();
    return;
  }
  const theCase = current;  // this photo and its answer, whatever is picked while sending
  sending = true; updateSend();  // one photo, one case: no double sending
  SAY($("send-status"), "send.sending");
  let entry;
  try {
    entry = await composeCase(theCase, pin);
  } catch (err) {
    if (current !== theCase) return;
    SAY($("send-status"), "send.refused", { reason: reasonOf(err) });
    sending = false; updateSend(); return;
  }
  // Sent now if the phone is online; else, or when the connection fails, it waits on the phone (outbox.js) with
  // the consent given now, and is sent when the connection returns. The idempotency key makes a second send of the
  // same case (an answer lost on the way back) find the first.
  let response = null, answer = {};
  if (navigator.onLine !== false) {
    try {
      response = await fetch("/api/cases", { method: "POST", body: MPOXSCAN_OUTBOX.form(entry) });
      // A proxy in front may answer an error in HTML: that is a refusal, not "no connection".
      answer = await response.json().catch(() => ({}));
    } catch (err) { response = null; }
  }
  if (response === null || (!response.ok && RETRY_LATER.has(response.status))) {
    try { await queueCase(entry); } catch (err) {
      // No IndexedDB here (a private window, storage full): nothing can wait, so say it was not sent.
      if (current !== theCase) return;
      SAY($("send-status"), response === null ? "send.offline" : "send.refused.unavailable");
      sending = false; updateSend(); return;
    }
    if (current !== theCase) return;
    showComposed(false); $("pin").value = "";
    SAY($("send-status"), "send.queued");
    $("send-status").tabIndex = -1; $("send-status").focus();
    return;
  }
  if (response.ok) addMyCase(answer);  // kept in this phone's list even if another photo was picked meanwhile
  if (current !== theCase) return;  // another photo was picked meanwhile: this page no longer shows that one
  if (!response.ok) {
    // The server's reasons are English (it answers API clients too): the usual refusals have texts of their own.
    const known = REFUSALS[response.status];
    if (known) SAY($("send-status"), known);
    else if (answer.detail) SAY($("send-status"), "send.refused", { reason: answer.detail });
    else SAY($("send-status"), "send.refused.status", { status: response.status });
    sending = false; updateSend(); return;
  }
  SAY($("send-status"), null);
  showSent(answer);
  window.mpoxscanSent = answer;
}

// The answers that mean "the server (or the proxy before it) cannot take it now": such a case waits on the phone,
// as one sent without a connection does. (Too many cases from this connection, 429, is said: the person decides.)
const RETRY_LATER = new Set([502, 503, 504]);

// The case as the server takes it (CaseForm), ready to send now or later: the photos re-encoded on this phone
// without their hidden data, the answers shown, the questions answered, the consents given now.
async function composeCase(theCase, pin) {
  const fields = [["consent", "true"], ["computed", theCase.result.computed],
                  ["probabilities", JSON.stringify(theCase.result.probabilities)], ["model_sha256", meta.sha256],
                  ["language", MPOXSCAN_LANG]];
  // The photo as a file (no base64; named "photo", for a phone's file name can hold the date).
  const files = [["photo", theCase.bitmap ? await reencode(theCase.bitmap, 2048) : theCase.file]];
  // Photos 2 and 3 as numbered fields (a repeated field is refused), each with the answer shown for it.
  for (const [i, extra] of theCase.extras.slice(0, MAX_PHOTOS - 1).entries()) {
    files.push([`photo_${i + 2}`, await reencode(extra.bitmap, 2048)]);
    fields.push([`computed_${i + 2}`, extra.result.computed], [`probabilities_${i + 2}`,
                                                                 JSON.stringify(extra.result.probabilities)]);
  }
  // Only the questions answered: an unanswered one is not sent at all.
  for (const select of $("questions").querySelectorAll("select")) {
    if (select.value) fields.push([select.name, select.value]);
  }
  if (pin) fields.push(["pin", pin]);  // the server keeps its hash only; this page forgets it once sent
  // The second consent only when ticked: not sending it means no.
  if ($("training-consent").checked) fields.push(["training_consent", "true"]);
  return { key: MPOXSCAN_OUTBOX.newKey(), created: new Date().toISOString(), fields, files,
           photos: files.length, pin: !!pin, state: "waiting" };
}

// After sending: the composing part (PIN, consents, Send) gives way to the confirmation, which says whether the
// case is locked, and offers the link to share or copy.
function showComposed(open) {
  $("compose").hidden = !open;
  $("questions").disabled = !open; updateMore();
}

function showSent(answer) {
  const link = location.origin + answer.follow_up;
  showComposed(false); $("pin").value = "";
  $("sent-number").textContent = answer.number;
  SAY($("sent-lock"), answer.locked ? "sent.pin.set" : "sent.pin.none");
  $("sent-link-box").value = link; $("sent-link").href = link;
  $("share-link").hidden = typeof navigator.share !== "function";
  SAY($("copy-status"), null);
  $("sent").hidden = false;
  $("sent").focus();  // the Send button just vanished: without this the focus falls back to the page
}

// The link: shared through the phone's own share sheet (Web Share) where it has one, else copied.
async function shareLink() {
  try { await navigator.share({ title: T("page.title"), url: $("sent-link-box").value }); }
  catch (err) { if (err && err.name !== "AbortError") copyLink(); }
}

async function copyLink() {
  const box = $("sent-link-box");
  let copied = false;
  try { await navigator.clipboard.writeText(box.value); copied = true; } catch (err) {
    box.focus(); box.select();  // the older way, for a browser without the clipboard API (or its permission)
    try { copied = document.execCommand("copy"); } catch (err2) { copied = false; }
  }
  SAY($("copy-status"), copied ? "sent.copied" : "sent.copy.failed");
}

// This phone's cases waiting to be sent (outbox.js), with a button to remove each; a case the server refused for
// good stays listed with why, until removed.
async function queueCase(entry) {
  await MPOXSCAN_OUTBOX.put(entry);
  // Background Sync: the browser wakes the service worker when the connection returns, even with the page closed.
  // Not awaited: `ready` never settles where no service worker was registered (plain http on a network address).
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.ready.then((r) => r.sync && r.sync.register(MPOXSCAN_OUTBOX.TAG))
      .catch(() => { /* no Background Sync: sent on the next visit, or when back online */ });
  }
  await drawOutbox();
}

async function drawOutbox() {
  let entries = [];
  try { entries = await MPOXSCAN_OUTBOX.all(); } catch (err) { /* no IndexedDB (a private window): nothing waits */ }
  const shown = entries.filter((e) => e.state !== "sent");
  $("outbox").hidden = shown.length === 0;
  $("outbox-list").replaceChildren(...shown.map((entry) => {
    const li = document.createElement("li"), text = document.createElement("span");
    li.dataset.state = entry.state;
    SAY(text, entry.state === "refused" ? "outbox.refused" : "outbox.item",
        { count: entry.photos, composed: { date: entry.created }, reason: entry.reason || String(entry.status) });
    const remove = Object.assign(document.createElement("button"), { type: "button", className: "secondary small-button" });
    SAY(remove, "outbox.remove");
    remove.addEventListener("click", async () => {
      if (!confirm(T("outbox.remove.confirm"))) return;
      await MPOXSCAN_OUTBOX.remove(entry.key);
      await drawOutbox();
      SAY($("outbox-status"), "outbox.removed");
    });
    li.append(text, " ", remove);
    return li;
  }));
  window.mpoxscanOutbox = shown.map((e) => e.state);
}

// The cases the service worker or an earlier visit sent: into this phone's list (with their device key), out of the
// queue. Then whatever still waits is sent, if the phone is online.
let flushing = null;
function sendWaiting() {
  if (!flushing) {
    flushing = (async () => {
      try {
        await collectSent();
        if (navigator.onLine !== false) await MPOXSCAN_OUTBOX.flush();
        await collectSent();
      } catch (err) { /* no IndexedDB: nothing waits */ }
      await drawOutbox();
    })().finally(() => { flushing = null; });
  }
  return flushing;
}

async function collectSent() {
  let sent = false;
  for (const entry of await MPOXSCAN_OUTBOX.all()) {
    if (entry.state !== "sent") continue;
    addMyCase(entry.result);
    await MPOXSCAN_OUTBOX.remove(entry.key);
    sent = true;
    SAY($("outbox-status"), "outbox.sent", { number: entry.result.number });
  }
  if (sent) window.mpoxscanOutboxSent = (window.mpoxscanOutboxSent || 0) + 1;
}

// A case the server took: at the top of this phone's list, with its device key if it is locked (a case already
// listed, sent again from the queue, is not listed twice).
function addMyCase(answer) {
  const link = location.origin + answer.follow_up;
  const mine = myCases().filter((c) => c.number !== answer.number);
  mine.unshift({ number: answer.number, link, sent: answer.sent_at, ...(answer.device_key ? { key: answer.device_key } : {}) });
  localStorage.setItem(MY_CASES, JSON.stringify(mine.slice(0, 50)));
  listMyCases();
}

// This phone's sent cases, each with its status asked from the server with the case's own link (its token); a case
// the server no longer has (withdrawn by the person, or purged) leaves the list. A case locked by a PIN tells its
// status to this phone with the device key it keeps beside the link (never to another browser holding the link,
// which must give the PIN on the follow-up page); a case sent before device keys existed: "locked".
const caseStatus = {};  // link -> "waiting" | "asked" | "replied" | "answered" | "locked" | "unknown", as last asked
const caseNew = {};  // link -> the expert wrote since the person last opened the case's page
let listing = 0;  // which listing is the latest: an older one's answers are dropped
const POLL_MS = 60000;  // while the page is open (or installed and open), the list is asked again every minute

function myCases() { return JSON.parse(localStorage.getItem(MY_CASES) || "[]"); }

function drawMyCases(mine) {
  $("my-cases").hidden = mine.length === 0;
  $("my-cases-list").hidden = false; $("clear-cases").hidden = false;
  if (mine.length) SAY($("my-cases-status"), null);  // a case sent after clearing: the list is back
  $("my-cases-list").replaceChildren(...mine.map((c) => {
    const li = document.createElement("li"), a = document.createElement("a"), status = caseStatus[c.link];
    a.href = c.link; SAY(a, "cases.item", { number: c.number, sent: { date: c.sent } });  // in the phone's time zone
    li.append(a);
    if (status) {
      li.dataset.status = status;
      const label = Object.assign(document.createElement("span"), { className: "case-status " + status });
      SAY(label, "cases.status." + status);
      li.append(" · ", label);
    }
    if (caseNew[c.link]) {
      li.dataset.new = "1";
      const badge = Object.assign(document.createElement("span"), { className: "new-badge" });
      SAY(badge, "cases.new");
      li.append(" ", badge);
    }
    return li;
  }));
  offerNotifications(mine.length > 0);
}

async function listMyCases() {
  const turn = ++listing;
  drawMyCases(myCases());
  const answers = await Promise.all(myCases().map(async (c) => {
    try {
      // A locked case's status with this phone's device key (a header: never in an address), else with the cookie
      // the follow-up page set when its PIN was given.
      const response = await fetch("/api/cases/" + encodeURIComponent(new URL(c.link).pathname.split("/c/")[1]),
                                   { credentials: "same-origin", headers: c.key ? { "X-Device-Key": c.key } : {} });
      if (response.status === 404) return [c.link, "gone", null];
      if (response.status === 401) return [c.link, "locked", null];
      if (!response.ok) return [c.link, "unknown", null];
      const data = await response.json();
      return [c.link, data.status === "withdrawn" ? "gone" : data.status, data];  // should a server keep the row
    } catch (err) { return [c.link, "unknown", null]; }
  }));
  if (turn !== listing) return;
  const fresh = {};
  for (const [link, status, data] of answers) {
    caseStatus[link] = status; fresh[link] = data;
    if (data) caseNew[link] = data.unseen > 0;
  }
  // Re-read: a case may have been sent meanwhile.
  const kept = myCases().filter((c) => caseStatus[c.link] !== "gone").map((c) => tellIfNew(c, fresh[c.link]));
  localStorage.setItem(MY_CASES, JSON.stringify(kept));
  drawMyCases(kept);
}

// A local notification (no push server: this page asks while it is open) when the expert wrote something the
// person has not seen, once per message: `told` is how many of the expert's messages were already told or seen.
function tellIfNew(c, data) {
  if (!data) return c;
  const written = data.messages.filter((m) => m.author === "expert").length;
  if (data.unseen === 0) return { ...c, told: written };
  if (written <= (c.told || 0)) return c;
  if (!("Notification" in window) || Notification.permission !== "granted" || !("serviceWorker" in navigator)) return c;
  navigator.serviceWorker.ready.then((registration) => registration.showNotification(T("notify.title"), {
    body: T("notify.body", { number: c.number }), tag: "mpoxscan-" + c.number, data: { url: c.link },
    icon: "/static/icon-192.png" }))
    .then(() => { (window.mpoxscanNotified = window.mpoxscanNotified || []).push(c.number); })
    .catch(() => {});
  return { ...c, told: written };
}

// The button that asks the browser for notifications: shown once this phone has sent a case, never asked on load.
function offerNotifications(haveCases) {
  const can = "Notification" in window && "serviceWorker" in navigator;
  const permission = can ? Notification.permission : "denied";
  $("notify").hidden = !can || !haveCases || permission !== "default";
  if (!can || !haveCases) SAY($("notify-status"), null);
  else if (permission === "granted") SAY($("notify-status"), "notify.on");
  else if (permission === "denied") SAY($("notify-status"), "notify.denied");
  else SAY($("notify-status"), null);
}

async function askNotifications() {
  try { await Notification.requestPermission(); } catch (err) { /* an old browser: the state below says it */ }
  offerNotifications(myCases().length > 0);
  if (Notification.permission === "granted") listMyCases();
}

function clearMyCases() {
  if (!confirm(T("cases.clear.confirm"))) return;
  localStorage.removeItem(MY_CASES);
  listing++;  // an answer still on its way must not bring the list back
  $("my-cases-list").replaceChildren(); $("my-cases-list").hidden = true; $("clear-cases").hidden = true;
  SAY($("my-cases-status"), "cases.cleared");
  $("my-cases-status").tabIndex = -1; $("my-cases-status").focus();
}

async function networkInput(bitmap) {
  // Exactly Python's resize and crop (resize.js), drawn into a canvas: what the network sees, shown to the person.
  const p = meta.preprocessing, seen = document.createElement("canvas");
  seen.width = seen.height = p.input_size;
  seen.getContext("2d").putImageData(await MPOXSCAN_RESIZE.resizeCrop(bitmap, p.input_size, p.crop_pct ?? 1), 0, 0);
  return seen;
}

// The photo's JPEG blockiness (answer.js), read from its centre square as decoded: what the server measures. Not for a
// JPEG over twice the network's input on its short side, which the server decodes at a reduced scale and does not
// measure (deploy/compression.py).
function photoBlockiness(bitmap, file) {
  if (file && file.type === "image/jpeg" && Math.min(bitmap.width, bitmap.height) > 2 * meta.preprocessing.input_size) return null;
  const [left, top, w, h] = MPOXSCAN_ANSWER.centreCropBox(bitmap.width, bitmap.height);
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, left, top, w, h, 0, 0, w, h);
  const value = MPOXSCAN_ANSWER.blockiness(ctx.getImageData(0, 0, w, h).data, w, h);
  canvas.width = canvas.height = 0;
  return value;
}

async function screenOnDevice(bitmap, file) {
  const t0 = performance.now(), seen = await networkInput(bitmap), t1 = performance.now();
  const out = await session.run({ image: toTensor(seen) });
  const ms = performance.now() - t0, prepMs = t1 - t0, proba = Array.from(out.probabilities.data), k = meta.classes.indexOf(meta.positive_class);
  const best = proba.indexOf(Math.max(...proba)), measures = MPOXSCAN_ANSWER.measuresOf(out);
  const blocks = photoBlockiness(bitmap, file);
  if (blocks !== null) measures.blockiness = blocks;
  const [answer, reason] = MPOXSCAN_ANSWER.decide(meta.answer_rule, proba[k], Math.min(bitmap.width, bitmap.height), measures);
  const result = { computed: "device", ms, prepMs, answer, reason, measures, predicted: meta.classes[best],
                   probabilities: Object.fromEntries(meta.classes.map((c, i) => [c, proba[i]])),
                   screening: { class: meta.positive_class, probability: proba[k], threshold: meta.screening_threshold,
                                positive: answer === "cannot tell" ? null : answer === "positive" },
                   cam: out.cam ? Array.from(out.cam.data) : null };
  return [result, seen];
}

// The server's answer for the photo's bytes; with `picture`, also the square it screened (as a JPEG data URL).
async function screenOnServer(file, picture) {
  let response, result;
  try {
    const form = new FormData();
    form.append("photo", file, "photo");  // not the phone's file name, which can hold the date
    response = await fetch("/api/screen" + (picture ? "?picture=1" : ""), { method: "POST", body: form });
    result = await response.json();
  } catch (err) {
    throw Object.assign(new Error("no connection"), { i18n: { id: "error.no.connection" } });
  }
  if (!response.ok) {  // the server's reason, as it gives it; else its status
    throw Object.assign(new Error(result.detail || String(response.status)),
                        { i18n: result.detail ? null : { id: "error.server", vars: { status: response.status } } });
  }
  return result;
}

function loadPicture(dataUrl) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve(img); img.onerror = () => resolve(null);
    img.src = dataUrl;
  });
}

// Why a photo could not be screened: a text of the catalogues, or the message of the error (the server's reason).
const reasonOf = (err) => (err && err.i18n) || (err && err.message ? err.message : String(err));

async function screenPicked(file) {
  const pick = ++picks;
  clearAnswer();
  setState("busy");
  SAY($("status"), session ? "status.screening.device" : "status.screening.server");
  let bitmap;
  try { bitmap = await createImageBitmap(file, { imageOrientation: "from-image" }); }
  catch (err) { bitmap = null; }
  if (pick !== picks) return;
  if (!bitmap) { restoreStatus(); await cannotOpen(file, pick); return; }
  try {
    let result, picture;
    if (session) [result, picture] = await screenOnDevice(bitmap, file);
    else { picture = await networkInput(bitmap); result = await screenOnServer(file, false); }
    if (pick !== picks) return;
    restoreStatus();
    show(result, picture);
    current = { result, bitmap, extras: [] };
    offerSending(false);
  } catch (err) {
    // Whatever goes wrong (a photo too large for this phone's memory, no network for the server), say so.
    if (pick !== picks) return;
    restoreStatus();
    fail("error.screen", { reason: reasonOf(err) });
  }
}

function restoreStatus() { SAY($("status"), ...readyStatus); }

// Formats every browser opens: when one fails to open, the file is damaged, and the server would fail too.
async function looksCommon(file) {
  const b = new Uint8Array(await file.slice(0, 12).arrayBuffer());
  const starts = (...bytes) => bytes.every((v, i) => b[i] === v);
  return starts(0xff, 0xd8, 0xff) || starts(0x89, 0x50, 0x4e, 0x47) || starts(0x47, 0x49, 0x46) ||
    (starts(0x52, 0x49, 0x46, 0x46) && b[8] === 0x57 && b[9] === 0x45 && b[10] === 0x42 && b[11] === 0x50) ||
    starts(0x42, 0x4d);
}

// Formats a phone may save that some browsers cannot open but the server can: HEIF / HEIC / AVIF (an ISO box
// "ftyp" at byte 4) and TIFF (a camera's DNG too). Anything else that fails to open is not worth sending.
async function looksServerOnly(file) {
  const b = new Uint8Array(await file.slice(0, 12).arrayBuffer());
  const at = (offset, ...bytes) => bytes.every((v, i) => b[offset + i] === v);
  return at(4, 0x66, 0x74, 0x79, 0x70) || at(0, 0x49, 0x49, 0x2a, 0x00) || at(0, 0x4d, 0x4d, 0x00, 0x2a);
}

async function cannotOpen(file, pick) {
  let common = true, serverOnly = false;
  try { [common, serverOnly] = [await looksCommon(file), await looksServerOnly(file)]; } catch (err) { /* unreadable: damaged */ }
  if (pick !== picks) return;
  if (common || !serverOnly || file.size === 0) {
    fail("error.damaged");
    return;
  }
  // Perhaps a format only the server reads (HEIC, AVIF, TIFF): the photo leaves the phone only if the person agrees
  // (where the model cannot run here, the page said from the start that photos are screened by the server).
  offered = file;
  if (!session) { await screenOffered(); return; }
  $("server-offer").hidden = false; setState("offer");
  $("screen-on-server").focus();
}

async function screenOffered() {
  const file = offered, pick = picks;
  if (!file) return;
  $("server-offer").hidden = true; offered = null; setState("busy");
  SAY($("status"), "status.screening.server");
  try {
    const result = await screenOnServer(file, true);
    if (pick !== picks) return;
    restoreStatus();
    show(result, result.picture ? await loadPicture(result.picture) : null);
    if (pick !== picks) { clearAnswer(); return; }
    SAY($("timing"), "details.timing.server.sent");
    current = { result, file, extras: [] };
    offerSending(true);
  } catch (err) {
    if (pick !== picks) return;
    restoreStatus();
    fail("error.screen", { reason: reasonOf(err) });
  }
}

$("pick").addEventListener("click", () => $("photo").click());
$("retake").addEventListener("click", () => $("photo").click());
$("photo").addEventListener("change", () => {
  const file = $("photo").files[0];
  if (!file) return;  // the picker was closed without a choice: what is on screen stays
  screenPicked(file);
  $("photo").value = "";  // picking the same file again screens it again
});
$("screen-on-server").addEventListener("click", screenOffered);
$("add-photo").addEventListener("click", () => { if (!adding && !sending) $("more-photo").click(); });
$("more-photo").addEventListener("change", () => {
  const file = $("more-photo").files[0];
  if (!file) return;
  screenMore(file);
  $("more-photo").value = "";
});
$("consent").addEventListener("change", updateSend);
$("send").addEventListener("click", sendCase);
$("clear-cases").addEventListener("click", clearMyCases);
$("share-link").addEventListener("click", shareLink);
$("copy-link").addEventListener("click", copyLink);
// The connection is back: what waits on the phone goes now (the service worker may be doing it too: the server
// makes one case of both).
window.addEventListener("online", sendWaiting);
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.addEventListener("message", (event) => {
    if (event.data && event.data.type === "outbox") sendWaiting();  // the service worker sent what waited
  });
}
$("notify").addEventListener("click", askNotifications);
setInterval(() => { if (myCases().length) listMyCases(); sendWaiting(); }, POLL_MS);
document.addEventListener("visibilitychange", () => { if (!document.hidden && myCases().length) listMyCases(); });
window.mpoxscanCheckCases = listMyCases;  // the tests ask at once rather than wait a minute
window.mpoxscanSendWaiting = sendWaiting;
start();
