"""A local SMTP server that keeps every message as an .eml file: the demo's mail server.

aiosmtpd is a real SMTP server: the bundle's alert goes out through Airflow's SMTP connection
exactly as it would to a company relay, and lands on disk where a newcomer can open it.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class EmlFolder:
    """aiosmtpd handler writing each received message to `<folder>/<UTC time>-<subject>.eml`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        """Keep the message exactly as received."""
        content: bytes = envelope.original_content or envelope.content
        subject = email.message_from_bytes(content, policy=email.policy.default).get("Subject", "message")
        slug = re.sub(r"[^A-Za-z0-9]+", "-", str(subject)).strip("-")[:60] or "message"
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
        (self.folder / f"{stamp}-{slug}.eml").write_bytes(content)
        return "250 OK: kept"


def _free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_sink(folder: Path) -> Iterator[str]:
    """Run the sink on a free loopback port; yields the Airflow connection URI-JSON for it."""
    from aiosmtpd.controller import Controller

    port = _free_port()
    controller = Controller(EmlFolder(folder), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        # Plain SMTP on loopback: the sink has no certificate, and nothing leaves the machine.
        extra = {"disable_tls": True, "disable_ssl": True, "timeout": 10}
        yield json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra})
    finally:
        controller.stop()
