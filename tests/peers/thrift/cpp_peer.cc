// A real Apache Thrift C++ (libthrift 0.17) peer: the same contract as
// server.py and client.py, so tests can mix implementations.
//   cpp_peer server --port P --name NAME [--ip IP] [--transport framed|buffered|header]
//                   [--protocol binary|compact] [--multiplexed] [--nonblocking]
//     --nonblocking: TNonblockingServer (one libevent loop, framed only; the
//     event-loop server benchmarks use as the upstream that saturates last)
//     instead of TThreadedServer (a thread per connection)
//   cpp_peer client --host H --port P [--calls N] [--method sayHello|sayGoodbye|alternate|echoHeader]
//                   [--transport ...] [--protocol ...] [--multiplexed] [--quiet]
//                   [--arg A] [--header K=V ...] (echoHeader: --method echoHeader --arg KEY)
#include <thrift/TApplicationException.h>
#include <thrift/processor/TMultiplexedProcessor.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/protocol/TCompactProtocol.h>
#include <thrift/protocol/THeaderProtocol.h>
#include <thrift/protocol/TMultiplexedProtocol.h>
#include <thrift/server/TNonblockingServer.h>
#include <thrift/server/TThreadedServer.h>
#include <thrift/transport/TNonblockingServerSocket.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TServerSocket.h>
#include <thrift/transport/TSocket.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "SayHello.h"

using namespace apache::thrift;
using namespace apache::thrift::protocol;
using namespace apache::thrift::transport;
using namespace apache::thrift::server;

namespace {

struct Options {
  std::string mode, host = "127.0.0.1", name = "thrift-cpp-server", ip, method = "sayHello";
  std::string transport = "framed", protocol = "binary", arg = "metanode";
  std::vector<std::pair<std::string, std::string>> headers;  // THeader info headers to send
  int port = 0, calls = 10;
  bool multiplexed = false, quiet = false, nonblocking = false;
};

// The request protocol of the call being served on this thread, so
// echoHeader can read its THeader headers.
thread_local TProtocol* current_protocol = nullptr;

class RememberProtocol : public TProcessor {
 public:
  explicit RememberProtocol(std::shared_ptr<TProcessor> inner) : inner_(std::move(inner)) {}
  bool process(std::shared_ptr<TProtocol> in, std::shared_ptr<TProtocol> out, void* ctx) override {
    current_protocol = in.get();
    return inner_->process(in, out, ctx);
  }

 private:
  std::shared_ptr<TProcessor> inner_;
};

class Handler : public hello::SayHelloIf {
 public:
  explicit Handler(std::string who) : who_(std::move(who)) {}
  void sayHello(std::string& out, const std::string& name) override {
    out = "Hello " + name + ", response from " + who_;
  }
  void sayGoodbye(std::string& out, const std::string& name) override {
    out = "Goodbye " + name + ", response from " + who_;
  }
  void echoHeader(std::string& out, const std::string& key) override {
    out = "<absent>";
    if (auto* h = dynamic_cast<THeaderProtocol*>(current_protocol)) {
      auto it = h->getHeaders().find(key);
      if (it != h->getHeaders().end()) out = it->second;
    }
  }

 private:
  std::string who_;
};

// Prints the peer of every accepted connection, like server.py.
class LoggingServerSocket : public TServerSocket {
 public:
  using TServerSocket::TServerSocket;

