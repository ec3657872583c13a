// The phone page: preprocessing and screening on the device (ONNX Runtime Web, WebAssembly), then the answer rule
// (answer.js: positive, negative or cannot tell, from the model file's own outputs and thresholds); the server's
// /api/screen is used only where WebAssembly is missing.
"use strict";
const $ = (id) => document.getElementById(id);
let meta = null, session = null, current = null;
const MY_CASES = "mpoxscan-cases";  // this phone's own list of sent cases (number + follow-up link), nowhere else

async function start() {
  meta = await (await fetch("/api/model")).json();
  $("disclaimer").textContent = meta.disclaimer;
  if (typeof WebAssembly === "object" && typeof ort === "object") {
    try {
      ort.env.wasm.wasmPaths = "/ort/";
      ort.env.wasm.numThreads = 1;  // no SharedArrayBuffer needed: works on any phone browser
      session = await ort.InferenceSession.create("/model.onnx", { executionProviders: ["wasm"] });
      $("status").textContent = "Ready: screening runs on this device.";
    } catch (err) {
      session = null;
      $("status").textContent = "On-device screening unavailable (" + err.message + "): photos will be screened by the server.";
    }
  } else {
    $("status").textContent = "This browser cannot run the model: photos will be screened by the server.";
  }
  listMyCases();
  document.body.dataset.ready = "1";
  if ("serviceWorker" in navigator) {
    // Keep the page, the runtime and the model for offline use (after this first visit).
    navigator.serviceWorker.register("/sw.js").then(() => navigator.serviceWorker.ready)
      .then(() => { document.body.dataset.offline = "1"; }).catch(() => {});
  }
}

function toTensor(canvas) {
  const p = meta.preprocessing, s = p.input_size, px = canvas.getContext("2d").getImageData(0, 0, s, s).data;
  const data = new Float32Array(3 * s * s);
  for (let i = 0; i < s * s; i++) for (let c = 0; c < 3; c++) data[c * s * s + i] = (px[4 * i + c] / 255 - p.mean[c]) / p.std[c];
  return new ort.Tensor("float32", data, [1, 3, s, s]);
}

function drawHeat(seen, cam, side) {
  const heat = $("heat"), ctx = heat.getContext("2d"), k = cam.length;
  ctx.drawImage(seen, 0, 0, heat.width, heat.height);
  const small = document.createElement("canvas");
  small.width = side; small.height = side;
  const img = small.getContext("2d").createImageData(side, side);
  for (let i = 0; i < side * side; i++) {
    const v = Math.max(0, Math.min(1, cam[i]));
    img.data[4 * i] = 255; img.data[4 * i + 1] = Math.round(255 * (1 - v)); img.data[4 * i + 2] = 0;
    img.data[4 * i + 3] = Math.round(200 * Math.sqrt(v));
  }
  small.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, 0, 0, heat.width, heat.height);
  return k;
}

function show(result, seen) {
  $("result").hidden = false;
  const s = result.screening, unsure = result.answer === "cannot tell";
  $("verdict").className = result.answer === "positive" ? "positive" : unsure ? "unsure" : "";
  // A photo the model cannot judge gets no verdict at all: only why, and how to take a better one.
  $("verdict").textContent = unsure
    ? `Cannot tell from this photo (${result.reason}): please retake it. ${meta.advice[result.reason] || ""}`
    : result.answer === "positive"
    ? `Looks like it could be ${s.class === "Monkeypox" ? "mpox" : s.class} (${(100 * s.probability).toFixed(0)} %): please show this to a health worker.`
    : `No sign of mpox found (${(100 * s.probability).toFixed(1)} %, threshold ${(100 * s.threshold).toFixed(1)} %).`;
  $("probabilities").hidden = unsure; $("heat").hidden = unsure;
  $("probabilities").innerHTML = "";
  for (const [name, p] of Object.entries(result.probabilities).sort((a, b) => b[1] - a[1])) {
    const row = $("probabilities").insertRow();
    row.insertCell().textContent = name; row.insertCell().textContent = (100 * p).toFixed(1) + " %";
  }
  const side = Math.round(Math.sqrt(result.cam.length));
  $("seen").getContext("2d").drawImage(seen, 0, 0);
  drawHeat(seen, result.cam, side);
  $("timing").textContent = result.computed === "device" ? `Computed on this device in ${result.ms.toFixed(0)} ms.` : "Computed by the server.";
  window.mpoxscanLast = result;
  // A new answer: consent is asked again for this photo.
  $("send-section").hidden = false; $("consent").checked = false; $("send").disabled = true;
  $("sent").hidden = true; $("send-status").textContent = "";
}

