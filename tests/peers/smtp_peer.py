#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for otpgate's tests: STARTTLS or implicit TLS with the
given certificate, AUTH LOGIN/PLAIN against --user/--password, and every accepted mail
recorded as one JSON line in --out. Prints its port on the first line of stdout.

Each record also carries the mail as a receiving email-to-SMS gateway reads it: the
subject, the body's Content-Type and charset, and the body decoded by its
Content-Transfer-Encoding and declared charset (US-ASCII when none is declared, as RFC 2045
says, so undeclared non-ASCII text arrives garbled, as it would at a real gateway).
"""
import argparse
import asyncio
import email
import email.policy
import json
import socket
import ssl
import warnings

# aiosmtpd warns about AUTH without STARTTLS for the implicit-TLS rig, and about its own
# deprecations; neither is the test's business.
warnings.filterwarnings("ignore")
import logging

logging.getLogger("mail.log").setLevel(logging.ERROR)

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

parser = argparse.ArgumentParser()
parser.add_argument("--tls", choices=["starttls", "tls", "none"], default="starttls")
parser.add_argument("--cert")
parser.add_argument("--key")
parser.add_argument("--user", required=True)
parser.add_argument("--password", required=True)
parser.add_argument("--out", required=True)
args = parser.parse_args()


def read_mail(content):
    """The subject, content type, charset and decoded text of a mail's single part."""
    mail = email.message_from_bytes(content, policy=email.policy.default)
    return {
        "subject": str(mail["subject"]),
        "content_type": mail.get_content_type(),
        "charset": mail.get_content_charset(),
        # get_content() decodes base64/quoted-printable, then the bytes by the declared
        # charset (ASCII by default), replacing what does not decode.
        "text": mail.get_content(),
    }


class Recorder:
    async def handle_DATA(self, server, session, envelope):
        record = {
            **read_mail(envelope.original_content or envelope.content),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "authenticated": bool(session.authenticated),
            "tls": session.ssl is not None,
        }
        with open(args.out, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        return "250 Message accepted for delivery"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == args.user
        and auth_data.password.decode() == args.password
    )
    return AuthResult(success=ok, handled=False)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


context = None
if args.tls != "none":
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)

options = dict(
    hostname="127.0.0.1",
    port=free_port(),
    authenticator=authenticate,
    auth_required=True,
    # With implicit TLS aiosmtpd does not see the session as TLS; it is, from the first byte.
    auth_require_tls=args.tls == "starttls",
)
if args.tls == "starttls":
    options.update(tls_context=context, require_starttls=True)
elif args.tls == "tls":
    options.update(ssl_context=context)
controller = Controller(Recorder(), **options)
controller.start()
print(options["port"], flush=True)
asyncio.run(asyncio.Event().wait())
