#include "metanode/core/pod_watcher.h"

#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <set>

namespace metanode::core {

PodWatcher::PodWatcher(bpf::Maps& maps, std::string dir, std::string prefix, CookieFn cookie)
    : maps_(maps), dir_(std::move(dir)), prefix_(std::move(prefix)), cookie_(std::move(cookie)) {}

PodWatcher::Change PodWatcher::sync() {
  Change ch;
  std::set<std::string> seen;
  if (DIR* d = opendir(dir_.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == ".." || name.rfind(prefix_, 0) != 0) continue;
      std::string path = dir_ + "/" + name;
      struct stat st {};
      if (stat(path.c_str(), &st) != 0) continue;
      // The inode tells a recreated namespace of the same name apart.
      std::string id = name + ":" + std::to_string(st.st_ino);
      seen.insert(id);
      if (by_file_.count(id)) continue;
      auto cookie = cookie_(path);
      if (!cookie) {
        ++ch.failed;  // not a namespace (yet): try again next pass
        seen.erase(id);
        continue;
      }
      auto pods = maps_.pods();
      auto existing = pods ? pods->find(*cookie) : std::map<uint64_t, uint32_t>::iterator();
      bool opted_out = pods && existing != pods->end() && (existing->second & bpf::kPodOptOut);
      if (!opted_out) {
        if (auto r = maps_.set_pod(*cookie, bpf::kPodManaged); !r) {
          spdlog::warn("pod {}: {}", path, r.error().message());
          ++ch.failed;
          seen.erase(id);
          continue;
        }
      }
      by_file_[id] = *cookie;
      ++ch.added;
      spdlog::info("pod {} (netns cookie {}) {}", path, *cookie, opted_out ? "opted out" : "managed");
    }
    closedir(d);
  }
  for (auto it = by_file_.begin(); it != by_file_.end();) {
    if (seen.count(it->first)) {
      ++it;
      continue;
    }
    auto pods = maps_.pods();
    bool opted_out = pods && pods->count(it->second) && ((*pods)[it->second] & bpf::kPodOptOut);
    if (!opted_out) (void)maps_.remove_pod(it->second);
    spdlog::info("pod {} gone", it->first);
    it = by_file_.erase(it);
    ++ch.removed;
  }
  return ch;
}

}  // namespace metanode::core
