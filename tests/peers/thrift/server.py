#!/usr/bin/python3
"""A real Apache Thrift server (python3-thrift) for tests and the demo.

Answers like the Aeraki tutorial's sample server:
  "Hello <name>, response from <server-name>/<ip>"
echoHeader(key) returns the THeader info header `key` of the request (or
"<absent>"), and one line is printed per accepted connection
("peer IP:PORT") so tests can prove who connected to it, and one per
call ("call METHOD") so they can count what reached it.
"""
import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.environ.get("METANODE_GEN_PY", os.path.join(os.path.dirname(__file__), "gen-py")))

from thrift.TMultiplexedProcessor import TMultiplexedProcessor  # noqa: E402
from thrift.protocol import TBinaryProtocol, TCompactProtocol, THeaderProtocol  # noqa: E402
from thrift.server import TServer  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402

from hello import SayHello  # noqa: E402

current = threading.local()


class Handler:
    def __init__(self, name, ip, delay_ms):
        self.who = "%s/%s" % (name, ip)
        self.delay = delay_ms / 1000.0

    def called(self, method):
        print("call %s" % method, flush=True)
        if self.delay:
            time.sleep(self.delay)

    def sayHello(self, name):
        self.called("sayHello")
        return "Hello %s, response from %s" % (name, self.who)

    def sayGoodbye(self, name):
        self.called("sayGoodbye")
        return "Goodbye %s, response from %s" % (name, self.who)

    def echoHeader(self, key):
        iprot = getattr(current, "iprot", None)
        headers = iprot.get_headers() if iprot is not None and hasattr(iprot, "get_headers") else {}
        value = headers.get(key.encode())
        return value.decode() if value is not None else "<absent>"


class RememberProtocol:
    """Lets the handler see the request's protocol (for its THeader headers)."""

    def __init__(self, inner):
        self.inner = inner

    def process(self, iprot, oprot):
        current.iprot = iprot
        return self.inner.process(iprot, oprot)


class LoggingServerSocket(TSocket.TServerSocket):
    def accept(self):
        client = super().accept()
        if client is not None:
            peer = client.handle.getpeername()
            print("peer %s:%d" % (peer[0], peer[1]), flush=True)
        return client


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--ip", default=None, help="address to print in replies")
    ap.add_argument("--transport", choices=["framed", "buffered", "header"], default="framed")
    ap.add_argument("--protocol", choices=["binary", "compact"], default="binary")
    ap.add_argument("--multiplexed", action="store_true", help="serve as 'SayHello' in a TMultiplexedProcessor")
    ap.add_argument("--delay-ms", type=int, default=0, help="take this long over every sayHello/sayGoodbye")
    a = ap.parse_args()

    processor = SayHello.Processor(Handler(a.name, a.ip or a.host, a.delay_ms))
    if a.multiplexed:
        mux = TMultiplexedProcessor()
        mux.registerProcessor("SayHello", processor)
        processor = mux
    sock = LoggingServerSocket(host=a.host, port=a.port)
    if a.transport == "header":
        tf = TTransport.TBufferedTransportFactory()
        pf = THeaderProtocol.THeaderProtocolFactory()
    else:
        tf = (TTransport.TFramedTransportFactory() if a.transport == "framed"
              else TTransport.TBufferedTransportFactory())
        pf = (TBinaryProtocol.TBinaryProtocolFactory() if a.protocol == "binary"
              else TCompactProtocol.TCompactProtocolFactory())
    server = TServer.TThreadedServer(RememberProtocol(processor), sock, tf, pf, daemon=True)
    print("listening %s:%d as %s" % (a.host, a.port, a.name), flush=True)
    server.serve()


if __name__ == "__main__":
    main()
