// Every captured stream, delivered one byte at a time the way a slow socket
// would, decodes to the same messages as when delivered whole: no partial
// frame is ever consumed, no message is split or merged. Runs every file of
// the vendored corpus through the auto-detecting codec.
#include <dirent.h>
#include <gtest/gtest.h>

#include <fstream>

#include "metanode/codecs/codec.h"
#include "metanode/codecs/inspect.h"

namespace metanode::codecs {
namespace {

std::vector<std::string> corpus_files() {
  std::vector<std::string> out;
  for (const char* sub : {"thrift", "dubbo"}) {
    std::string dir = std::string(METANODE_CORPUS_DIR) + "/" + sub;
    DIR* d = opendir(dir.c_str());
    if (!d) continue;
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') out.push_back(dir + "/" + e->d_name);
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string summary(const Message& m) {
  return message_json("", "", m, 0);
}

class ByteAtATime : public ::testing::TestWithParam<std::string> {};

TEST_P(ByteAtATime, SameMessagesAsWhole) {
  std::ifstream in(GetParam(), std::ios::binary);
  Bytes all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(all.empty());

  std::vector<std::string> whole;
  {
    auto c = make_codec(Protocol::kAuto);
    size_t off = 0;
    while (off < all.size()) {
      Message m;
      auto r = c->decode(std::span<const uint8_t>(all).subspan(off), m);
      ASSERT_EQ(r.status, DecodeStatus::kDone) << r.error;
      whole.push_back(summary(m));
      off += m.size;
    }
  }

  std::vector<std::string> trickled;
  auto c = make_codec(Protocol::kAuto);
  Bytes buf;
  for (uint8_t byte : all) {
    buf.push_back(byte);
    for (;;) {
      Message m;
      auto r = c->decode(buf, m);
      ASSERT_NE(r.status, DecodeStatus::kError) << "after " << buf.size() << " bytes: " << r.error;
      if (r.status == DecodeStatus::kNeedMoreData) break;
      trickled.push_back(summary(m));
      buf.erase(buf.begin(), buf.begin() + ptrdiff_t(m.size));
    }
  }
  EXPECT_TRUE(buf.empty());
  EXPECT_EQ(trickled, whole);
}

INSTANTIATE_TEST_SUITE_P(Corpus, ByteAtATime, ::testing::ValuesIn(corpus_files()),
                         [](const auto& info) {
                           std::string n = info.param.substr(info.param.rfind('/') + 1);
                           for (auto& ch : n)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace metanode::codecs
