"""Alerts hand their messages to the NotificationService: its durable outbox, retries, limits and fallback.

Routing speaks of kinds of channel (email, slack, webhook); here each becomes the configured channels:
`email` the e-mail channel when there are recipients, `webhook` every named webhook (`webhook:<name>`).
"""

from __future__ import annotations

from collections.abc import Sequence

from ops_agent.tools.notify import NotificationService

__all__ = ["NotificationNotifier"]


class NotificationNotifier:
    def __init__(self, service: NotificationService) -> None:
        self.service = service

    def targets(self) -> dict[str, list[str]]:
        """Route name -> the configured channels it reaches (only names that reach something)."""
        channels = self.service.channels
        email = ["email"] if ({"mailtrap", "smtp"} & set(channels)) and self.service.settings.email_recipients else []
        named_hooks = sorted(name for name in channels if name.startswith("webhook:"))
        routes = {"email": email, "slack": ["slack"] if "slack" in channels else [], "webhook": named_hooks}
        routes.update({name: [name] for name in named_hooks})
        return {name: targets for name, targets in routes.items() if targets}

    @property
    def available(self) -> list[str]:
        return list(self.targets())

    async def notify(self, channels: Sequence[str], *, subject: str, message: str, priority: str, key: str) -> None:
        targets = self.targets()
        names = list(dict.fromkeys(name for route in channels for name in targets.get(route, ())))
        if names:
            # The key makes a re-sent alert (after a restart mid-cycle) one notification, not two.
            await self.service.send_notification(
                channels=names, subject=subject, message=message, priority=priority, notification_id=f"alert_{key}",
                event_type="alert", wait=False,
            )
