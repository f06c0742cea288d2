#include "metanode/xds/manifest_source.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "metanode/json.h"
#include "metanode/xds/k8s_config.h"

namespace metanode::xds {
namespace {

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

uint64_t fnv1a(uint64_t h, std::string_view s) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string hex(uint64_t h) {
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace

std::string deterministic_bytes(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::io::StringOutputStream zs(&out);
  google::protobuf::io::CodedOutputStream cs(&zs);
  cs.SetSerializationDeterministic(true);
  m.SerializeToCodedStream(&cs);
  cs.Trim();
  return out;
}

std::string content_hash(std::string_view bytes) { return hex(fnv1a(14695981039346656037ull, bytes)); }


std::string manifests_version(const std::vector<ManifestFile>& files) {
  uint64_t h = 14695981039346656037ull;
  for (const auto& f : files) {
    h = fnv1a(h, f.path);
    h = fnv1a(h, std::string_view("\0", 1));
    h = fnv1a(h, f.content);
    h = fnv1a(h, std::string_view("\0", 1));
  }
  return hex(h);
}

Result<Resources> load_manifest_dir(const std::string& dir, ManifestTranslator& t) {
  auto files = read_manifest_dir(dir);
  if (!files) return files.error();
  return t.translate(*files);
}

DirWatcher::DirWatcher(std::string dir, std::function<void()> on_change,
                       std::chrono::milliseconds settle)
    : dir_(std::move(dir)), on_change_(std::move(on_change)), settle_(settle) {}

DirWatcher::~DirWatcher() { stop(); }

Result<void> DirWatcher::start() {
  inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) return Error::errno_error("inotify_init1");
  // Every way a file in the directory can change, including a ConfigMap
  // mount's atomic swap of its ..data symlink.
  uint32_t mask = IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                  IN_ATTRIB | IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF;
  if (inotify_add_watch(inotify_fd_, dir_.c_str(), mask) < 0) {
    auto e = Error::errno_error("inotify_add_watch " + dir_);
    close(inotify_fd_);
    inotify_fd_ = -1;
    return e;
  }
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) return Error::errno_error("eventfd");
  thread_ = std::thread([this] { run(); });
  return Ok();
}

void DirWatcher::stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (inotify_fd_ >= 0) close(inotify_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
  inotify_fd_ = stop_fd_ = -1;
}

void DirWatcher::run() {
  bool dirty = false;
  alignas(inotify_event) char buf[8192];
  for (;;) {
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    // Quiet for `settle` after the last event: the edit is complete.
    int n = poll(fds, 2, dirty ? int(settle_.count()) : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("watching {}: poll: {}", dir_, strerror(errno));
      return;
    }
    if (fds[1].revents) return;
    if (n == 0) {
      dirty = false;
      on_change_();
      continue;
    }
    while (read(inotify_fd_, buf, sizeof(buf)) > 0) dirty = true;
  }
}

ManifestDirSource::ManifestDirSource(std::string dir)
    : dir_(dir), watcher_(dir, [this] { reload(); }) {}

ManifestDirSource::~ManifestDirSource() { stop(); }

Result<void> ManifestDirSource::start(ConfigSink& sink) {
  sink_ = &sink;
  auto files = read_manifest_dir(dir_);
  if (!files) return files.error();
  auto res = translator_.translate(*files);
  if (!res) return res.error();
  std::string v = manifests_version(*files);
  res->version = v;
  auto applied = sink.apply(std::move(res.value()), dir_, false);
  if (!applied.published)
    return Error::invalid(applied.rejects.empty() ? "configuration refused" : applied.rejects[0].reason);
  {
    std::lock_guard<std::mutex> l(mu_);
    version_ = v;
    last_update_unix_ = unix_now();
    ++updates_;
  }
  synced_ = true;
  return watcher_.start();
}

void ManifestDirSource::stop() { watcher_.stop(); }

void ManifestDirSource::reload() {
  auto files = read_manifest_dir(dir_);
  std::string v = files ? manifests_version(*files) : "";
  {
    std::lock_guard<std::mutex> l(mu_);
    if (files && v == version_) {  // touched, or edited back to what is live
      last_error_.clear();
      return;
    }
  }
  auto res = files ? translator_.translate(*files) : Result<Resources>(files.error());
  if (!res) {
    {
      std::lock_guard<std::mutex> l(mu_);
      last_error_ = res.error().message();
      ++rejects_;
    }
    sink_->refused(dir_, res.error());
    return;
  }
  res->version = v;
  auto applied = sink_->apply(std::move(res.value()), dir_, false);
  std::lock_guard<std::mutex> l(mu_);
  if (applied.published) {
    version_ = v;
    last_update_unix_ = unix_now();
    last_error_.clear();
    ++updates_;
  } else {
    last_error_ = applied.rejects.empty() ? "refused" : applied.rejects[0].str();
    ++rejects_;
  }
}

std::string ManifestDirSource::status_json() const {
  std::lock_guard<std::mutex> l(mu_);
  return "{\"source\":\"manifests\",\"dir\":" + json_string(dir_) + ",\"version\":" + json_string(version_) +
         ",\"last_update_unix\":" + std::to_string(last_update_unix_) +
         ",\"last_error\":" + json_string(last_error_) + "}";
}

std::string ManifestDirSource::metrics_text() const {
  std::lock_guard<std::mutex> l(mu_);
  return "metanode_xds_updates_total{type=\"manifests\"} " + std::to_string(updates_) +
         "\nmetanode_xds_rejects_total{type=\"manifests\"} " + std::to_string(rejects_) +
         "\nmetanode_xds_seconds_since_update{type=\"manifests\"} " +
         std::to_string(last_update_unix_ ? unix_now() - last_update_unix_ : -1) + "\n";
}

}  // namespace metanode::xds
