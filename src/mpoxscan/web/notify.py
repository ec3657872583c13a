"""Tell the experts that a case is waiting: a JSON POST to a webhook (Slack, Mattermost, ntfy, a hospital system).

The message carries the case number, the server's screening answer and the dashboard link: never the photo, the
follow-up link or anything about the person. It is sent after the case is stored, outside the person's request,
and a failure only costs the notification (the case waits in the queue either way).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from mpoxscan.deploy.answer import screened_positive

log = logging.getLogger("mpoxscan.notify")


def case_message(number: str, probability: float, answer: str, reason: str | None, dashboard: str,
                 photos: int = 1) -> dict:
    said = {"positive": "screened positive", "negative": "screened negative"}.get(answer, f"model cannot tell: {reason}")
    count = f", {photos} photos" if photos > 1 else ""
    text = f"New mpoxscan case {number}: mpox probability {probability:.0%} ({said}{count}). Review it: {dashboard}"
    # "text" is what Slack- and Mattermost-style incoming webhooks show; the other fields are for programs.
    return {"event": "case.waiting", "case": number, "mpox_probability": round(probability, 4),
            "screened_positive": screened_positive(answer), "answer": answer, "reason": reason, "photos": photos,
            "dashboard": dashboard, "text": text}


def reply_message(number: str, dashboard: str) -> dict:
    """The person answered an expert's question: the case is back in the queue (never their words or photo here)."""
    return {"event": "case.replied", "case": number, "dashboard": dashboard,
            "text": f"The person replied on mpoxscan case {number}. Review it: {dashboard}"}


def post(url: str, message: dict, timeout: float = 10.0) -> bool:
    """POST the message as JSON; True on a 2xx answer. Logs a failure without the URL (webhook URLs hold secrets)
    or the case."""
    request = urllib.request.Request(url, data=json.dumps(message).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "mpoxscan"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (the operator's own URL)
            return 200 <= response.status < 300
    except urllib.error.HTTPError as exc:
        log.warning("expert notification refused by the webhook (HTTP %s)", exc.code)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        log.warning("expert notification not delivered (%s)", type(getattr(exc, "reason", exc)).__name__)
    return False
