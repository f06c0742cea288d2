// Dubbo codec on captures from Caucho Hessian (Java), hessian.js through
// sofa-rpc-node/dubbo-remoting and apache-dubbo-js; partial delivery; id
// rewriting; attachment mutation; native error and heartbeat replies; and
// hostile bodies.
#include <gtest/gtest.h>

#include <fstream>

#include "../../../codecs/src/dubbo/hessian2.h"
#include "metanode/codecs/dubbo.h"
#include "metanode/codecs/inspect.h"

namespace metanode::codecs::dubbo {
namespace {

Bytes read_file(const std::string& name) {
  std::ifstream in(std::string(METANODE_CORPUS_DIR) + "/dubbo/" + name, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<Message> decode_all(const Bytes& b, std::string* err = nullptr) {
  DubboCodec c;
  std::vector<Message> out;
  size_t off = 0;
  while (off < b.size()) {
    Message m;
    auto r = c.decode(std::span<const uint8_t>(b).subspan(off), m);
    if (r.status != DecodeStatus::kDone) {
      if (err) *err = r.status == DecodeStatus::kError ? r.error : "need more at end";
      break;
    }
    off += m.size;
    out.push_back(std::move(m));
  }
  if (off != b.size() && err && err->empty()) *err = "stopped early";
  return out;
}

std::string md(const Message& m, const char* k) {
  const std::string* v = m.metadata.get(k);
  return v ? *v : "<absent>";
}

TEST(DubboCorpus, SofaComplexRequestAttachmentsAfterEveryArgument) {
  std::string err;
  auto msgs = decode_all(read_file("js_sofa-dubbo-remoting_consumer_complex.c2s"), &err);
  ASSERT_EQ(msgs.size(), 2u) << err;
  const auto& m = msgs[0];
  EXPECT_EQ(m.kind, MessageKind::kRequest);
  EXPECT_EQ(m.request_id, 1u);
  EXPECT_EQ(md(m, "method"), "complex");
  EXPECT_EQ(md(m, "interface"), "com.example.DemoService");
  EXPECT_EQ(md(m, "version"), "1.0.0");
  EXPECT_EQ(md(m, "group"), "g1");
  EXPECT_EQ(md(m, "dubbo.tag"), "blue");
  EXPECT_EQ(md(msgs[1], "method"), "sayHello");
}

TEST(DubboCorpus, ApacheDubboJsRequests) {
  std::string err;
  auto msgs = decode_all(read_file("js_apache-dubbo-js_direct_consumer.c2s"), &err);
  ASSERT_EQ(msgs.size(), 3u) << err;
  EXPECT_EQ(md(msgs[0], "method"), "sayHello");
  EXPECT_EQ(md(msgs[1], "method"), "plus");
  EXPECT_EQ(md(msgs[2], "method"), "plus");
  EXPECT_EQ(md(msgs[2], "application"), "dubbo-js");
  EXPECT_EQ(msgs[2].request_id, 3u);
}

TEST(DubboCorpus, JavaFrames) {
  struct Case {
    const char* file;
    MessageKind kind;
    uint64_t id;
  } cases[] = {
      {"java_heartbeat_req.bin", MessageKind::kHeartbeatRequest, 43},
      {"java_req_oneway.bin", MessageKind::kOneway, 44},
      {"java_resp_flag0.bin", MessageKind::kException, 42},
      {"java_resp_flag1.bin", MessageKind::kResponse, 42},
      {"java_resp_flag2.bin", MessageKind::kResponse, 42},
      {"java_resp_status60.bin", MessageKind::kException, 42},
  };
  for (const auto& c : cases) {
    std::string err;
    auto b = read_file(c.file);
    auto msgs = decode_all(b, &err);
    ASSERT_EQ(msgs.size(), 1u) << c.file << ": " << err;
    EXPECT_EQ(msgs[0].kind, c.kind) << c.file;
    EXPECT_EQ(msgs[0].request_id, c.id) << c.file;
    EXPECT_EQ(msgs[0].size, b.size()) << c.file;
  }
  auto oneway = decode_all(read_file("java_req_oneway.bin"));
  EXPECT_EQ(md(oneway[0], "group"), "g1");
  EXPECT_EQ(md(oneway[0], "dubbo.tag"), "blue");
  EXPECT_EQ(md(oneway[0], "timeout"), "3000");
}

TEST(DubboCodec, EveryPrefixNeedsMoreDataAndConsumesNothing) {
  for (const char* f : {"java_req_oneway.bin", "js_apache-dubbo-js_direct_consumer.c2s",
                        "java_resp_flag0.bin"}) {
    Bytes b = read_file(f);
    auto first = decode_all(b)[0].size;
    for (size_t n = 0; n < first; ++n) {
      DubboCodec c;
      Message m;
      ASSERT_EQ(c.decode(std::span<const uint8_t>(b.data(), n), m).status, DecodeStatus::kNeedMoreData)
          << f << " prefix " << n;
    }
  }
}

TEST(DubboCodec, RewritesRequestIds) {
  Bytes b = read_file("js_apache-dubbo-js_direct_consumer.c2s");
  DubboCodec c;
  Message m;
  ASSERT_EQ(c.decode(b, m).status, DecodeStatus::kDone);
  Bytes f(b.begin(), b.begin() + ptrdiff_t(m.size));
  ASSERT_TRUE(c.set_request_id(f, m, 0x123456789ull));
  Message m2;
  ASSERT_EQ(DubboCodec().decode(f, m2).status, DecodeStatus::kDone);
  EXPECT_EQ(m2.request_id, 0x123456789ull);
  EXPECT_EQ(md(m2, "method"), "sayHello");
}

TEST(DubboCodec, MutationAddsAndReplacesAttachments) {
  Bytes b = read_file("js_sofa-dubbo-remoting_consumer_complex.c2s");
  DubboCodec c;
  Message m;
  ASSERT_EQ(c.decode(b, m).status, DecodeStatus::kDone);
  Bytes f(b.begin(), b.begin() + ptrdiff_t(m.size));
  ASSERT_TRUE(c.mutate(f, m, {{"dubbo.tag", "green"}, {"x-metanode", "v1"}}));
  EXPECT_EQ(md(m, "dubbo.tag"), "green");
  EXPECT_EQ(md(m, "x-metanode"), "v1");
  EXPECT_EQ(md(m, "group"), "g1");
  EXPECT_EQ(md(m, "method"), "complex");
  EXPECT_EQ(m.size, f.size());
  // The arguments before the attachments are untouched.
  EXPECT_TRUE(std::equal(b.begin() + 16, b.begin() + 16 + 70000, f.begin() + 16));
}

TEST(DubboCodec, ResponseMutationGainsAttachmentFlag) {
  for (const char* file : {"java_resp_flag1.bin", "java_resp_flag2.bin", "java_resp_flag0.bin"}) {
    Bytes f = read_file(file);
    DubboCodec c;
    Message m;
    ASSERT_EQ(c.decode(f, m).status, DecodeStatus::kDone);
    MessageKind kind = m.kind;
    ASSERT_TRUE(c.mutate(f, m, {{"served-by", "metanode"}})) << file;
    EXPECT_EQ(md(m, "served-by"), "metanode") << file;
    EXPECT_EQ(m.kind, kind) << file;
  }
}

TEST(DubboCodec, ErrorRepliesUseDubboStatuses) {
  Message req;
  ASSERT_EQ(DubboCodec().decode(read_file("java_req_oneway.bin"), req).status, DecodeStatus::kDone);
  struct {
    ErrorKind kind;
    uint8_t status;
  } cases[] = {{ErrorKind::kRouteNotFound, kServiceNotFound},
               {ErrorKind::kNoUpstream, kServiceError},
               {ErrorKind::kUpstreamFailure, kServerError},
               {ErrorKind::kTimeout, kServerError},
               {ErrorKind::kOverLimit, kServerThreadpoolExhausted}};
  for (const auto& c : cases) {
    Bytes out;
    DubboCodec().encode_error(req, c.kind, "no route for sayHello", out);
    Message m;
    ASSERT_EQ(DubboCodec().decode(out, m).status, DecodeStatus::kDone);
    EXPECT_EQ(wire_status(m.wire), c.status);
    // Istio's response_code: the status, the same for the reply seen and
    // for the error the daemon says it sent, through AutoCodec too.
    EXPECT_EQ(DubboCodec().response_code(m), std::to_string(c.status));
    EXPECT_EQ(DubboCodec().error_code(c.kind), std::to_string(c.status));
    auto detected = make_codec(Protocol::kAuto);
    Message again;
    ASSERT_EQ(detected->decode(out, again).status, DecodeStatus::kDone);
    EXPECT_EQ(detected->response_code(again), std::to_string(c.status));
    EXPECT_EQ(detected->error_code(c.kind), std::to_string(c.status));
    EXPECT_EQ(m.request_id, 44u);
    EXPECT_EQ(m.kind, MessageKind::kException);
    // The body is exactly the message string, like the Java status-60 capture.
    hessian2::Reader r(std::span<const uint8_t>(out).subspan(kHeaderSize));
    std::string text;
    ASSERT_TRUE(r.read_string(text));
    EXPECT_EQ(text, "no route for sayHello");
  }
}

TEST(DubboCodec, HeartbeatAnsweredOnlyWhenTwoWay) {
  Bytes hb = read_file("java_heartbeat_req.bin");
  DubboCodec c;
  Message m;
  ASSERT_EQ(c.decode(hb, m).status, DecodeStatus::kDone);
  Bytes out;
  ASSERT_TRUE(c.encode_heartbeat_reply(m, out));
  Message r;
  ASSERT_EQ(DubboCodec().decode(out, r).status, DecodeStatus::kDone);
  EXPECT_EQ(r.kind, MessageKind::kHeartbeatResponse);
  EXPECT_EQ(r.request_id, 43u);
  hb[2] &= uint8_t(~kFlagTwoWay);
  ASSERT_EQ(c.decode(hb, m).status, DecodeStatus::kDone);
  EXPECT_FALSE(c.encode_heartbeat_reply(m, out));
}

// Dubbo's READONLY event as a Java provider sends it on shutdown: a one-way
// event request whose data is the string "R". Other event data is a
// heartbeat; a response never means going away.
TEST(DubboCodec, ReadonlyEventMeansTheProviderIsGoingAway) {
  auto event = [](uint8_t flags, const std::string& data) {
    Bytes body;
    hessian2::write_string(body, data);
    Bytes f = {0xda, 0xbb, flags, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, uint8_t(body.size())};
    f.insert(f.end(), body.begin(), body.end());
    return f;
  };
  DubboCodec c;
  Message m;
  ASSERT_EQ(c.decode(event(kFlagRequest | kFlagEvent | kHessian2, kReadonlyEvent), m).status, DecodeStatus::kDone);
  EXPECT_EQ(m.kind, MessageKind::kGoingAway);
  EXPECT_FALSE(codecs::is_request(m.kind)) << "never routed";
  ASSERT_EQ(c.decode(event(kFlagRequest | kFlagEvent | kHessian2, "X"), m).status, DecodeStatus::kDone);
  EXPECT_EQ(m.kind, MessageKind::kHeartbeatRequest);
  ASSERT_EQ(c.decode(event(kFlagEvent | kHessian2, kReadonlyEvent), m).status, DecodeStatus::kDone);
  EXPECT_EQ(m.kind, MessageKind::kHeartbeatResponse);
  // The Java heartbeat (data null) stays a heartbeat.
  ASSERT_EQ(c.decode(read_file("java_heartbeat_req.bin"), m).status, DecodeStatus::kDone);
  EXPECT_EQ(m.kind, MessageKind::kHeartbeatRequest);
}

// A hessian2 two-way request frame (id 7) built by hand: method, descriptor,
// raw argument bytes, attachments {group: g1}.
Bytes request_frame(const std::string& method, const std::string& descriptor, const Bytes& args) {
  Bytes body;
  hessian2::write_string(body, "2.0.2");
  hessian2::write_string(body, "com.example.DemoService");
  hessian2::write_string(body, "1.0.0");
  hessian2::write_string(body, method);
  hessian2::write_string(body, descriptor);
  body.insert(body.end(), args.begin(), args.end());
  body.push_back('H');
  hessian2::write_string(body, "group");
  hessian2::write_string(body, "g1");
  body.push_back('Z');
  Bytes f = {0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 7};
  for (int s = 24; s >= 0; s -= 8) f.push_back(uint8_t(body.size() >> s));
  f.insert(f.end(), body.begin(), body.end());
  return f;
}

Bytes request_with_args(const Bytes& args, const std::string& descriptor) {
  return request_frame("sayHello", descriptor, args);
}

TEST(DubboCodec, GenericInvokeRoutesByTheRealMethod) {
  Bytes args;
  hessian2::write_string(args, "realMethod");
  args.push_back(0x71);  // typed fixed-length list of 1
  hessian2::write_string(args, "[string");
  hessian2::write_string(args, "java.lang.String");
  args.push_back(0x79);  // untyped fixed-length list of 1
  hessian2::write_string(args, "hi");
  Bytes f = request_frame("$invoke", "Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;", args);
  Message m;
  auto r = DubboCodec().decode(f, m);
  ASSERT_EQ(r.status, DecodeStatus::kDone) << r.error;
  EXPECT_EQ(md(m, "method"), "realMethod");
  EXPECT_EQ(md(m, "group"), "g1");
}

struct Hostile {
  const char* name;
  Bytes args;
  const char* descriptor;
  const char* error;
};

Bytes deep_lists(int depth) {
  Bytes b;
  for (int i = 0; i < depth; ++i) b.push_back(0x79);  // list of one element, nested
  b.push_back('N');
  return b;
}

class HostileBody : public ::testing::TestWithParam<Hostile> {};

TEST_P(HostileBody, IsADecodeErrorNotACrash) {
  const auto& h = GetParam();
  Bytes f = request_with_args(h.args, h.descriptor);
  Message m;
  auto r = DubboCodec().decode(f, m);
  ASSERT_EQ(r.status, DecodeStatus::kError) << h.name;
  EXPECT_NE(r.error.find(h.error), std::string::npos) << h.name << ": " << r.error;
}

INSTANTIATE_TEST_SUITE_P(
    Dubbo, HostileBody,
    ::testing::Values(
        Hostile{"deep_nesting", deep_lists(500), "Ljava/lang/Object;", "nesting"},
        Hostile{"huge_list", {0x58, 'I', 0x7f, 0xff, 0xff, 0xff}, "Ljava/lang/Object;", "exceeds the body"},
        Hostile{"huge_string", {'S', 0xff, 0xff, 'a'}, "Ljava/lang/String;", "string"},
        Hostile{"bad_utf8", {0x03, 'a', 0xff, 'b'}, "Ljava/lang/String;", "UTF-8"},
        Hostile{"undefined_class", {0x60}, "Ljava/lang/Object;", "undefined class"},
        Hostile{"undefined_ref", {'Q', 0x95}, "Ljava/lang/Object;", "undefined value"},
        Hostile{"unknown_tag", {0x40}, "Ljava/lang/Object;", "unknown Hessian tag"},
        Hostile{"bad_descriptor", {}, "Ljava/lang/String", "descriptor"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(DubboCodec, OversizedBodyAndWrongMagic) {
  Bytes big = {0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x10, 0, 0, 0};
  Message m;
  auto r = DubboCodec().decode(big, m);
  EXPECT_EQ(r.status, DecodeStatus::kError);
  EXPECT_NE(r.error.find("exceeds the limit"), std::string::npos);
  Bytes junk = {'G', 'E', 'T'};
  EXPECT_EQ(DubboCodec().decode(junk, m).status, DecodeStatus::kError);
}

TEST(Hessian2, LongStringsChunkAndReadBack) {
  for (size_t n : {0u, 31u, 32u, 1023u, 1024u, 0x8000u, 0x8001u, 100000u}) {
    std::string s(n, 'x');
    if (n > 10) s.replace(5, 3, "\xe2\x82\xac");  // a 3-byte character (one UTF-16 unit)
    Bytes b;
    hessian2::write_string(b, s);
    hessian2::Reader r(b);
    std::string back;
    ASSERT_TRUE(r.read_string(back)) << n << ": " << r.error();
    EXPECT_EQ(back, s) << n;
    EXPECT_TRUE(r.at_end()) << n;
  }
}

TEST(Sniff, RecognisesBothProtocols) {
  EXPECT_EQ(sniff_protocol(read_file("java_req_oneway.bin")), "dubbo");
  Bytes thrift = {0, 0, 0, 10, 0x80, 0x01, 0, 1};
  EXPECT_EQ(sniff_protocol(thrift), "thrift");
  Bytes http = {'G', 'E', 'T', ' ', '/', ' '};
  EXPECT_EQ(sniff_protocol(http), "unknown");
  EXPECT_EQ(sniff_protocol(Bytes{0xda}), "");
}

TEST(DecodeStream, ReportsOffsetsAndStopsAtGarbage) {
  Bytes b = read_file("java_resp_flag1.bin");
  Bytes two = b;
  two.insert(two.end(), b.begin(), b.end());
  two.push_back(0x00);
  auto r = decode_stream(two, "auto");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.messages, 2u);
  EXPECT_NE(r.lines.find("\"offset\":24,"), std::string::npos) << r.lines;
  EXPECT_NE(r.lines.find("\"offset\":48,\"error\""), std::string::npos) << r.lines;
}

}  // namespace
}  // namespace metanode::codecs::dubbo

namespace metanode::codecs::dubbo {
namespace {

TEST(DubboCodec, MalformedTwoWayRequestGetsBadRequestReply) {
  Bytes f = request_with_args({0x40}, "Ljava/lang/Object;");  // unknown tag in the argument
  DubboCodec c;
  Message m;
  auto r = c.decode(f, m);
  ASSERT_EQ(r.status, DecodeStatus::kError);
  Bytes out;
  ASSERT_TRUE(c.encode_decode_error(f, r.error, out));
  Message reply;
  ASSERT_EQ(DubboCodec().decode(out, reply).status, DecodeStatus::kDone);
  EXPECT_EQ(wire_status(reply.wire), kBadRequest);
  EXPECT_EQ(reply.request_id, 7u);
  Bytes junk = {'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P', '/', '1', '.', '1', '\r', '\n', 'x'};
  EXPECT_FALSE(c.encode_decode_error(junk, "x", out)) << "no request id to answer";
}

// On an "auto" port the recognised codec answers the malformed request too.
TEST(DubboCodec, AutoCodecForwardsTheMalformedRequestReply) {
  Bytes f = request_with_args({0x40}, "Ljava/lang/Object;");
  auto c = make_codec(Protocol::kAuto);
  Message m;
  auto r = c->decode(f, m);
  ASSERT_EQ(r.status, DecodeStatus::kError);
  Bytes out;
  ASSERT_TRUE(c->encode_decode_error(f, r.error, out));
  Message reply;
  ASSERT_EQ(DubboCodec().decode(out, reply).status, DecodeStatus::kDone);
  EXPECT_EQ(wire_status(reply.wire), kBadRequest);
}

}  // namespace
}  // namespace metanode::codecs::dubbo
