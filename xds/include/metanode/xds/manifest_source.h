// Istio/Aeraki manifests in a directory as a configuration source: read and
// translated whole, watched with inotify, re-applied within a second of an
// edit. metanoded --config-dir and metanode-xds share it.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "metanode/xds/config_source.h"
#include "metanode/xds/k8s_config.h"

namespace metanode::xds {

// Reads and translates every manifest in `dir` (files unchanged since the
// translator's last call are not parsed again).
Result<Resources> load_manifest_dir(const std::string& dir, ManifestTranslator& t);

// A stable content hash (FNV-1a) of bytes, in hex: a resource's version is
// that of its deterministic_bytes.
std::string content_hash(std::string_view bytes);
// A message's bytes, the same for the same message every time.
std::string deterministic_bytes(const google::protobuf::Message& m);
// The version of a manifest directory's state: a hash of its files' names
// and bytes (an edit that changes no resource still makes a new version;
// applying it regenerates and compiles only the edited files' hosts).
std::string manifests_version(const std::vector<ManifestFile>& files);

// Calls `on_change` from its own thread once edits in `dir` have settled
// for `settle` (an editor's write-rename or a ConfigMap's symlink swap is
// several events). Nothing is polled.
class DirWatcher {
 public:
  DirWatcher(std::string dir, std::function<void()> on_change,
             std::chrono::milliseconds settle = std::chrono::milliseconds(100));
  ~DirWatcher();
  DirWatcher(const DirWatcher&) = delete;
  DirWatcher& operator=(const DirWatcher&) = delete;
  Result<void> start();
  void stop();

 private:
  void run();
  std::string dir_;
  std::function<void()> on_change_;
  std::chrono::milliseconds settle_;
  int inotify_fd_ = -1;
  int stop_fd_ = -1;  // eventfd
  std::thread thread_;
};

class ManifestDirSource : public ConfigSource {
 public:
  explicit ManifestDirSource(std::string dir);
  ~ManifestDirSource() override;
  Result<void> start(ConfigSink& sink) override;
  void stop() override;
  bool synced() const override { return synced_.load(); }
  std::string waiting_for() const override { return "manifests from " + dir_; }
  std::string status_json() const override;
  std::string metrics_text() const override;

 private:
  void reload();
  std::string dir_;
  ManifestTranslator translator_;  // used by start() and then the watcher thread only
  ConfigSink* sink_ = nullptr;
  DirWatcher watcher_;
  std::atomic<bool> synced_{false};
  mutable std::mutex mu_;  // guards the fields below
  std::string version_;    // content version of the last applied state
  int64_t last_update_unix_ = 0;
  std::string last_error_;
  uint64_t updates_ = 0, rejects_ = 0;
};

}  // namespace metanode::xds
