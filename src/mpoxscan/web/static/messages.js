// The phone page's texts: one catalogue per language (/static/locales/<code>.json, the same files the server reads for
// the follow-up page, web/i18n.py), the choice of language, and the page drawn in it. Every text the person sees is
// set through MPOXSCAN_SAY (or written in index.html as data-i18n="id"), which remembers its id and values on the
// element, so that switching the language redraws everything on screen, numbers and dates included (Intl).
// A catalogue value is a string, a list of strings (drawn as <li>s), or {"one": ..., "other": ...} chosen by
// Intl.PluralRules for values.count; "{name}" is filled from the values, or by the element's child marked
// data-slot="name" (a <b>, a link) so that each language puts it where its grammar wants.
"use strict";
const MPOXSCAN_LANGUAGES = ["en", "fr", "pt", "es", "sw"];  // English first: the source and the fallback
const MPOXSCAN_LANG_COOKIE = "mpoxscan_lang";  // shared with the server's pages (i18n.COOKIE)
let MPOXSCAN_CATALOGUES = {};
let MPOXSCAN_LANG = "en";
let MPOXSCAN_MESSAGES = {};  // the catalogue in use
// The versioned addresses of the files the scripts load (assets.py fills them into the page); the plain addresses
// where the page was served without them.
const MPOXSCAN_FILES = JSON.parse(document.querySelector('meta[name="mpoxscan-files"]')?.content || "{}");

// The remembered choice, else the first of the browser's languages that has a catalogue ("fr-CA" -> fr), else English.
function mpoxscanChooseLanguage() {
  const saved = document.cookie.split("; ").find((c) => c.startsWith(MPOXSCAN_LANG_COOKIE + "="));
  const code = saved && saved.slice(MPOXSCAN_LANG_COOKIE.length + 1);
  if (MPOXSCAN_LANGUAGES.includes(code)) return code;
  for (const tag of navigator.languages || [navigator.language]) {
    let base;
    try { base = new Intl.Locale(tag).language; } catch (err) { continue; }
    if (MPOXSCAN_LANGUAGES.includes(base)) return base;
  }
  return "en";
}

// Every catalogue at once (a few kB each, kept by the service worker): the switch then works offline too.
async function mpoxscanLoadCatalogues() {
  const loaded = await Promise.all(MPOXSCAN_LANGUAGES.map(async (code) => {
    try {
      const url = (MPOXSCAN_FILES.locales || {})[code] || `/static/locales/${code}.json`;
      return [code, await (await fetch(url)).json()];
    } catch (err) { return [code, null]; }  // that language is then missing from the switch
  }));
  MPOXSCAN_CATALOGUES = Object.fromEntries(loaded.filter(([, c]) => c));
  const chosen = mpoxscanChooseLanguage();
  MPOXSCAN_LANG = MPOXSCAN_CATALOGUES[chosen] ? chosen : "en";
  MPOXSCAN_MESSAGES = MPOXSCAN_CATALOGUES[MPOXSCAN_LANG] || {};
}

// The BCP 47 tag of the language's formats and of the page's lang attribute (_meta.locale: pt-PT), else its code.
function mpoxscanLocale(code = MPOXSCAN_LANG) {
  return ((MPOXSCAN_CATALOGUES[code] || {})._meta || {}).locale || code;
}

// A value for "{name}": numbers, percentages and dates in the language's own format; {id, vars} another text of the
// catalogue (a reason inside a sentence), or `fallback` (a text from elsewhere, such as a model's) where it has none.
function mpoxscanFormat(value) {
  if (typeof value === "number") return new Intl.NumberFormat(mpoxscanLocale()).format(value);
  if (value && typeof value === "object") {
    if ("id" in value) {
      const text = MPOXSCAN_TEXT(value.id, value.vars || {});
      return text === value.id && "fallback" in value ? String(value.fallback) : text;
    }
    if ("percent" in value) {
      const digits = value.digits ?? 1;
      return new Intl.NumberFormat(mpoxscanLocale(), { style: "percent", minimumFractionDigits: digits,
                                                    maximumFractionDigits: digits }).format(value.percent);
    }
    if ("number" in value) {
      return new Intl.NumberFormat(mpoxscanLocale(), { maximumFractionDigits: value.digits ?? 0 }).format(value.number);
    }
    if ("date" in value) {  // the person's own time zone: the browser knows it
      return new Intl.DateTimeFormat(mpoxscanLocale(), { dateStyle: "medium", timeStyle: "short" })
        .format(new Date(value.date));
    }
  }
  return String(value);
}

