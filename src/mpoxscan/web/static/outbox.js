// Cases that wait on the phone to be sent: composed while the network was away (or the server unreachable), kept in
// IndexedDB with the person's consent as given then, and sent when the connection returns, by the service worker
// (Background Sync, where the browser has it: sw.js) or by the page on its next visit. Shared by both (the service
// worker imports this file). Never sent twice: each case carries a random idempotency key, and the server answers a
// key it has seen with the case it made (cases.submit_case); an entry leaves the queue only once the page has put
// the answer in the phone's list of sent cases.
"use strict";
const MPOXSCAN_OUTBOX = (() => {
  const DB = "mpoxscan", STORE = "outbox", TAG = "mpoxscan-outbox";
  // The server's answers that mean "try again later" (busy, unavailable); any other refusal is final.
  const RETRY = new Set([408, 429, 500, 502, 503, 504]);

  function open() {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(DB, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "key" });
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  async function run(mode, work) {
    const db = await open();
    try {
      return await new Promise((resolve, reject) => {
        const tx = db.transaction(STORE, mode), store = tx.objectStore(STORE);
        const request = work(store);
        tx.oncomplete = () => resolve(request && request.result);
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error);
      });
    } finally { db.close(); }
  }

  // 256 random bits, base64url: the server's pattern (security.IDEMPOTENCY_PATTERN).
  function newKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(32));
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // An entry: {key, created, fields: [[name, text]], files: [[name, Blob]], photos, state: "waiting" | "sent" |
  // "refused", result (the server's answer), reason}.
  const put = (entry) => run("readwrite", (store) => store.put(entry));
  const remove = (key) => run("readwrite", (store) => store.delete(key));
  const all = async () => ((await run("readonly", (store) => store.getAll())) || [])
    .sort((a, b) => a.created.localeCompare(b.created));

  // The case as the server takes it (CaseForm), with its idempotency key.
  function form(entry) {
    const body = new FormData();
    for (const [name, value] of entry.fields) body.append(name, value);
    for (const [name, blob] of entry.files) body.append(name, blob, "photo");
    body.append("idempotency_key", entry.key);
    return body;
  }

  // Send one waiting entry: "sent" (its answer kept in the entry until the page lists the case), "refused" (a final
  // refusal, kept with its reason until the person removes it), or "waiting" (no connection, or a refusal worth
  // another try). The entry is re-read first: the page and the service worker may both be sending.
  async function sendOne(key) {
    const entry = (await run("readonly", (store) => store.get(key)));
    if (!entry || entry.state !== "waiting") return entry ? entry.state : "gone";
    let response, answer;
    try {
      response = await fetch("/api/cases", { method: "POST", body: form(entry), credentials: "same-origin" });
      answer = await response.json().catch(() => ({}));
    } catch (err) { return "waiting"; }
    if (!(await run("readonly", (store) => store.get(key)))) return "gone";  // removed by the person meanwhile
    if (response.ok) { await put({ ...entry, state: "sent", result: answer, files: [] }); return "sent"; }
    if (RETRY.has(response.status)) return "waiting";
    await put({ ...entry, state: "refused", status: response.status, reason: answer.detail || null, files: [] });
    return "refused";
  }

  // Every waiting entry, one after another (oldest first). true when none is left waiting.
  async function flush() {
    let left = 0;
    for (const entry of await all()) {
      if (entry.state === "waiting" && (await sendOne(entry.key)) === "waiting") left++;
    }
    return left === 0;
  }

  return { TAG, newKey, form, put, remove, all, sendOne, flush };
})();
