#!/usr/bin/env python3
"""The SMS challenge-response flow with pyrad, an independent RADIUS client.

Sends the PIN, reads the OTP from the newest file in the spool folder, answers with State and
OTP, and prints one JSON object: the codes and Reply-Messages of both replies, and whether
pyrad verified each reply's Message-Authenticator. With --message-authenticator the requests
carry one too; without it they carry none.
"""
import argparse
import json
import os
import time

from pyrad import packet
from pyrad.client import Client
from pyrad.dictionary import Dictionary

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--secret", required=True)
parser.add_argument("--user", required=True)
parser.add_argument("--pin", required=True)
parser.add_argument("--spool", required=True)
parser.add_argument("--message-authenticator", action="store_true")
args = parser.parse_args()

here = os.path.dirname(os.path.abspath(__file__))
client = Client(
    server="127.0.0.1",
    authport=args.port,
    secret=args.secret.encode(),
    dict=Dictionary(os.path.join(here, "pyrad.dictionary")),
    retries=1,
    timeout=5,
    enforce_ma=True,
)


def send(password, state=None):
    request = client.CreateAuthPacket(code=packet.AccessRequest, User_Name=args.user)
    request["User-Password"] = request.PwCrypt(password)
    if state is not None:
        request["State"] = state
    if args.message_authenticator:
        request.add_message_authenticator()
    reply = client.SendPacket(request)
    ma_ok = reply.verify_message_authenticator(
        original_authenticator=request.authenticator, original_code=request.code
    )
    messages = reply.get("Reply-Message", [])
    return reply, {"code": reply.code, "reply_message": "".join(messages), "reply_messages": len(messages), "ma_ok": ma_ok}


def newest_sms(before):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        files = sorted(
            (os.path.join(args.spool, f) for f in os.listdir(args.spool) if not f.startswith(".")),
            key=os.path.getmtime,
        ) if os.path.isdir(args.spool) else []
        if len(files) > before:
            return open(files[-1], encoding="utf-8").read().split("\n\n", 1)[1]
        time.sleep(0.02)
    raise SystemExit("no SMS in the spool")


before = len(os.listdir(args.spool)) if os.path.isdir(args.spool) else 0
challenge, first = send(args.pin)
otp = newest_sms(before).rsplit(" ", 1)[-1]
_, second = send(otp, state=challenge["State"][0])
print(json.dumps({"challenge": first, "answer": second}), flush=True)
