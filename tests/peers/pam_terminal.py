#!/usr/bin/env python3
"""Runs pamtester on a pseudo-terminal, as a user at a login prompt would: it waits for
each prompt, then types the answer. The first answer is the PIN; the second is the code
of the newest SMS in the spool folder (smstools3 format, "Your code: NNNNNN").

Usage: pam_terminal.py SERVICE USER PIN SPOOL_DIR

Prints everything the terminal showed (the echo of typed characters included, so a test
can see whether the code was hidden) and exits with pamtester's status. Only the standard
library: nothing to install."""

import os
import pty
import select
import sys
import time

TIMEOUT = 20.0


def main():
    service, user, pin, spool = sys.argv[1:5]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp("pamtester", ["pamtester", service, user, "authenticate"])
    transcript = b""
    answered = 0
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            transcript += chunk
        # A prompt ends the output so far with ": " and waits for a line.
        if answered < 2 and transcript.rstrip(b" ").endswith(b":") and not ready:
            answer = pin if answered == 0 else newest_code(spool, deadline)
            os.write(fd, answer.encode() + b"\n")
            answered += 1
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(transcript.decode(errors="replace"))
    sys.exit(os.waitstatus_to_exitcode(status))


def newest_code(spool, deadline):
    while time.monotonic() < deadline:
        files = [os.path.join(spool, f) for f in os.listdir(spool)] if os.path.isdir(spool) else []
        files = [f for f in files if not os.path.basename(f).startswith(".")]
        if files:
            text = open(max(files, key=os.path.getmtime)).read().split("\n\n", 1)[1]
            return text.strip().rsplit(" ", 1)[-1]
        time.sleep(0.05)
    sys.exit("no SMS in " + spool)


if __name__ == "__main__":
    main()
