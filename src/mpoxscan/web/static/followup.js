// The follow-up page: opened without the PIN on the phone that sent the case, and its photo field in the person's
// language. No text is written here.
"use strict";
// A locked case opened on the phone that sent it: that phone keeps the case's device key beside its link (the phone
// page's list, localStorage "mpoxscan-cases"), and posts it instead of the PIN, once (a key refused shows the PIN's
// error, and the page then waits for the PIN). Another browser holding the link has no key: it needs the PIN.
(() => {
  const form = document.getElementById("unlock-form");
  if (!form || document.getElementById("pin-error")) return;
  let mine = [];
  try { mine = JSON.parse(localStorage.getItem("mpoxscan-cases") || "[]"); } catch (err) { return; }
  const here = mine.find((c) => c.key && new URL(c.link, location.href).pathname === location.pathname);
  if (!here) return;
  document.getElementById("device-key").value = here.key;
  form.submit();  // not requestSubmit: the PIN field is required of a person, not of this key
})();
// The photo field: the browser's own file field labels its button and "no file chosen" in the browser's language,
// so it is hidden behind a button whose texts the server rendered from the catalogues (data-none, data-chosen).
(() => {
  const input = document.getElementById("reply-photo");
  const picker = document.querySelector(".picker");
  if (!input || !picker) return;
  const name = document.getElementById("reply-photo-name");
  input.classList.add("hidden-file");
  input.tabIndex = -1;
  input.setAttribute("aria-hidden", "true");
  picker.hidden = false;
  document.getElementById("reply-pick").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    const file = input.files && input.files[0];
    name.textContent = file ? name.dataset.chosen.replace("{name}", file.name) : name.dataset.none;
  });
})();
