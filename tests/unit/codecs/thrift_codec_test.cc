// Thrift codec: the corpus captured from Apache Thrift's own cross-language
// test (python3-thrift 0.17) must decode message by message to exactly its
// end; partial delivery never consumes; ids rewrite in every wire form.
#include <gtest/gtest.h>

#include <dirent.h>

#include <fstream>
#include <sstream>

#include "metanode/codecs/thrift.h"

namespace metanode::codecs::thrift {
namespace {

std::string corpus_dir() { return METANODE_CORPUS_DIR "/thrift"; }

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<std::string> corpus_files(const std::string& prefix) {
  std::vector<std::string> out;
  DIR* d = opendir(corpus_dir().c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind(prefix, 0) == 0) out.push_back(n);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

struct Decoded {
  std::vector<Message> msgs;
  size_t consumed = 0;
  std::string error;
};

Decoded decode_all(const Bytes& b) {
  ThriftCodec c;
  Decoded d;
  while (d.consumed < b.size()) {
    Message m;
    auto r = c.decode(std::span<const uint8_t>(b).subspan(d.consumed), m);
    if (r.status != DecodeStatus::kDone) {
      d.error = r.status == DecodeStatus::kError ? r.error : "need more data at end";
      break;
    }
    d.consumed += m.size;
    d.msgs.push_back(std::move(m));
  }
  return d;
}

// Every file of a wire form decodes to its exact end; requests carry the
// method, replies too; file names say the transport and protocol.
class CorpusTest : public ::testing::TestWithParam<std::tuple<std::string, Transport, Protocol>> {};

TEST_P(CorpusTest, EveryFileDecodesToItsEnd) {
  auto [prefix, transport, protocol] = GetParam();
  auto files = corpus_files(prefix + ".");
  ASSERT_FALSE(files.empty()) << "no corpus files for " << prefix << " in " << corpus_dir();
  size_t messages = 0;
  for (const auto& f : files) {
    Bytes b = read_file(corpus_dir() + "/" + f);
    Decoded d = decode_all(b);
    EXPECT_EQ(d.consumed, b.size()) << f << ": " << d.error;
    ASSERT_FALSE(d.msgs.empty()) << f;
    bool c2s = f.find(".c2s") != std::string::npos;
    for (const auto& m : d.msgs) {
      EXPECT_EQ(wire_transport(m.wire), transport) << f;
      EXPECT_EQ(wire_protocol(m.wire), protocol) << f;
      ASSERT_NE(m.metadata.get("method"), nullptr) << f;
      EXPECT_FALSE(m.metadata.get("method")->empty()) << f;
      if (c2s)
        EXPECT_TRUE(is_request(m.kind)) << f;
      else
        EXPECT_FALSE(is_request(m.kind)) << f;
    }
    messages += d.msgs.size();
  }
  RecordProperty("messages", int(messages));
}

INSTANTIATE_TEST_SUITE_P(
    Thrift, CorpusTest,
    ::testing::Values(
        std::make_tuple("pytest_binary_framed", Transport::kFramed, Protocol::kBinary),
        std::make_tuple("pytest_binary_buffered", Transport::kUnframed, Protocol::kBinary),
        std::make_tuple("pytest_compact_framed", Transport::kFramed, Protocol::kCompact),
        std::make_tuple("pytest_compact_buffered", Transport::kUnframed, Protocol::kCompact),
        std::make_tuple("pytest_header_buffered", Transport::kHeader, Protocol::kBinary),
        std::make_tuple("pytest_multi_framed", Transport::kFramed, Protocol::kBinary),
        std::make_tuple("pytest_multic_buffered", Transport::kUnframed, Protocol::kCompact),
        std::make_tuple("pytest_multih_buffered", Transport::kHeader, Protocol::kBinary)),
    [](const auto& info) { return std::get<0>(info.param); });

TEST(ThriftCorpus, FramedBinaryFirstCallIsTestBinary) {
  Bytes b = read_file(corpus_dir() + "/pytest_binary_framed.1.c2s");
  Decoded d = decode_all(b);
  ASSERT_EQ(d.msgs.size(), 1u) << d.error;
  EXPECT_EQ(*d.msgs[0].metadata.get("method"), "testBinary");
  EXPECT_EQ(d.msgs[0].kind, MessageKind::kRequest);
  EXPECT_EQ(d.msgs[0].request_id, 0u);  // python clients always send seqid 0
  EXPECT_EQ(d.msgs[0].size, b.size());
}

TEST(ThriftCorpus, MultiplexedNamesSplitIntoServiceAndMethod) {
  Bytes b = read_file(corpus_dir() + "/pytest_multi_framed.3.c2s");
  Decoded d = decode_all(b);
  ASSERT_FALSE(d.msgs.empty()) << d.error;
  ASSERT_NE(d.msgs[0].metadata.get("service"), nullptr);
  EXPECT_EQ(*d.msgs[0].metadata.get("service"), "ThriftTest");
  EXPECT_EQ(*d.msgs[0].metadata.get("method"), "testByte");
}

TEST(ThriftCorpus, THeaderInfoHeadersBecomeMetadata) {
  Bytes b = read_file(corpus_dir() + "/py_theader_binary_request_with_header.c2s");
  Decoded d = decode_all(b);
  ASSERT_EQ(d.msgs.size(), 1u) << d.error;
  ASSERT_NE(d.msgs[0].metadata.get("x-route"), nullptr);
  EXPECT_EQ(*d.msgs[0].metadata.get("x-route"), "blue");
  EXPECT_EQ(*d.msgs[0].metadata.get("method"), "add");
}

// Partial delivery: every prefix of a message is "need more" and consumes
// nothing; the full message then decodes.
TEST(ThriftCodec, EveryPrefixNeedsMoreData) {
  for (const char* f : {"pytest_binary_framed.1.c2s", "pytest_compact_buffered.3.c2s",
                        "pytest_binary_buffered.5.c2s", "pytest_header_buffered.1.c2s"}) {
    Bytes b = read_file(corpus_dir() + "/" + f);
    Decoded whole = decode_all(b);
    ASSERT_FALSE(whole.msgs.empty()) << f;
    size_t first = whole.msgs[0].size;
    for (size_t n = 0; n < first; ++n) {
      ThriftCodec c;
      Message m;
      auto r = c.decode(std::span<const uint8_t>(b.data(), n), m);
      ASSERT_EQ(r.status, DecodeStatus::kNeedMoreData) << f << " prefix " << n << ": " << r.error;
    }
  }
}

TEST(ThriftCodec, RewritesSeqidInEveryWireForm) {
  for (const char* f : {"pytest_binary_framed.1.c2s", "pytest_compact_framed.1.c2s",
                        "pytest_compact_buffered.1.c2s", "pytest_header_buffered.1.c2s",
                        "pytest_binary_buffered.1.c2s"}) {
    Bytes b = read_file(corpus_dir() + "/" + f);
    ThriftCodec c;
    Message m;
    ASSERT_EQ(c.decode(b, m).status, DecodeStatus::kDone) << f;
    Bytes frame(b.begin(), b.begin() + ptrdiff_t(m.size));
    for (uint64_t id : {1ull, 300ull, 70000ull, 0x7ffffffeull, 5ull}) {
      ASSERT_TRUE(c.set_request_id(frame, m, id)) << f;
      EXPECT_EQ(m.request_id, id) << f << ": the message is updated too";
      ThriftCodec again;
      Message m2;
      ASSERT_EQ(again.decode(frame, m2).status, DecodeStatus::kDone) << f << " id " << id;
      EXPECT_EQ(m2.request_id, id) << f;
      EXPECT_EQ(m2.size, frame.size()) << f;
      EXPECT_EQ(*m2.metadata.get("method"), *m.metadata.get("method"));
      m = m2;
    }
  }
}

TEST(ThriftCodec, AppExceptionInEveryWireFormDecodesAsException) {
  for (auto t : {Transport::kFramed, Transport::kUnframed, Transport::kHeader}) {
    for (auto p : {Protocol::kBinary, Protocol::kCompact, Protocol::kBinaryNonStrict}) {
      if (t == Transport::kHeader && p == Protocol::kBinaryNonStrict) continue;
      Bytes out;
      ThriftCodec::encode_app_exception(pack_wire(t, p), "sayHello", 42, kAppUnknownMethod,
                                        "no route", out);
      ThriftCodec c;
      Message m;
      auto r = c.decode(out, m);
      ASSERT_EQ(r.status, DecodeStatus::kDone)
          << transport_name(t) << "/" << protocol_name(p) << ": " << r.error;
      EXPECT_EQ(m.kind, MessageKind::kException);
      EXPECT_EQ(m.request_id, 42u);
      EXPECT_EQ(m.size, out.size());
      EXPECT_EQ(*m.metadata.get("method"), "sayHello");
    }
  }
}

TEST(ThriftCodec, GarbageIsAnErrorNotACrash) {
  ThriftCodec c;
  Message m;
  Bytes junk = {'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P', '/', '1', '.', '1', '\r', '\n'};
  EXPECT_EQ(c.decode(junk, m).status, DecodeStatus::kError);
}

TEST(ThriftCodec, OversizedFrameIsAnError) {
  Limits l;
  l.max_message_bytes = 1024;
  ThriftCodec c(l);
  Bytes b = {0x00, 0x10, 0x00, 0x00, 0x80, 0x01, 0x00, 0x01};
  Message m;
  auto r = c.decode(b, m);
  EXPECT_EQ(r.status, DecodeStatus::kError);
  EXPECT_NE(r.error.find("out of range"), std::string::npos) << r.error;
}

TEST(ThriftCodec, DeepNestingIsAnError) {
  // Unframed binary: a call whose argument struct nests 1000 structs deep.
  Bytes b = {0x80, 0x01, 0x00, 0x01, 0, 0, 0, 1, 'm', 0, 0, 0, 0};
  for (int i = 0; i < 1000; ++i) {
    b.push_back(12);  // T_STRUCT field
    b.push_back(0);
    b.push_back(1);
  }
  ThriftCodec c;
  Message m;
  auto r = c.decode(b, m);
  EXPECT_EQ(r.status, DecodeStatus::kError);
  EXPECT_NE(r.error.find("nesting"), std::string::npos) << r.error;
}

TEST(ThriftCodec, FrameShorterThanItsHeaderIsAnError) {
  // Frame says 6 bytes; the binary header inside needs more.
  Bytes b = {0, 0, 0, 6, 0x80, 0x01, 0x00, 0x01, 0, 0};
  ThriftCodec c;
  Message m;
  EXPECT_EQ(c.decode(b, m).status, DecodeStatus::kError);
}

}  // namespace
}  // namespace metanode::codecs::thrift

namespace metanode::codecs::thrift {
namespace {

TEST(ThriftCodec, THeaderMutationAddsAndReplacesInfoHeaders) {
  Bytes b = read_file(corpus_dir() + "/py_theader_binary_request_with_header.c2s");
  ThriftCodec c;
  Message m;
  ASSERT_EQ(c.decode(b, m).status, DecodeStatus::kDone);
  Bytes f(b.begin(), b.begin() + ptrdiff_t(m.size));
  ASSERT_TRUE(c.mutate(f, m, {{"x-route", "green"}, {"x-metanode", "v1"}}));
  EXPECT_EQ(*m.metadata.get("x-route"), "green");
  EXPECT_EQ(*m.metadata.get("x-metanode"), "v1");
  EXPECT_EQ(*m.metadata.get("method"), "add");
  ASSERT_TRUE(c.set_request_id(f, m, 77));
  ThriftCodec again;
  Message m2;
  ASSERT_EQ(again.decode(f, m2).status, DecodeStatus::kDone);
  EXPECT_EQ(m2.request_id, 77u);
  EXPECT_EQ(m2.size, f.size());
}

TEST(ThriftCodec, MutationRefusedWithoutAHeaderTransport) {
  Bytes b = read_file(corpus_dir() + "/pytest_binary_framed.1.c2s");
  ThriftCodec c;
  Message m;
  ASSERT_EQ(c.decode(b, m).status, DecodeStatus::kDone);
  Bytes f = b;
  EXPECT_FALSE(c.mutate(f, m, {{"k", "v"}}));
  EXPECT_EQ(f, b);
}

}  // namespace
}  // namespace metanode::codecs::thrift

namespace metanode::codecs::thrift {
namespace {

TEST(ThriftCodec, MalformedCallGetsProtocolErrorReply) {
  // Unframed binary call "m", seqid 9, whose argument struct has a bad type.
  Bytes b = {0x80, 0x01, 0x00, 0x01, 0, 0, 0, 1, 'm', 0, 0, 0, 9, 0x42, 0, 1};
  ThriftCodec c;
  Message m;
  auto r = c.decode(b, m);
  ASSERT_EQ(r.status, DecodeStatus::kError);
  Bytes out;
  ASSERT_TRUE(c.encode_decode_error(b, r.error, out));
  ThriftCodec back;
  Message reply;
  ASSERT_EQ(back.decode(out, reply).status, DecodeStatus::kDone);
  EXPECT_EQ(reply.kind, MessageKind::kException);
  EXPECT_EQ(reply.request_id, 9u);
}

}  // namespace
}  // namespace metanode::codecs::thrift
