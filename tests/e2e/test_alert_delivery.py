"""One alert per window, even across a crash (issue 14, point 2).

The alert runs in a subprocess that is SIGKILLed between the send and the record of "sent"
(monitoring.FAULT_HOOK); the retry runs here. A real SMTP server on loopback (aiosmtpd) counts
the messages and their Message-IDs; the real SQLite registry holds the window's state.
"""

from __future__ import annotations

import email
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.monitoring_data import customers, drifted, score_churn

# The alert of one window, killed the moment the mail server has accepted the message.
KILL_AFTER_MAIL = """
import os, signal, sys
from tabular_mlops import monitoring
from tabular_mlops.config import get_model_config

monitoring.FAULT_HOOK = lambda at: os.kill(os.getpid(), signal.SIGKILL) if at == "mailed" else None
monitoring.monitor(get_model_config("churn"), sys.argv[1])
"""


def _message_ids(inbox) -> list[str]:
    return [email.message_from_bytes(envelope.content)["Message-ID"] for envelope in inbox.messages]


def _state(day: str) -> dict:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import _window_states

    return _window_states(get_model_config("churn"))[day]


def test_a_crash_between_send_and_record_resends_the_same_message_id(
    lake: Path, telco_raw: Path, smtp_server, fresh_windows
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import message_id, monitor

    config, day = get_model_config("churn"), "2026-12-01"
    location = score_churn(day, drifted(customers(telco_raw)))
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_MAIL, location], capture_output=True, text=True, timeout=600
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # The mail went out, the crash came before "sent": the tag holds the intent and its identity.
    assert _message_ids(smtp_server) == [message_id(config, day)]
    assert _state(day)["alert_state"] == "sending"
    assert _state(day)["message_id"] == message_id(config, day)

    retried = monitor(config, location)  # what Airflow's retry of the task does
    assert retried["alert_sent"] is True and retried["alert_reason"] == "sent"
    assert len(smtp_server.messages) == 2, "the unconfirmed alert is sent again (at least once)"
    assert set(_message_ids(smtp_server)) == {message_id(config, day)}, "one identity for the window"
    # From the config's alerts.sender, header and envelope, not the connection's from_email.
    senders = {email.message_from_bytes(e.content)["From"] for e in smtp_server.messages}
    assert senders == {e.mail_from for e in smtp_server.messages} == {config.alerts.sender}
    assert config.alerts.sender != json.loads(os.environ["AIRFLOW_CONN_SMTP_DEFAULT"])["extra"]["from_email"]
    assert _state(day)["alert_state"] == "sent"

    again = monitor(config, location)  # a re-run after "sent" sends nothing
    assert again["alert_sent"] is False and "already sent" in again["alert_reason"]
    assert len(smtp_server.messages) == 2


def test_each_window_has_its_own_message_id() -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import message_id

    churn, credit = get_model_config("churn"), get_model_config("credit_risk")
    assert message_id(churn, "2026-12-01") == message_id(churn, "2026-12-01")
    ids = {message_id(churn, "2026-12-01"), message_id(churn, "2026-12-02"), message_id(credit, "2026-12-01")}
    assert len(ids) == 3
    assert all(i.startswith("<") and i.endswith("@tabular-mlops>") for i in ids)
