#!/usr/bin/python3
"""A real Apache Thrift client (python3-thrift) that makes every call over ONE
long-lived connection, the way request-level balancing has to be shown.

Prints each reply (unless --quiet) and a final JSON summary line:
  {"calls": N, "ok": N, "errors": N, "switches": N, "by_server": {...},
   "by_method_server": {...}, "error_messages": [...], "transport_errors": N,
   "ok_after_last_error": N}
With --reconnect a broken connection is counted and opened again (a new
connect, as a pooled client would make) instead of ending the run.
"""
import argparse
import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.environ.get("METANODE_GEN_PY", os.path.join(os.path.dirname(__file__), "gen-py")))

from thrift.protocol import TBinaryProtocol, TCompactProtocol, THeaderProtocol  # noqa: E402
from thrift.protocol.TMultiplexedProtocol import TMultiplexedProtocol  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402
from thrift.transport.THeaderTransport import THeaderClientType, THeaderSubprotocolID  # noqa: E402
from thrift.Thrift import TApplicationException  # noqa: E402

from hello import SayHello  # noqa: E402

SERVER_RE = re.compile(r"response from ([^/]+)/")


class BoundSocket(TSocket.TSocket):
    """A TSocket whose connections leave from a chosen local address."""

    def __init__(self, host, port, source):
        super().__init__(host, port)
        self._source = source

    def open(self):
        try:
            self.handle = socket.create_connection((self.host, self.port), timeout=self._timeout,
                                                   source_address=(self._source, 0))
        except OSError as e:
            raise TTransport.TTransportException(TTransport.TTransportException.NOT_OPEN, str(e))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--method", choices=["sayHello", "sayGoodbye", "alternate", "echoHeader"],
                    default="sayHello")
    ap.add_argument("--name", "--arg", dest="name", default="metanode")
    ap.add_argument("--transport", choices=["framed", "buffered", "header"], default="framed")
    ap.add_argument("--protocol", choices=["binary", "compact"], default="binary")
    ap.add_argument("--multiplexed", action="store_true", help="call service 'SayHello' multiplexed")
    ap.add_argument("--header", action="append", default=[], metavar="K=V",
                    help="THeader info header on every request (header transport)")
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: after --calls)")
    ap.add_argument("--reconnect", action="store_true",
                    help="on a broken connection, connect again and go on (framed or buffered)")
    ap.add_argument("--source", help="connect from this local address (a pod's IP on loopback)")
    a = ap.parse_args()

    sock = BoundSocket(a.host, a.port, a.source) if a.source else TSocket.TSocket(a.host, a.port)
    sock.setTimeout(10000)
    if a.transport == "header":
        trans = TTransport.TBufferedTransport(sock)
        sub = THeaderSubprotocolID.COMPACT if a.protocol == "compact" else THeaderSubprotocolID.BINARY
        proto = THeaderProtocol.THeaderProtocol(trans, (THeaderClientType.HEADERS,), sub)
    else:
        trans = (TTransport.TFramedTransport(sock) if a.transport == "framed"
                 else TTransport.TBufferedTransport(sock))
        proto = (TBinaryProtocol.TBinaryProtocol(trans) if a.protocol == "binary"
                 else TCompactProtocol.TCompactProtocol(trans))
    header_trans = proto.trans if a.transport == "header" else None
    if a.multiplexed:
        proto = TMultiplexedProtocol(proto, "SayHello")
    client = SayHello.Client(proto)
    start = time.monotonic()

    def out_of_time():
        return a.seconds and time.monotonic() - start >= a.seconds

    def connect():
        # With --reconnect, until it works or the time is up (without
        # --seconds: 200 attempts, 10 s).
        attempts = 0
        while True:
            try:
                trans.open()
                return True
            except TTransport.TTransportException:
                if not a.reconnect:
                    raise
                attempts += 1
                if out_of_time() or (not a.seconds and attempts >= 200):
                    return False
                summary["transport_errors"] += 1
                summary["ok_after_last_error"] = 0
                time.sleep(0.05)

    # switches: consecutive replies from different servers (calls - 1 when
    # every request goes somewhere else than the one before it).
    summary = {"calls": 0, "ok": 0, "errors": 0, "by_server": {}, "by_method_server": {},
               "error_messages": [], "switches": 0, "replies": [], "transport_errors": 0,
               "ok_after_last_error": 0}
    connected = connect()
    last = None
    for i in range(a.calls):
        if not connected or out_of_time():
            break
        method = a.method
        if method == "alternate":
            method = "sayHello" if i % 2 == 0 else "sayGoodbye"
        summary["calls"] += 1
        # THeaderTransport forgets written headers after each message.
        for kv in a.header if header_trans else []:
            k, _, v = kv.partition("=")
            header_trans.set_header(k.encode(), v.encode())
        try:
            reply = getattr(client, method)(a.name)
        except TTransport.TTransportException as e:
            if not a.reconnect:
                raise
            summary["transport_errors"] += 1
            summary["ok_after_last_error"] = 0
            if len(summary["error_messages"]) < 5:
                summary["error_messages"].append("transport: %s" % e)
            trans.close()
            connected = connect()
            continue
        except TApplicationException as e:
            summary["errors"] += 1
            summary["ok_after_last_error"] = 0
            if len(summary["error_messages"]) < 5:
                summary["error_messages"].append(str(e))
            if not a.quiet:
                print("error: %s" % e, flush=True)
            continue
        summary["ok"] += 1
        summary["ok_after_last_error"] += 1
        if len(summary["replies"]) < 3:
            summary["replies"].append(reply)
        m = SERVER_RE.search(reply)
        server = m.group(1) if m else "?"
        summary["by_server"][server] = summary["by_server"].get(server, 0) + 1
        if last is not None and server != last:
            summary["switches"] += 1
        last = server
        key = "%s:%s" % (method, server)
        summary["by_method_server"][key] = summary["by_method_server"].get(key, 0) + 1
        if not a.quiet:
            print(reply, flush=True)
        if a.interval:
            time.sleep(a.interval)
    trans.close()
    print("SUMMARY " + json.dumps(summary, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
