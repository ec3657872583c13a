"""What the JSON API takes and answers, as pydantic models: FastAPI validates requests against them and documents
them in the OpenAPI schema (/api/openapi.json). Requests are multipart forms (the photo as a file, not base64)."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import UploadFile
from pydantic_core import PydanticCustomError
from pydantic import BaseModel, ConfigDict, Field, Json, StrictFloat, StrictStr, field_validator, model_validator

from mpoxscan.web import i18n
from mpoxscan.web.cases import MAX_PHOTOS, QUESTIONS
from mpoxscan.web.security import IDEMPOTENCY_PATTERN, PIN_PATTERN

Answer = Literal["positive", "negative", "cannot tell"]


class PhotoForm(BaseModel):
    """A photo for the server to screen (nothing is stored): one file field, ``photo``."""

    model_config = ConfigDict(extra="forbid")  # a field the route does not read is a client's mistake: say so
    photo: UploadFile = Field(description="the photo, in any format a phone saves (JPEG, HEIC, PNG, WebP, ...)")


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json.loads' object hook: a key given twice is refused (JSON parsers silently keep the last one, so the same
    text could mean two things)."""
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {json.dumps(key)[:80]}")
        seen[key] = value
    return seen


class CaseForm(PhotoForm):
    """A case for the experts, sent by the page once the person agreed: the photo (re-encoded on the phone without
    metadata) and the answer the phone showed, up to two more photos with theirs, and the optional questions. Strict: consent is exactly the text ``true`` (not "yes", "1" or
    "True"), the probabilities are JSON numbers (not numeric strings or booleans), no field is coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)
    consent: Literal["true"] = Field(description='the person agreed to send the photo to an expert: exactly "true"')
    # The second consent: separate, optional, absent unless the person ticked it.
    training_consent: Literal["true", "false"] | None = Field(
        None, description='the person also allows these photos, without their name, to be used to improve the '
                          'screening: "true"; absent or "false": not allowed (withdrawable on the follow-up page)')
    computed: Literal["device", "server"] = Field(description="where the phone's answer was computed")
    probabilities: Json[dict[StrictStr, StrictFloat]] = Field(
        description='the answer the phone showed, as a JSON object {class: probability} naming each of the model\'s '
                    'classes, e.g. {"Monkeypox": 0.8, "Healthy": 0.2}')
    model_sha256: str = Field(pattern="^[0-9a-f]{64}$", description="the sha256 of the model file the phone used")
    language: Literal[i18n.LANGUAGES] | None = Field(
        None, description="the page's language, in which the person reads the expert's answer; absent: the "
                          "language cookie or Accept-Language decides")
    # Photos 2 and 3 (optional: a wider view, another lesion), each with the answer the phone showed for it. The
    # fields are numbered because a repeated field is refused (deps.no_repeated_fields); ``photo`` stays photo 1,
    # so a client that sends one photo is unchanged.
    photo_2: UploadFile | None = Field(None, description="a second photo of the case (optional)")
    computed_2: Literal["device", "server"] | None = Field(None, description="where photo 2's answer was computed")
    probabilities_2: Json[dict[StrictStr, StrictFloat]] | None = Field(
        None, description="the answer the phone showed for photo 2, as for probabilities")
    photo_3: UploadFile | None = Field(None, description="a third photo (optional; only with photo_2)")
    computed_3: Literal["device", "server"] | None = Field(None, description="where photo 3's answer was computed")
    probabilities_3: Json[dict[StrictStr, StrictFloat]] | None = Field(
        None, description="the answer the phone showed for photo 3, as for probabilities")
    # The optional questions: each a code of the fixed vocabulary, or absent (not answered).
    symptom_duration: Literal[QUESTIONS["symptom_duration"]] | None = Field(
        None, description="how long the lesions have been there")
    body_site: Literal[QUESTIONS["body_site"]] | None = Field(None, description="where on the body")
    fever: Literal[QUESTIONS["fever"]] | None = Field(None, description="fever")
    swollen_glands: Literal[QUESTIONS["swollen_glands"]] | None = Field(None, description="swollen glands")
    mpox_contact: Literal[QUESTIONS["mpox_contact"]] | None = Field(
        None, description="close contact with someone who has or may have mpox")
    age_band: Literal[QUESTIONS["age_band"]] | None = Field(None, description="the person's age band")
    pin: str | None = Field(None, pattern=PIN_PATTERN, description="an optional PIN of 4 to 6 digits that locks the "
                                                                   "follow-up page (only its hash is stored)")
    idempotency_key: str | None = Field(
        None, pattern=IDEMPOTENCY_PATTERN,
        description="a random key of this send (43 characters of base64url: 256 bits), kept by the client until it "
                    "has the answer: sent again with the same key (a lost answer, a queue that sends twice), the "
                    "answer is the case the first send made (status 200, the same follow-up link and device key), "
                    "and nothing new is stored")

    @model_validator(mode="before")
    @classmethod
    def _at_most_three_photos(cls, data: object) -> object:
        if isinstance(data, dict):
            extra = sorted(k for k in data if isinstance(k, str) and k.startswith("photo_")
                           and k not in ("photo_2", "photo_3"))
            if extra:
                raise PydanticCustomError("too_many_photos", "at most {most} photos per case (photo, photo_2, "
                                          "photo_3): {field} is one too many", {"most": MAX_PHOTOS, "field": extra[0][:40]})
        return data

    @model_validator(mode="after")
    def _each_photo_with_its_answer(self) -> CaseForm:
        for k in range(2, MAX_PHOTOS + 1):
            given = {f"{name}_{k}": getattr(self, f"{name}_{k}") is not None
                     for name in ("photo", "computed", "probabilities")}
            if any(given.values()) and not all(given.values()):
                missing = next(name for name, present in given.items() if not present)
                raise PydanticCustomError("photo_fields", "{missing}: required with the other fields of photo {k}",
                                          {"missing": missing, "k": k})
        if self.photo_3 is not None and self.photo_2 is None:
            raise PydanticCustomError("photo_order", "photo_3 given without photo_2")
        return self

    def extra_photos(self) -> list[tuple[int, UploadFile, str, dict[str, float]]]:
        """Photos 2 and 3, where given: (position, file, computed, probabilities)."""
        return [(k, getattr(self, f"photo_{k}"), getattr(self, f"computed_{k}"), getattr(self, f"probabilities_{k}"))
                for k in range(2, MAX_PHOTOS + 1) if getattr(self, f"photo_{k}") is not None]

    def allows_training(self) -> bool:
        return self.training_consent == "true"

    def answers(self) -> dict[str, str | None]:
        return {field: getattr(self, field) for field in QUESTIONS}

    @field_validator("probabilities", "probabilities_2", "probabilities_3", mode="before")
    @classmethod
    def _no_duplicate_keys(cls, value: object) -> object:
        if isinstance(value, (str, bytes)):
            try:
                json.loads(value, object_pairs_hook=_refuse_duplicate_keys)
            except ValueError as exc:
                if "duplicate key" in str(exc):  # our own refusal; bad JSON is reported by the Json type itself
                    raise
        return value


class Screening(BaseModel):
    class_: str = Field(alias="class", description="the class screened for (mpox)")
    probability: float
    threshold: float = Field(description="the screening threshold: positive at or above it")
    positive: bool | None = Field(description="screened positive: true or false, and null for a photo the model cannot "
                                           "judge (false would read as negative)")


class ScreenAnswer(BaseModel):
    """The server's answer for a photo, by the same rule as the page's."""

    answer: Answer
    reason: str | None = Field(description="why the model cannot tell (too small, too dark, blurred, ...), else null")
    predicted: str = Field(description="the most probable class")
    probabilities: dict[str, float]
    screening: Screening
    measures: dict[str, float | None] = Field(description="brightness, sharpness, skin share, distance from the "
                                                          "training photos (null where not a number)")
    cam: list[list[float]] | None = Field(description="where the model looked: a coarse map (7 x 7), or null")
    disclaimer: str
    computed: Literal["server"]
    picture: str | None = Field(None, description="with ?picture=1 only: the square the network saw, as a JPEG data "
                                                  "URL (for a page that cannot decode the photo itself)")


class ThreadMessage(BaseModel):
    """One turn of the conversation about a case, as the person reads it (their own reply photo is never sent back:
    only that one was sent)."""

    author: Literal["expert", "person"]
    kind: Literal["question", "photo-request", "reply", "conclusion"]
    canned_text: str | None = Field(description="the expert's canned request, or the conclusion's verdict, in the "
                                                "case's language")
    text: str | None = Field(description="the free text written by the expert or the person")
    photo_sent: bool = Field(description="the person's reply carried a photo")
    sent_at: str = Field(description="when (UTC, ISO 8601)")
    new: bool = Field(description="an expert's message the person has not seen on the follow-up page yet")
    language: str | None = Field(None, description="the language the expert wrote ``text`` in (a catalogue code; "
                                                   "en unless the expert chose another); null for the person's own")


class CaseStatus(BaseModel):
    """What the person may see of their case (never the photo: a leaked link shows no picture)."""

    number: str = Field(description="the case number, e.g. K7QF-2M9D")
    status: Literal["waiting", "asked", "replied", "answered"] = Field(
        description="waiting for an expert; asked: the expert asked the person something (reply on the follow-up "
                    "page); replied: back with the expert; answered")
    sent_at: str = Field(description="when the case arrived (UTC, ISO 8601)")
    verdict: str | None = Field(description="the expert's verdict code, once answered")
    language: str = Field(description="the case's language (the person's)")
    verdict_text: str | None = Field(description="the verdict, as the person reads it (in the case's language)")
    message: str | None = Field(description="the expert's message, if any")
    answered_at: str | None
    disclaimer: str
    messages: list[ThreadMessage] = Field(default_factory=list, description="the conversation, oldest first")
    unseen: int = Field(0, description="the expert's messages not yet seen on the follow-up page ('new answer')")
    locked: bool = Field(False, description="the follow-up page asks for the PIN chosen at sending")
    training_consent: bool = Field(False, description="the photos may be used, without the person's name, to improve "
                                                      "the screening (until withdrawn on the follow-up page)")


class CaseSent(CaseStatus):
    """The answer to a case sent: its status, and the follow-up link (its secret is shown this once)."""

    follow_up: str = Field(description="the path of the follow-up page, /c/<secret token>")
    model_matches: bool = Field(description="the phone used the model this server serves")
    photos: int = Field(1, description="how many photos the case holds (1 to 3)")
    device_key: str | None = Field(None, description=(
        "a case locked by a PIN: the sending phone's key to it, shown this once (keep it beside the link). POST it "
        "as the form field device_key to /c/<token>/unlock to open the case without the PIN, whatever wrong PINs "
        "others tried (the answer: a redirect with the same unlock cookie the PIN gives); or send it as the header "
        "X-Device-Key with GET /api/cases/<token>"))
    replayed: bool = Field(False, description="this send's idempotency key had already made this case: nothing new "
                                              "was stored")


class Privacy(BaseModel):
    """What the page tells the person before they consent: how long this server keeps a case."""

    answered_cases_kept_days: int = Field(description="answered cases are deleted this many days after the answer")
    waiting_cases_kept: str
    stored_photo_max_side: int = Field(description="the stored photo's long side at most, in pixels")


class ModelInfo(BaseModel):
    """What the page needs to preprocess and answer, read from the served model file."""

    classes: list[str]
    positive_class: str
    screening_threshold: float
    answer_rule: dict[str, Any] = Field(description="the thresholds of the answer rule (the server applies the same)")
    advice: dict[str, str] = Field(description="how to retake a photo, by the reason the model cannot tell")
    preprocessing: dict[str, Any]
    architecture: str
    precision: str
    disclaimer: str
    on_device_runtime: bool = Field(description="onnxruntime-web is served, so the page can screen on the device")
    sha256: str = Field(description="the sha256 of /model.onnx")
