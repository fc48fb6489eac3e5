"""Test messages written for these tests (not copied from any corpus)."""

from __future__ import annotations

import uuid


def dsn(recipient: str, status: str = "5.1.1", action: str = "failed", diagnostic: str | None = None,
        to: str = "bounces@mail.example.org", crlf: bool = True) -> bytes:
    """A minimal RFC 3464 report for one recipient, as a receiving MTA would send it."""
    boundary = f"b-{uuid.uuid4().hex[:10]}"
    diag = diagnostic or f"smtp; 550 {status} mailbox does not exist"
    mid = f"<{uuid.uuid4().hex}@out1.mail.example.org>"
    text = f"""From: Mail Delivery System <MAILER-DAEMON@mx.kommun-vast.example>
To: {to}
Subject: Undelivered Mail Returned to Sender
Date: Mon, 02 Mar 2026 10:00:00 +0100
Message-ID: <{uuid.uuid4().hex}@mx.kommun-vast.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset=us-ascii

Your message could not be delivered to one or more recipients.

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.kommun-vast.example
Arrival-Date: Mon, 02 Mar 2026 09:59:58 +0100

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mailstore.kommun-vast.example
Diagnostic-Code: {diag}

--{boundary}
Content-Type: text/rfc822-headers

From: Nordvik University Alumni <alumni@mail.example.org>
To: {recipient}
Subject: Alumni News, March
Message-ID: {mid}
List-Id: Alumni <alumni.mail.example.org>

--{boundary}--
"""
    return text.replace("\n", "\r\n" if crlf else "\n").encode("ascii")


def plain(subject: str = "Hello", body: str = "Just saying hello.", sender: str = "someone@example.se") -> bytes:
    return (f"From: {sender}\r\nTo: reply@mail.example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@example.se>\r\nDate: Mon, 02 Mar 2026 10:00:00 +0100\r\n\r\n"
            f"{body}\r\n").encode("utf-8")