function reencode(bitmap, maxSide) {
  // Drawing into a canvas keeps only the pixels: EXIF (place, time, camera) and every other tag stay behind.
  const scale = Math.min(1, maxSide / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale); canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
}

function base64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

async function sendCase() {
  if (!current || !$("consent").checked) return;
  $("send").disabled = true;  // one photo, one case: no double sending
  $("send-status").textContent = "Sending…";
  try {
    const photo = await base64(await reencode(current.bitmap, 2048));
    const response = await fetch("/api/cases", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ consent: true, photo, computed: current.result.computed,
                             probabilities: current.result.probabilities, model_sha256: meta.sha256 }) });
    const answer = await response.json();
    if (!response.ok) { $("send-status").textContent = "Not sent: " + answer.detail; $("send").disabled = false; return; }
    const link = location.origin + answer.follow_up;
    $("send-status").textContent = "";
    $("sent-number").textContent = answer.number;
    $("sent-link").href = link; $("sent-link").textContent = link;
    $("sent").hidden = false;
    const mine = JSON.parse(localStorage.getItem(MY_CASES) || "[]");
    mine.unshift({ number: answer.number, link, sent: answer.sent_at });
    localStorage.setItem(MY_CASES, JSON.stringify(mine.slice(0, 50)));
    listMyCases();
    window.mpoxscanSent = answer;
  } catch (err) {
    $("send-status").textContent = "Not sent: no connection to the server. Try again when you are online.";
    $("send").disabled = false;
  }
}

function listMyCases() {
  const mine = JSON.parse(localStorage.getItem(MY_CASES) || "[]");
  $("my-cases").hidden = mine.length === 0;
  $("my-cases-list").innerHTML = "";
  for (const c of mine) {
    const a = document.createElement("a");
    a.href = c.link; a.textContent = `Case ${c.number} (sent ${c.sent.replace("T", " ").slice(0, 16)} UTC)`;
    $("my-cases-list").appendChild(document.createElement("li")).appendChild(a);
  }
}

function networkInput(bitmap) {
  // Exactly Python's resize and crop (resize.js), drawn into a canvas: what the network sees, shown to the person.
  const p = meta.preprocessing, seen = document.createElement("canvas");
  seen.width = seen.height = p.input_size;
  seen.getContext("2d").putImageData(MPOXSCAN_RESIZE.resizeCrop(bitmap, p.input_size, p.crop_pct ?? 1), 0, 0);
  return seen;
}

async function screen(bitmap, file) {
  current = null;
  const t0 = performance.now(), seen = networkInput(bitmap), t1 = performance.now();
  let result;
  if (session) {
    const out = await session.run({ image: toTensor(seen) });
    const ms = performance.now() - t0, prepMs = t1 - t0, proba = Array.from(out.probabilities.data), k = meta.classes.indexOf(meta.positive_class);
    const best = proba.indexOf(Math.max(...proba)), measures = MPOXSCAN_ANSWER.measuresOf(out);
    const [answer, reason] = MPOXSCAN_ANSWER.decide(meta.answer_rule, proba[k], Math.min(bitmap.width, bitmap.height), measures);
    result = { computed: "device", ms, prepMs, answer, reason, measures, predicted: meta.classes[best],
               probabilities: Object.fromEntries(meta.classes.map((c, i) => [c, proba[i]])),
               screening: { class: meta.positive_class, probability: proba[k], threshold: meta.screening_threshold,
                            positive: answer === "positive" },
               cam: Array.from(out.cam.data) };
  } else {
    const response = await fetch("/api/screen", { method: "POST", body: file });
    result = await response.json();
    if (!response.ok) { $("status").textContent = "The server could not screen this photo: " + result.detail; return; }
  }
  show(result, seen);
  current = { bitmap, result };
}

async function screenSafely(bitmap, file) {
  // Whatever goes wrong (a photo too large for this phone's memory, no network for the server fallback), say so.
  try { await screen(bitmap, file); }
  catch (err) { $("status").textContent = "This photo could not be screened: " + (err && err.message ? err.message : err); }
}

$("photo").addEventListener("change", async () => {
  const file = $("photo").files[0];
  if (!file) return;
  let bitmap;
  try { bitmap = await createImageBitmap(file, { imageOrientation: "from-image" }); }
  catch (err) { $("status").textContent = "This file is not a photo this browser can open."; return; }
  await screenSafely(bitmap, file);
});
$("consent").addEventListener("change", () => { $("send").disabled = !$("consent").checked || !current; });
$("send").addEventListener("click", sendCase);
start();
