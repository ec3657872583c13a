// Service worker: after the first visit the page, ONNX Runtime Web and the model come from the cache, so that
// screening keeps working without a network. The cache name carries a checksum of the page, which names every
// file's version (filled in by the server), so a new model or page replaces the old files. The page shows its notifications
// ("the expert wrote") through this worker's registration; a tap opens the case's page.
"use strict";
const CACHE = "mpoxscan-__VERSION__";
// The page, the model's description and every file the page loads, at their versioned addresses (filled in by the
// server, assets.py): "/" names those same versions, so the set is always whole. Installing fetches them through
// the browser's HTTP cache, where the first visit has just put them (cached for a year as immutable): the first
// visit downloads each file once.
const ASSETS = ["__ASSETS__"];
// The queue of cases composed without a connection (the same file the page uses).
importScripts("__OUTBOX__");

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(ASSETS)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith("mpoxscan-") && k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin || !ASSETS.includes(url.pathname)) return;
  // Cache first: these files only change with a new version, which renames the cache.
  event.respondWith(caches.match(event.request, { ignoreSearch: true })
    .then((hit) => hit || fetch(event.request)));
});

// Background Sync: the browser wakes this worker once the connection is back (the page registered the tag when it
// queued a case), even with the page closed. What waits is sent; the open pages are told, and list the cases; a
// case still waiting makes the browser try again later.
self.addEventListener("sync", (event) => {
  if (event.tag !== MPOXSCAN_OUTBOX.TAG) return;
  event.waitUntil(MPOXSCAN_OUTBOX.flush().then(async (done) => {
    for (const client of await self.clients.matchAll({ type: "window" })) client.postMessage({ type: "outbox" });
    if (!done) throw new Error("cases still wait to be sent");
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = event.notification.data && event.notification.data.url;
  if (!url || new URL(url).origin !== self.location.origin) return;
  event.waitUntil(self.clients.matchAll({ type: "window" }).then((windows) => {
    const open = windows.find((w) => w.url === url);
    return open ? open.focus() : self.clients.openWindow(url);
  }));
});
