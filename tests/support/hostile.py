"""A hostile input that CPython's email package cannot read in reasonable time.

unsubd's own reader (handlers.mail.message, MAX_PARAM_VALUE) now hands the standard parser
only a bounded piece of it, so it classifies in milliseconds: tests/integration/test_pool.py
checks that. The sandbox's limits are tested with tests/pool_fns.poisoned instead.
"""

from __future__ import annotations

# 320,000 empty parameters (a 320 kB message, well under the size limit) took the
# classifier about 9 s of CPU before handlers.mail.message capped what it gives the standard
# parser; the standard parser's cost grows with the square of the count.
EMPTY_PARAMETERS = 320_000
LINE = 900                      # folded below SMTP's 998-octet line limit: a legal message


def pathological_message(empty_parameters: int = EMPTY_PARAMETERS) -> bytes:
    """A message whose Content-Type header costs the parser seconds of CPU.

    The header is `text/plain` with a comment, followed by a long run of `;`: hundreds
    of thousands of empty MIME parameters (the ";;;;" stuffing of CPython issue
    gh-87075 / bpo-42909). unsubd's own MIME reader (handlers.mail.message) reads the
    header without the quadratic cost of `policy.default`'s header parser, and reads
    plain parameters with one regex; but a value with a comment (or RFC 2231 or
    quoted pairs) goes to the standard `Message.get_param`, whose
    `email.message._parseparam` and `_get_params_preserve` slice the rest of the string
    after every `;` and so grow with the square of the count. Such a message is legal,
    so the sandbox (worker/pipeline/pool.py) must stop it, not the parser refuse it.
    """
    stuffing = ";" * empty_parameters
    chunks = [stuffing[i:i + LINE] for i in range(0, len(stuffing), LINE)]
    content_type = "Content-Type: text/plain (plain text)" + "\r\n ".join(chunks)
    head = (
        "From: Mailer-Daemon <mailer-daemon@mx.example.net>\r\n"
        "To: bounces@example.org\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <hostile-1@mx.example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        f"{content_type}\r\n"
    )
    return (head + "\r\n" + "This message could not be delivered.\r\n").encode("ascii")
