// The byte-level half both connection kinds share: a growable read buffer
// that yields whole decoded messages, and a write queue flushed with one
// gathered write. Driven from the owning worker's thread only.
#pragma once

#include <sys/mman.h>

#include <boost/asio/buffer.hpp>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "metanode/codecs/codec.h"

namespace metanode::core {

struct ActiveRequest;

// Read buffers come from their own pages (mmap), not the malloc heap:
// 10,000 connections parking at once free 160 MB that, as heap chunks
// between small live objects, would stay resident; pages go straight back.
template <class T>
struct PageAllocator {
  using value_type = T;
  PageAllocator() = default;
  template <class U>
  PageAllocator(const PageAllocator<U>&) {}
  T* allocate(size_t n) {
    void* p = ::mmap(nullptr, n * sizeof(T), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();  // as operator new would: out of memory
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) { ::munmap(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const PageAllocator<U>&) const { return true; }
};
using ReadBuffer = std::vector<uint8_t, PageAllocator<uint8_t>>;

// Read buffers of the standard size, recycled within one worker: a
// connection holds one only while it has bytes to read or decode, so an
// idle connection costs no buffer and a busy one no allocation per read.
class BufferPool {
 public:
  static constexpr size_t kSize = 16384;
  ReadBuffer get() {
    if (free_.empty()) return ReadBuffer(kSize);
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void put(ReadBuffer b) {
    // Grown ones (a large message) and the surplus are unmapped.
    if (b.size() == kSize && free_.size() < kMaxFree) free_.push_back(std::move(b));
  }

 private:
  static constexpr size_t kMaxFree = 16;  // 256 KiB per worker at most
  std::vector<ReadBuffer> free_;
};

class MessageStream {
 public:
  MessageStream(uint32_t max_message, BufferPool* pool = nullptr)
      : cap_(size_t(max_message) + 64), pool_(pool) {}
  ~MessageStream() { release_buffer(); }

  // Where the next read goes; an empty buffer means a single message
  // outgrew the limit (the caller closes the connection).
  boost::asio::mutable_buffer read_space() {
    if (rbuf_.empty()) rbuf_ = pool_ ? pool_->get() : ReadBuffer(BufferPool::kSize);
    if (rlen_ == rbuf_.size()) {
      if (rbuf_.size() >= cap_) return {};
      rbuf_.resize(std::min(cap_, rbuf_.size() * 2));
    }
    return boost::asio::buffer(rbuf_.data() + rlen_, rbuf_.size() - rlen_);
  }
  // Gives the read buffer back when it holds nothing (an idle connection).
  void release_buffer() {
    if (rlen_ != 0 || rbuf_.empty()) return;
    if (pool_) pool_->put(std::move(rbuf_));
    rbuf_ = {};
  }

  // What is buffered but not yet decoded (for error replies).
  std::span<const uint8_t> pending_bytes() const { return {rbuf_.data(), rlen_}; }
  size_t buffered() const { return rlen_; }
  // The last decode() stopped at kMessagesPerPass with bytes left.
  bool yielded() const { return yielded_; }

  // At most this many messages per pass: one connection's pipelined burst
  // must not hold the worker's loop while other connections' requests
  // wait (a pass is ~1 µs a message); the caller continues from a posted
  // handler, behind what became ready meanwhile.
  static constexpr size_t kMessagesPerPass = 64;
  // Accounts `n` new bytes, then hands complete messages to
  // on_msg(Message&, Bytes frame) while keep_going() holds, at most
  // kMessagesPerPass (then yielded() is true); a message on_msg refuses
  // (returns false) stays buffered and ends the pass.
  // Returns the decode error, if the stream stopped making sense.
  template <class OnMsg, class KeepGoing>
  std::optional<std::string> decode(size_t n, codecs::Codec& codec, OnMsg&& on_msg,
                                    KeepGoing&& keep_going) {
    rlen_ += n;
    size_t off = 0, handed = 0;
    std::optional<std::string> err;
    yielded_ = false;
    while (keep_going() && off < rlen_) {
      if (handed == kMessagesPerPass) {
        yielded_ = true;
        break;
      }
      codecs::Message msg;
      auto r = codec.decode(std::span<const uint8_t>(rbuf_.data() + off, rlen_ - off), msg);
      if (r.status == codecs::DecodeStatus::kNeedMoreData) break;
      if (r.status == codecs::DecodeStatus::kError) {
        err = "at stream offset " + std::to_string(consumed_ + off) + ": " + r.error;
        break;
      }
      codecs::Bytes frame(rbuf_.begin() + ptrdiff_t(off), rbuf_.begin() + ptrdiff_t(off + msg.size));
      size_t size = msg.size;  // on_msg may move the message
      if (!on_msg(msg, std::move(frame))) break;
      off += size;
      ++handed;
    }
    if (off > 0) {
      std::memmove(rbuf_.data(), rbuf_.data() + off, rlen_ - off);
      rlen_ -= off;
      consumed_ += off;
    }
    return err;
  }

  // One queued write: bytes of its own, or a request whose frame lives in
  // the ActiveRequest (so a failed connection can hand it to a retry) and
  // the attempt it was queued for.
  struct Out {
    codecs::Bytes bytes;
    std::shared_ptr<ActiveRequest> req;
    uint32_t attempt = 0;
  };
  void push(codecs::Bytes b) {
    queued_bytes_ += b.size();
    wq_.push_back({std::move(b), nullptr});
  }
  // Bytes of their own queued or in flight (frames of requests not counted).
  size_t queued_bytes() const { return queued_bytes_; }
  void push(std::shared_ptr<ActiveRequest> r, uint32_t attempt) {
    wq_.push_back({{}, std::move(r), attempt});
  }
  bool empty() const { return wq_.empty() && writing_.empty(); }
  // Moves everything queued into flight; empty when there is nothing to
  // write. `frame_of(request, attempt)` gives a queued request's bytes, or
  // nullptr to drop the entry unsent.
  template <class FrameOf>
  std::vector<boost::asio::const_buffer> take(FrameOf&& frame_of) {
    std::vector<boost::asio::const_buffer> bufs;
    if (!writing_.empty() || wq_.empty()) return bufs;
    writing_.reserve(wq_.size());
    for (auto& o : wq_) {
      const codecs::Bytes* b = o.req ? frame_of(*o.req, o.attempt) : &o.bytes;
      if (!b) continue;
      bufs.emplace_back(boost::asio::buffer(*b));
      writing_.push_back(std::move(o));
    }
    wq_.clear();
    return bufs;
  }
  std::vector<boost::asio::const_buffer> take() {
    return take([](ActiveRequest&, uint32_t) -> const codecs::Bytes* { std::abort(); });
  }
  // The batch in flight is out; returns it for per-request bookkeeping.
  std::vector<Out> written() {
    std::vector<Out> done;
    done.swap(writing_);
    for (const auto& o : done) queued_bytes_ -= o.bytes.size();
    return done;
  }

 private:
  size_t cap_;
  BufferPool* pool_;
  ReadBuffer rbuf_;
  size_t queued_bytes_ = 0;
  size_t rlen_ = 0;
  uint64_t consumed_ = 0;
  bool yielded_ = false;
  std::vector<Out> wq_, writing_;
};

}  // namespace metanode::core
