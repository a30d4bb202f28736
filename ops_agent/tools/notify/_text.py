"""Escaping text that came from logs and alerts for each channel's markup.

Slack mrkdwn gives `<...>` meaning (`<!channel>`, `<@U123>`, `<http://x|label>`) and decodes `&amp;`,
so escaping `&`, `<`, `>` is what Slack documents and is enough: no mention, broadcast or disguised link can
be smuggled in. E-mail HTML bodies are HTML-escaped; the text part needs nothing.
"""

from __future__ import annotations

import html

__all__ = ["escape_html", "escape_slack", "render_email_html", "render_slack_text"]

_PRIORITY_MARK = {"critical": "🔴", "high": "🟠", "medium": "🟡", "low": "🔵"}


def escape_slack(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_html(text: str) -> str:
    return html.escape(text, quote=True)


def render_slack_text(subject: str, message: str) -> str:
    subject, message = escape_slack(subject), escape_slack(message)
    if subject and message:
        return f"*{subject}*\n{message}"
    return subject or message


def render_email_html(subject: str, message: str, priority: str) -> str:
    mark = _PRIORITY_MARK.get(priority, "")
    return (
        "<!doctype html><html><body>"
        f"<h3>{mark} {escape_html(subject)}</h3>"
        f'<pre style="white-space:pre-wrap;font-family:monospace">{escape_html(message)}</pre>'
        f"<p style=\"color:#666\">priority: {escape_html(priority)}</p>"
        "</body></html>"
    )
