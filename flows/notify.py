"""Sends a short message about a run's outcome to the notification URL in IMGPIPE_NOTIFY_URL (Apprise syntax)."""

from __future__ import annotations

import logging
import os

import apprise

logger = logging.getLogger(__name__)

NOTIFY_URL_VARIABLE = "IMGPIPE_NOTIFY_URL"


def send(title: str, body: str) -> bool:
    """Notify every URL in IMGPIPE_NOTIFY_URL (space-separated, e.g. slack://..., mailto://..., json://host/path).

    Nothing is sent, and nothing fails, when the variable is unset; a delivery error is logged, never raised,
    because a notification must not turn a good run into a failed one.
    """
    urls = os.environ.get(NOTIFY_URL_VARIABLE, "").split()
    if not urls:
        return False
    notifier = apprise.Apprise()
    for url in urls:
        if not notifier.add(url):
            logger.warning("%s: %r is not a notification URL Apprise understands; skipped", NOTIFY_URL_VARIABLE, url)
    delivered = bool(len(notifier)) and notifier.notify(title=title, body=body)
    if not delivered:
        logger.warning("the notification %r could not be delivered", title)
    return bool(delivered)
