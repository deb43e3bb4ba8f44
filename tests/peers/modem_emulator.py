#!/usr/bin/env python3
"""A GSM modem on a pseudo-terminal for otpgate's tests.

Speaks the AT dialogue (echo, AT+CMEE, SIM PIN, AT+CREG?, AT+CMGF, AT+CMGS with the "> "
prompt and Ctrl-Z), decodes every SMS-SUBMIT PDU with python-gsmmodem's decoder, which is
independent of otpgate's encoder, puts concatenated parts back together, and records each
message as a JSON line in --out. Every command line is appended to --commands (the SIM
PIN masked). Prints the device path on the first line of stdout.
"""
import argparse
import json
import os
import pty
import time
import tty

from gsmmodem.pdu import decodeSmsPdu

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--commands", required=True)
parser.add_argument("--sim-pin")
parser.add_argument("--fail-sends", type=int, default=0)
args = parser.parse_args()

master, slave = pty.openpty()
tty.setraw(slave)
print(os.ttyname(slave), flush=True)

echo = True
pin_ok = args.sim_pin is None
awaiting_body = None  # "pdu" or the text-mode number while a message body is expected
fail_sends = args.fail_sends
parts = {}  # concatenation reference -> {part number: text}
message_reference = 0


def reply(*lines):
    os.write(master, "".join(f"\r\n{line}\r\n" for line in lines).encode())


def record(entry):
    with open(args.out, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry, ensure_ascii=False) + "\n")


def log_command(command):
    if command.upper().startswith("AT+CPIN="):
        command = "AT+CPIN=****"
    with open(args.commands, "a", encoding="utf-8") as out:
        out.write(command + "\n")


def data_coding_scheme(pdu_hex):
    """TP-DCS of an SMS-SUBMIT PDU (3GPP TS 23.040 section 9.2.2.2)."""
    octets = bytes.fromhex(pdu_hex)
    i = 1 + octets[0]  # the SMSC part
    i += 2  # first octet, TP-MR
    digits = octets[i]
    i += 2 + (digits + 1) // 2  # TP-DA: length, type of address, semi-octets
    i += 1  # TP-PID
    return octets[i]


def finish_send():
    global message_reference
    message_reference = (message_reference + 1) % 256
    reply(f"+CMGS: {message_reference}", "OK")


def handle_body(body):
    global fail_sends
    if fail_sends > 0:
        fail_sends -= 1
        reply("+CMS ERROR: 500")
        return
    if awaiting_body == "pdu":
        pdu = body.decode().strip()
        decoded = decodeSmsPdu(pdu)
        concatenation = [u for u in decoded.get("udh", []) if hasattr(u, "parts")]
        encoding = "ucs2" if data_coding_scheme(pdu) & 0x0C == 0x08 else "gsm7"
        if concatenation:
            c = concatenation[0]
            parts.setdefault(c.reference, {})[c.number] = decoded["text"]
            if len(parts[c.reference]) == c.parts:
                text = "".join(parts[c.reference][n] for n in sorted(parts[c.reference]))
                record({"number": decoded["number"], "text": text, "parts": c.parts, "mode": "pdu", "encoding": encoding})
                del parts[c.reference]
        else:
            record({"number": decoded["number"], "text": decoded["text"], "parts": 1, "mode": "pdu", "encoding": encoding})
    else:
        record({"number": awaiting_body, "text": body.decode("latin-1"), "parts": 1, "mode": "text"})
    finish_send()


def handle_command(command):
    global echo, pin_ok, awaiting_body
    log_command(command)
    upper = command.upper()
    if upper in ("AT", "AT+CMEE=2") or upper.startswith("AT+CMGF=") or upper.startswith("AT+CSCA="):
        reply("OK")
    elif upper == "ATE0":
        echo = False
        reply("OK")
    elif upper == "AT+CPIN?":
        reply("+CPIN: READY" if pin_ok else "+CPIN: SIM PIN", "OK")
    elif upper.startswith("AT+CPIN="):
        if command.split("=", 1)[1].strip('"') == args.sim_pin:
            pin_ok = True
            reply("OK")
        else:
            reply("+CME ERROR: incorrect password")
    elif upper == "AT+CREG?":
        reply("+CREG: 0,1" if pin_ok else "+CREG: 0,0", "OK")
    elif upper.startswith("AT+CMGS="):
        if not pin_ok:
            reply("+CMS ERROR: SIM PIN required")
            return
        argument = command.split("=", 1)[1]
        awaiting_body = argument.strip('"') if argument.startswith('"') else "pdu"
        os.write(master, b"\r\n> ")
    else:
        reply("ERROR")


buffer = b""
while True:
    try:
        data = os.read(master, 4096)
    except OSError:
        # The other side closed the port (otpgate re-initialising); keep serving.
        data = b""
    if not data:
        time.sleep(0.01)
        continue
    if echo and awaiting_body is None:
        os.write(master, data)
    buffer += data
    while True:
        if awaiting_body is not None:
            end = buffer.find(b"\x1a")
            if end < 0:
                break
            body, buffer = buffer[:end], buffer[end + 1 :]
            handle_body(body)
            awaiting_body = None
            continue
        end = buffer.find(b"\r")
        if end < 0:
            break
        line, buffer = buffer[:end].strip().decode("latin-1"), buffer[end + 1 :]
        if line:
            handle_command(line)
