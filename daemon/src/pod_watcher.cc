#include "metanode/core/pod_watcher.h"

#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <set>

namespace metanode::core {

PodWatcher::PodWatcher(bpf::Maps& maps, std::string dir, std::string prefix, ProbeFn probe,
                       PolicyFn policy)
    : maps_(maps), dir_(std::move(dir)), prefix_(std::move(prefix)), probe_(std::move(probe)),
      policy_(std::move(policy)) {}

// Opted-out entries belong to whoever opted them out.
bool PodWatcher::set_managed(Entry& e, bool want) {
  if (e.managed == want) return false;
  auto pods = maps_.pods();
  auto it = pods ? pods->find(e.info.cookie) : std::map<uint64_t, uint32_t>::iterator();
  bool opted_out = pods && it != pods->end() && (it->second & bpf::kPodOptOut);
  if (want) {
    if (opted_out) return false;
    if (auto r = maps_.set_pod(e.info.cookie, bpf::kPodManaged); !r) {
      spdlog::warn("pod {}: {}", e.path, r.error().message());
      return false;
    }
  } else if (!opted_out) {
    (void)maps_.remove_pod(e.info.cookie);
  }
  e.managed = want;
  return true;
}

PodWatcher::Change PodWatcher::sync() {
  Change ch;
  std::set<std::string> seen;
  if (DIR* d = opendir(dir_.c_str())) {
    while (dirent* de = readdir(d)) {
      std::string name = de->d_name;
      if (name == "." || name == ".." || name.rfind(prefix_, 0) != 0) continue;
      std::string path = dir_ + "/" + name;
      struct stat st {};
      if (stat(path.c_str(), &st) != 0) continue;
      // The inode tells a recreated namespace of the same name apart.
      std::string id = name + ":" + std::to_string(st.st_ino);
      auto it = by_file_.find(id);
      // A sandbox's addresses come a moment after its file (CNI): probed
      // again while it has none and a policy wants to see them.
      if (it == by_file_.end() || (policy_ && it->second.info.ipv4.empty())) {
        auto info = probe_(path);
        if (!info) {
          ++ch.failed;  // not a namespace (yet): try again next pass
          continue;
        }
        if (it == by_file_.end()) {
          it = by_file_.emplace(id, Entry{path, std::move(*info), false}).first;
          ++ch.seen;
        } else if (!info->ipv4.empty()) {
          it->second.info.ipv4 = std::move(info->ipv4);
          ++ch.seen;
        }
      }
      seen.insert(id);
    }
    closedir(d);
  }
  for (auto it = by_file_.begin(); it != by_file_.end();) {
    Entry& e = it->second;
    if (!seen.count(it->first)) {
      ++ch.seen;
      if (set_managed(e, false)) ++ch.removed;
      spdlog::info("pod netns {} gone", e.path);
      it = by_file_.erase(it);
      continue;
    }
    bool want = !policy_ || policy_(e.info);
    if (set_managed(e, want)) {
      ++(want ? ch.added : ch.removed);
      spdlog::info("pod netns {} (cookie {}) {}", e.path, e.info.cookie, want ? "managed" : "no longer managed");
    }
    ++it;
  }
  return ch;
}

}  // namespace metanode::core
