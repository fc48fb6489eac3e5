"""Personal data stays out of the logs (README, Privacy promises): `unsubd serve` at
DEBUG, the most it ever says, handles a bounce, an emailed opt-out, API reads, an erasure
and bad requests whose paths hold an address, and not one of those addresses appears in
its log in any common encoding (handlers.events.rights.encodings: as written, upper case,
URL-encoded, quoted-printable, base64)."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from handlers.events.rights import encodings
from tests.conftest import EXAMPLE_TOML, REPO
from tests.support.messages import dsn

BOUNCED = "per.logtest@kommun-vast.example"
REPLIER = "anna.logtest@example.se"
LOOKED_UP = "nobody.logtest@example.no"
BOUNCES, REPLY = "bounces@mail.example.org", "reply@mail.example.org"


def _http(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_serve_at_debug_logs_no_address(tmp_path: Path):
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "UNSUBD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'unsubd.db'}",
           "UNSUBD_SMTP_PORT": "0", "UNSUBD_HTTP_PORT": "0", "UNSUBD_CONFIG": str(EXAMPLE_TOML),
           "UNSUBD_LOG_LEVEL": "DEBUG"}
    with log_path.open("w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli.main", "serve"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=log_file, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        ports = re.search(r"smtp \('[^']+', (\d+)\), http \('[^']+', (\d+)\)", line)
        assert ports, f"serve did not start: {line!r}\n{log_path.read_text()[-2000:]}"
        smtp_port, http_port = int(ports.group(1)), int(ports.group(2))
        reply = (f"From: Anna <{REPLIER}>\r\nTo: {REPLY}\r\nSubject: Re: Alumninytt\r\n"
                 "Message-ID: <logtest-1@example.se>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0100\r\n\r\n"
                 "Avregistrera mig fr\u00e5n alla utskick, tack.\r\n").encode()
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.sendmail("", [BOUNCES], dsn(BOUNCED))
            client.sendmail(REPLIER, [REPLY], reply)
            try:                                   # a relay attempt: refused, and logged with a hash
                client.sendmail("", [BOUNCED], b"Subject: not for us\r\n\r\nrelay attempt\r\n")
            except smtplib.SMTPRecipientsRefused:
                pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, body = _http(http_port, "GET", f"/v1/contacts/{BOUNCED}")
            if status == 200 and "suppress" in body:
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"the bounce was not applied in time: {status} {body[:300]}")
        assert _http(http_port, "GET", f"/v1/contacts/{LOOKED_UP}/export")[0] == 404
        assert _http(http_port, "GET", f"/v1/contacts/{REPLIER}")[0] in (200, 404)
        assert _http(http_port, "POST", f"/v1/contacts/{BOUNCED}/erase", {"reason": "asked by phone"})[0] == 200
        assert _http(http_port, "POST", f"/v1/contacts/{REPLIER}/erase", {})[0] in (400, 404, 422)
        assert _http(http_port, "GET", f"/v1/contacts/{LOOKED_UP.upper()}/nonsense")[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    assert len(text.splitlines()) >= 3, "serve logged (almost) nothing: the check below would prove nothing"
    for address in (BOUNCED, REPLIER, LOOKED_UP):
        for form in encodings(address)[:-1]:
            assert form.lower() not in text.lower(), f"{form!r} is in the log"
        assert encodings(address)[-1] not in text, f"{address} in base64 is in the log"
