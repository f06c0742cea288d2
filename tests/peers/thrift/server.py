#!/usr/bin/python3
"""A real Apache Thrift server (python3-thrift) for tests and the demo.

Answers like the Aeraki tutorial's sample server:
  "Hello <name>, response from <server-name>/<ip>"
and prints one line per accepted connection ("peer IP:PORT") so tests can
prove who connected to it.
"""
import argparse
import os
import sys

sys.path.insert(0, os.environ.get("METANODE_GEN_PY", os.path.join(os.path.dirname(__file__), "gen-py")))

from thrift.protocol import TBinaryProtocol, TCompactProtocol, THeaderProtocol  # noqa: E402
from thrift.server import TServer  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402

from hello import SayHello  # noqa: E402


class Handler:
    def __init__(self, name, ip):
        self.who = "%s/%s" % (name, ip)

    def sayHello(self, name):
        return "Hello %s, response from %s" % (name, self.who)

    def sayGoodbye(self, name):
        return "Goodbye %s, response from %s" % (name, self.who)


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
    a = ap.parse_args()

    processor = SayHello.Processor(Handler(a.name, a.ip or a.host))
    sock = LoggingServerSocket(host=a.host, port=a.port)
    if a.transport == "header":
        tf = TTransport.TBufferedTransportFactory()
        pf = THeaderProtocol.THeaderProtocolFactory()
    else:
        tf = (TTransport.TFramedTransportFactory() if a.transport == "framed"
              else TTransport.TBufferedTransportFactory())
        pf = (TBinaryProtocol.TBinaryProtocolFactory() if a.protocol == "binary"
              else TCompactProtocol.TCompactProtocolFactory())
    server = TServer.TThreadedServer(processor, sock, tf, pf, daemon=True)
    print("listening %s:%d as %s" % (a.host, a.port, a.name), flush=True)
    server.serve()


if __name__ == "__main__":
    main()
