#!/usr/bin/env python3
"""An XML-RPC server standing in for sipgate's samurai API in otpgate's tests.

Checks HTTP basic auth, records every samurai.SessionInitiate call as one JSON line in
--out, and answers as --answer says: ok (StatusCode 200), status (StatusCode 401) or fault.
Prints its port on the first line of stdout.
"""
import argparse
import base64
import json
import xmlrpc.client
import xmlrpc.server

parser = argparse.ArgumentParser()
parser.add_argument("--user", required=True)
parser.add_argument("--password", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--answer", choices=["ok", "status", "fault"], default="ok")
args = parser.parse_args()
expected = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()


class Handler(xmlrpc.server.SimpleXMLRPCRequestHandler):
    rpc_paths = ("/RPC2",)

    def parse_request(self):
        if not super().parse_request():
            return False
        if self.headers.get("Authorization", "") != expected:
            self.send_error(401, "Unauthorized")
            return False
        return True


def session_initiate(params):
    with open(args.out, "a", encoding="utf-8") as out:
        out.write(json.dumps(params) + "\n")
    if args.answer == "fault":
        raise xmlrpc.client.Fault(407, "Unauthorized & not allowed")
    if args.answer == "status":
        return {"StatusCode": 401, "StatusString": "Method not allowed"}
    return {"StatusCode": 200, "StatusString": "Method success", "SessionID": "d2a6"}


server = xmlrpc.server.SimpleXMLRPCServer(
    ("127.0.0.1", 0), requestHandler=Handler, logRequests=False, allow_none=True
)
server.register_function(session_initiate, "samurai.SessionInitiate")
print(server.server_address[1], flush=True)
server.serve_forever()
