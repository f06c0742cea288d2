// Decode throughput per codec and message size (Google Benchmark). Each
// iteration decodes one whole message the way the daemon does (header,
// routing metadata, and for unframed Thrift and Dubbo the structural skip of
// every argument). Reported: messages/s (items_per_second) and bytes/s.
//
//   build/bench/codec_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <fstream>

#include "../codecs/src/dubbo/hessian2.h"
#include "metanode/codecs/dubbo.h"
#include "metanode/codecs/thrift.h"

using namespace metanode::codecs;

namespace {

Bytes corpus(const std::string& rel) {
  std::ifstream in(std::string(METANODE_CORPUS_DIR) + "/" + rel, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A sayHello call whose string argument has `payload` bytes, in a Thrift wire form.
Bytes thrift_call(thrift::Transport t, thrift::Protocol p, size_t payload) {
  // Build with the codec's own encoder for an exception, then swap in a call:
  // simpler to hand-write the two protocols here.
  Bytes msg;
  std::string arg(payload, 'x');
  auto be32 = [&](uint32_t v) { for (int s = 24; s >= 0; s -= 8) msg.push_back(uint8_t(v >> s)); };
  auto varint = [&](uint64_t v) { while (v >= 0x80) { msg.push_back(uint8_t(v) | 0x80); v >>= 7; } msg.push_back(uint8_t(v)); };
  if (p == thrift::Protocol::kCompact) {
    msg = {0x82, uint8_t(1 << 5 | 1)};
    varint(7);
    varint(8);
    msg.insert(msg.end(), {'s', 'a', 'y', 'H', 'e', 'l', 'l', 'o'});
    msg.push_back(0x18);  // field 1, binary
    varint(arg.size());
    msg.insert(msg.end(), arg.begin(), arg.end());
    msg.push_back(0);
  } else {
    be32(0x80010001);
    be32(8);
    msg.insert(msg.end(), {'s', 'a', 'y', 'H', 'e', 'l', 'l', 'o'});
    be32(7);
    msg.insert(msg.end(), {11, 0, 1});
    be32(uint32_t(arg.size()));
    msg.insert(msg.end(), arg.begin(), arg.end());
    msg.push_back(0);
  }
  if (t == thrift::Transport::kUnframed) return msg;
  Bytes out;
  auto put32 = [&](uint32_t v) { for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(v >> s)); };
  if (t == thrift::Transport::kHeader) {
    Bytes hdr = {uint8_t(p == thrift::Protocol::kCompact ? 2 : 0), 0, 1, 1, 7};
    hdr.insert(hdr.end(), {'x', '-', 'r', 'o', 'u', 't', 'e', 4, 'b', 'l', 'u', 'e'});
    while (hdr.size() % 4) hdr.push_back(0);
    put32(uint32_t(10 + hdr.size() + msg.size()));
    out.insert(out.end(), {0x0f, 0xff, 0, 0});
    put32(7);
    out.push_back(uint8_t(hdr.size() / 4 >> 8));
    out.push_back(uint8_t(hdr.size() / 4));
    out.insert(out.end(), hdr.begin(), hdr.end());
  } else {
    put32(uint32_t(msg.size()));
  }
  out.insert(out.end(), msg.begin(), msg.end());
  return out;
}

Bytes dubbo_call(size_t payload) {
  Bytes body;
  hessian2::write_string(body, "2.0.2");
  hessian2::write_string(body, "com.example.DemoService");
  hessian2::write_string(body, "1.0.0");
  hessian2::write_string(body, "sayHello");
  hessian2::write_string(body, "Ljava/lang/String;");
  hessian2::write_string(body, std::string(payload, 'x'));
  body.push_back('H');
  for (const char* kv : {"path", "com.example.DemoService", "interface", "com.example.DemoService",
                         "version", "1.0.0", "group", "g1"})
    hessian2::write_string(body, kv);
  body.push_back('Z');
  Bytes f = {0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 7};
  for (int s = 24; s >= 0; s -= 8) f.push_back(uint8_t(body.size() >> s));
  f.insert(f.end(), body.begin(), body.end());
  return f;
}

template <class CodecT>
void run(benchmark::State& st, const Bytes& frame) {
  Limits l;
  CodecT codec(l);
  Message m;
  for (auto _ : st) {
    auto r = codec.decode(frame, m);
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(m.metadata.get("method"));
    if (r.status != DecodeStatus::kDone) st.SkipWithError(r.error.c_str());
  }
  st.SetItemsProcessed(st.iterations());
  st.SetBytesProcessed(int64_t(st.iterations() * frame.size()));
}

void BM_Thrift(benchmark::State& st, thrift::Transport t, thrift::Protocol p) {
  run<thrift::ThriftCodec>(st, thrift_call(t, p, size_t(st.range(0))));
}

void BM_Dubbo(benchmark::State& st) { run<dubbo::DubboCodec>(st, dubbo_call(size_t(st.range(0)))); }

void BM_DubboSofaComplex(benchmark::State& st) {
  Bytes b = corpus("dubbo/js_sofa-dubbo-remoting_consumer_complex.c2s");
  Message m;
  dubbo::DubboCodec().decode(b, m);
  run<dubbo::DubboCodec>(st, Bytes(b.begin(), b.begin() + ptrdiff_t(m.size)));
}

}  // namespace

BENCHMARK_CAPTURE(BM_Thrift, framed_binary, thrift::Transport::kFramed, thrift::Protocol::kBinary)
    ->Arg(64)->Arg(1024)->Arg(16384);
BENCHMARK_CAPTURE(BM_Thrift, unframed_binary, thrift::Transport::kUnframed, thrift::Protocol::kBinary)
    ->Arg(64)->Arg(1024)->Arg(16384);
BENCHMARK_CAPTURE(BM_Thrift, unframed_compact, thrift::Transport::kUnframed, thrift::Protocol::kCompact)
    ->Arg(64)->Arg(1024)->Arg(16384);
BENCHMARK_CAPTURE(BM_Thrift, header_binary, thrift::Transport::kHeader, thrift::Protocol::kBinary)
    ->Arg(64)->Arg(1024)->Arg(16384);
BENCHMARK(BM_Dubbo)->Arg(64)->Arg(1024)->Arg(16384);
BENCHMARK(BM_DubboSofaComplex);
BENCHMARK_MAIN();
