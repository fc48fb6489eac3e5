"""Hostile inputs for the classifier sandbox: real messages that CPython's email package
cannot parse in reasonable time.
"""

from __future__ import annotations

# 25,000 empty parameters take CPython 3.11.7's parser about 15 s of CPU; twice as many
# would take about four times as long.
EMPTY_PARAMETERS = 25_000
LINE = 900                      # folded below SMTP's 998-octet line limit: a legal message


def pathological_message(empty_parameters: int = EMPTY_PARAMETERS) -> bytes:
    """A 25 kB message whose Content-Type header takes the stdlib parser many seconds.

    The header is `text/plain` followed by a long run of `;`: thousands of empty MIME
    parameters (the ";;;;" stuffing of CPython issue gh-87075 / bpo-42909, and one of
    the quadratic cases listed in gh-136063). `BytesParser(policy=policy.default)`
    parses Content-Type while it builds the message, before any caller reads a header,
    so every classifier pays. Two quadratic costs add up in
    `email._header_value_parser`: each empty parameter records an InvalidHeaderDefect,
    and `TokenList.all_defects` gathers them with `sum()` over lists, which copies the
    growing list once per parameter; and the parser slices the unparsed remainder off
    the string after each token. Reading the header again (`get_content_type()`,
    `get_content()`) parses it again.
    """
    stuffing = ";" * empty_parameters
    chunks = [stuffing[i:i + LINE] for i in range(0, len(stuffing), LINE)]
    content_type = "Content-Type: text/plain" + "\r\n ".join(chunks)
    head = (
        "From: Mailer-Daemon <mailer-daemon@mx.example.net>\r\n"
        "To: bounces@example.org\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <hostile-1@mx.example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        f"{content_type}\r\n"
    )
    return (head + "\r\n" + "This message could not be delivered.\r\n").encode("ascii")
