"""Send a message file to the local unsubd over SMTP, as a receiving MTA would.

    python examples/send.py examples/bounce.eml [--to bounces@mail.example.org] [--port 2525]
"""

import argparse
import smtplib
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("file", type=Path)
parser.add_argument("--to", default="bounces@mail.example.org")
parser.add_argument("--sender", default="", help="MAIL FROM (default: the null sender of a bounce)")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=2525)
args = parser.parse_args()

with smtplib.SMTP(args.host, args.port, timeout=30) as smtp:
    refused = smtp.sendmail(args.sender, [args.to], args.file.read_bytes())
print("refused:", refused if refused else "none; the message is stored and will be processed")
