// The follow-up page's photo field in the person's language: the browser's own file field labels its button and
// "no file chosen" in the browser's language, so it is hidden behind a button whose texts the server rendered from
// the catalogues (data-none, data-chosen). No text is written here.
"use strict";
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
