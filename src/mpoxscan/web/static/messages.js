// The phone page's texts for the person, in one table keyed by id, so that a later step can move them into one
// catalogue per language without touching the code that uses them. A value is a string, or a list of strings for a
// list of steps; "{name}" is filled in by MPOXSCAN_TEXT. (Texts of the page's static HTML are not here yet.)
"use strict";
const MPOXSCAN_MESSAGES = {
  // The answer: what to do first, then why (the numbers go under "Details").
  "answer.positive.title": "Show this to a health worker",
  "answer.positive.text": "The screening found signs that could be mpox. Most positive screenings are false alarms: " +
    "this is not a diagnosis, and only a health worker (and a test) can tell.",
  "answer.negative.title": "No sign of mpox found",
  "answer.negative.text": "This is not a diagnosis. If the lesion changes or spreads, or you have a fever, see a " +
    "health worker.",
  "answer.unsure.title": "Retake the photo",
  "answer.unsure.text": "The model cannot tell from this photo: it is {reason}. {advice} You can also send this " +
    "photo to a medical expert below.",
  // Next steps under every answer, for lay readers (written from WHO's and CDC's public advice on mpox).
  "next.title": "What to do next",
  "next.positive": [
    "Get tested soon: go to a health centre, a clinic or a sexual health service, or call your local health " +
      "service, and say that you may have mpox. A swab of a lesion tells for sure.",
    "Until you know: avoid close contact with other people, including sex, hugging and kissing. Keep the lesions " +
      "covered, do not share towels, bedding, clothes or cups, and wash your hands often.",
  ],
  "next.urgent.title": "Get medical care at once if you have:",
  "next.urgent": [
    "lesions in or near the eyes, or eye pain or blurred sight;",
    "lesions in the mouth, throat, genitals or anus that hurt so much you cannot eat, drink, pass urine or open " +
      "your bowels;",
    "a high fever, trouble breathing, chest pain, confusion or fainting;",
    "lesions that spread fast, bleed, or become hot, swollen and full of pus.",
  ],
  "next.urgent.who": "If you are pregnant, have a weakened immune system (for example HIV that is not treated), or " +
    "this is a young child, see a health worker soon in any case.",
  "next.negative": [
    "Watch the lesion for two to three weeks. See a health worker, and say you used this screening, if new spots " +
      "or blisters appear, the spots spread or change, or you get a fever, swollen glands, headache or body aches.",
    "If you had close contact with someone who has mpox, get tested anyway: a screening of one photo cannot rule it " +
      "out.",
  ],
  "next.unsure": [
    "Take the photo again: in daylight, without flash, with the lesion and a little skin around it filling the " +
      "frame, holding the phone still so that the picture is sharp.",
    "If you cannot get a clear photo, send this one to an expert below, or show the lesion to a health worker.",
  ],
  // Privacy before consent: how long the server keeps a case (its --keep-days, from /api/privacy).
  "privacy.kept": "Until an expert answers, then {days} days after the answer; then the photo and the case are " +
    "deleted from the server.",
  "privacy.kept.unknown": "Until an expert answers, then for the number of days this server is set to keep answered " +
    "cases (this phone could not ask the server just now); then the photo and the case are deleted.",
  // The sent cases listed on this phone, each with its status on the server.
  "cases.item": "Case {number}, sent {sent} UTC",
  "cases.status.waiting": "waiting for an expert",
  "cases.status.answered": "answered: open it to read",
  "cases.status.unknown": "status unknown (no connection)",
  "cases.cleared": "The list is cleared: this phone no longer keeps the links of the cases it sent.",
  "cases.clear.confirm": "Forget the cases sent from this phone? They stay with the expert, but without their links " +
    "you cannot read the answers or delete them.",
};

// The text for an id, with "{name}" replaced by vars.name; the id itself when missing (visible, never blank).
function MPOXSCAN_TEXT(id, vars = {}) {
  const text = MPOXSCAN_MESSAGES[id];
  if (text === undefined) return id;
  const fill = (s) => s.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  return Array.isArray(text) ? text.map(fill) : fill(text);
}