 protected:
  std::shared_ptr<TTransport> acceptImpl() override {
    auto t = TServerSocket::acceptImpl();
    if (auto s = std::dynamic_pointer_cast<TSocket>(t))
      std::printf("peer %s:%d\n", s->getPeerAddress().c_str(), s->getPeerPort()), std::fflush(stdout);
    return t;
  }
};

std::shared_ptr<TProtocol> make_protocol(const Options& o, std::shared_ptr<TTransport> sock,
                                         std::shared_ptr<TTransport>& trans) {
  if (o.transport == "header") {
    trans = sock;
    return std::make_shared<THeaderProtocol>(
        sock, o.protocol == "compact" ? T_COMPACT_PROTOCOL : T_BINARY_PROTOCOL);
  }
  if (o.transport == "framed")
    trans = std::make_shared<TFramedTransport>(sock);
  else
    trans = std::make_shared<TBufferedTransport>(sock);
  if (o.protocol == "compact") return std::make_shared<TCompactProtocol>(trans);
  return std::make_shared<TBinaryProtocol>(trans);
}

int run_server(const Options& o) {
  auto handler = std::make_shared<Handler>(o.name + "/" + (o.ip.empty() ? o.host : o.ip));
  std::shared_ptr<TProcessor> processor = std::make_shared<hello::SayHelloProcessor>(handler);
  if (o.multiplexed) {
    auto mux = std::make_shared<TMultiplexedProcessor>();
    mux->registerProcessor("SayHello", processor);
    processor = mux;
  }
  auto socket = std::make_shared<LoggingServerSocket>(o.port);
  std::shared_ptr<TTransportFactory> tf;
  std::shared_ptr<TProtocolFactory> pf;
  if (o.transport == "header") {
    tf = std::make_shared<TTransportFactory>();
    pf = std::make_shared<THeaderProtocolFactory>();
  } else {
    tf = o.transport == "framed" ? std::shared_ptr<TTransportFactory>(std::make_shared<TFramedTransportFactory>())
                                 : std::make_shared<TBufferedTransportFactory>();
    pf = o.protocol == "compact" ? std::shared_ptr<TProtocolFactory>(std::make_shared<TCompactProtocolFactory>())
                                 : std::make_shared<TBinaryProtocolFactory>();
  }
  if (o.nonblocking) {
    if (o.transport != "framed") {
      std::fprintf(stderr, "--nonblocking serves framed transport only\n");
      return 2;
    }
    TNonblockingServer server(std::make_shared<RememberProtocol>(processor), pf,
                              std::make_shared<TNonblockingServerSocket>(o.port));
    server.setNumIOThreads(1);
    std::printf("listening 0.0.0.0:%d as %s (nonblocking)\n", o.port, o.name.c_str());
    std::fflush(stdout);
    server.serve();
    return 0;
  }
  TThreadedServer server(std::make_shared<RememberProtocol>(processor), socket, tf, pf);
  std::printf("listening 0.0.0.0:%d as %s\n", o.port, o.name.c_str());
  std::fflush(stdout);
  server.serve();
  return 0;
}

std::string json_str(const std::string& v) {
  std::string o = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o + "\"";
}

std::string json_map(const std::map<std::string, int>& m) {
  std::string s = "{";
  for (const auto& [k, v] : m) s += (s.size() > 1 ? ", \"" : "\"") + k + "\": " + std::to_string(v);
  return s + "}";
}

int run_client(const Options& o) {
  auto sock = std::make_shared<TSocket>(o.host, o.port);
  sock->setRecvTimeout(10000);
  std::shared_ptr<TTransport> trans;
  auto proto = make_protocol(o, sock, trans);
  auto* header_proto = dynamic_cast<THeaderProtocol*>(proto.get());
  if (o.multiplexed) proto = std::make_shared<TMultiplexedProtocol>(proto, "SayHello");
  hello::SayHelloClient client(proto);
  try {
    trans->open();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cannot connect: %s\n", e.what());
    return 1;
  }
  int ok = 0, errors = 0, switches = 0;
  std::map<std::string, int> by_server, by_method_server;
  std::string last, first_error, replies;
  int kept = 0;
  for (int i = 0; i < o.calls; ++i) {
    std::string method = o.method == "alternate" ? (i % 2 ? "sayGoodbye" : "sayHello") : o.method;
    std::string reply;
    if (header_proto)
      for (const auto& [k, v] : o.headers) header_proto->setHeader(k, v);
    try {
      if (method == "sayHello")
        client.sayHello(reply, o.arg);
      else if (method == "echoHeader")
        client.echoHeader(reply, o.arg);
      else
        client.sayGoodbye(reply, o.arg);
    } catch (const TApplicationException& e) {
      ++errors;
      if (first_error.empty()) first_error = e.what();
      if (!o.quiet) std::printf("error: %s\n", e.what());
      continue;
    }
    ++ok;
    if (kept++ < 3) replies += (replies.empty() ? "" : ", ") + json_str(reply);
    auto p = reply.find("response from ");
    std::string server = p == std::string::npos ? "?" : reply.substr(p + 14, reply.find('/', p) - p - 14);
    if (!last.empty() && server != last) ++switches;
    last = server;
    ++by_server[server];
    ++by_method_server[method + ":" + server];
    if (!o.quiet) std::printf("%s\n", reply.c_str());
  }
  trans->close();
  std::printf("SUMMARY {\"by_method_server\": %s, \"by_server\": %s, \"calls\": %d, \"error_messages\": [%s], "
              "\"errors\": %d, \"ok\": %d, \"replies\": [%s], \"switches\": %d}\n",
              json_map(by_method_server).c_str(), json_map(by_server).c_str(), o.calls,
              first_error.empty() ? "" : json_str(first_error).c_str(), errors, ok, replies.c_str(),
              switches);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (argc < 2) return 2;
  o.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--host") o.host = next();
    else if (a == "--port") o.port = std::atoi(next().c_str());
    else if (a == "--name") o.name = next();
    else if (a == "--ip") o.ip = next();
    else if (a == "--calls") o.calls = std::atoi(next().c_str());
    else if (a == "--method") o.method = next();
    else if (a == "--transport") o.transport = next();
    else if (a == "--protocol") o.protocol = next();
    else if (a == "--multiplexed") o.multiplexed = true;
    else if (a == "--nonblocking") o.nonblocking = true;
    else if (a == "--quiet") o.quiet = true;
    else if (a == "--arg") o.arg = next();
    else if (a == "--header") {
      std::string kv = next();
      auto eq = kv.find('=');
      o.headers.emplace_back(kv.substr(0, eq), eq == std::string::npos ? "" : kv.substr(eq + 1));
    }
    else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  if (o.mode == "server") return run_server(o);
  if (o.mode == "client") return run_client(o);
  return 2;
}