// The text for an id in the current language (English where missing; the id itself when English lacks it too:
// visible, never blank), with "{name}" filled from vars.
function MPOXSCAN_TEXT(id, vars = {}) {
  let text = MPOXSCAN_MESSAGES[id];
  if (text === undefined) text = (MPOXSCAN_CATALOGUES.en || {})[id];
  if (text === undefined) return id;
  if (text && typeof text === "object" && !Array.isArray(text)) {
    text = text[new Intl.PluralRules(mpoxscanLocale()).select(vars.count ?? 0)] ?? text.other;
  }
  const fill = (s) => s.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? mpoxscanFormat(vars[name]) : m));
  return Array.isArray(text) ? text.map(fill) : fill(text);
}

// Draw one element's text from its data-i18n id and data-i18n-vars (or a lone formatted value, data-i18n-value).
function mpoxscanDraw(el) {
  if (el.dataset.i18nValue) { el.textContent = mpoxscanFormat(JSON.parse(el.dataset.i18nValue)); return; }
  const id = el.dataset.i18n, vars = el.dataset.i18nVars ? JSON.parse(el.dataset.i18nVars) : {};
  if (!id) return;
  const text = MPOXSCAN_TEXT(id, vars);
  if (Array.isArray(text)) {
    el.replaceChildren(...text.map((t) => Object.assign(document.createElement("li"), { textContent: t })));
    return;
  }
  const slots = {};
  for (const child of el.querySelectorAll(":scope > [data-slot]")) slots[child.dataset.slot] = child;
  if (!Object.keys(slots).length) { el.textContent = text; return; }
  // Text with elements inside: split at the placeholders that name a slot, and put each slot element back there.
  const parts = [];
  let last = 0;
  for (const m of text.matchAll(/\{(\w+)\}/g)) {
    if (!(m[1] in slots)) continue;
    parts.push(text.slice(last, m.index), slots[m[1]]);
    last = m.index + m[0].length;
  }
  parts.push(text.slice(last));
  el.replaceChildren(...parts.filter((p) => p !== ""));
}

// Set (or, with id null, clear) an element's text by id: kept on the element, redrawn when the language changes.
function MPOXSCAN_SAY(el, id, vars) {
  if (!id) {
    delete el.dataset.i18n; delete el.dataset.i18nVars; el.textContent = "";
    return;
  }
  el.dataset.i18n = id;
  if (vars && Object.keys(vars).length) el.dataset.i18nVars = JSON.stringify(vars); else delete el.dataset.i18nVars;
  mpoxscanDraw(el);
}

// A number, percentage or date alone (a table cell), formatted for the language and redrawn with it.
function MPOXSCAN_SAY_VALUE(el, value) {
  delete el.dataset.i18n; delete el.dataset.i18nVars;
  el.dataset.i18nValue = JSON.stringify(value);
  mpoxscanDraw(el);
}

// The whole page in the current language: texts, labels, the document's language and title.
function mpoxscanApply(root = document) {
  document.documentElement.lang = mpoxscanLocale();
  for (const el of root.querySelectorAll("[data-i18n], [data-i18n-value]")) mpoxscanDraw(el);
  for (const el of root.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", MPOXSCAN_TEXT(el.dataset.i18nLabel));
  }
}

// The switch: each language named in itself, with its review status until a speaker has reviewed it (i18n.menu_name);
// the choice is remembered for this page and the follow-up page.
function mpoxscanSwitcher(select, onChange) {
  const label = (meta) => (meta.reviewed === false ? `${meta.name} (${meta.unreviewed})` : meta.name);
  select.replaceChildren(...Object.keys(MPOXSCAN_CATALOGUES).map((code) => Object.assign(
    document.createElement("option"), { value: code, lang: mpoxscanLocale(code),
                                        textContent: label(MPOXSCAN_CATALOGUES[code]._meta) })));
  select.value = MPOXSCAN_LANG;
  select.addEventListener("change", () => {
    MPOXSCAN_LANG = select.value;
    MPOXSCAN_MESSAGES = MPOXSCAN_CATALOGUES[MPOXSCAN_LANG];
    document.cookie = `${MPOXSCAN_LANG_COOKIE}=${MPOXSCAN_LANG}; path=/; max-age=31536000; samesite=lax`;
    mpoxscanApply();
    if (onChange) onChange();
  });
}
