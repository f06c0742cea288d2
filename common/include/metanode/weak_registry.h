// Shared state by key, alive while someone holds it: the first caller for a
// key makes the object, later callers get the same one, and a key nobody
// holds any more is forgotten (expired entries are swept whenever the map
// has doubled since the last sweep, so churn of keys stays bounded).
// Thread-safe; meant for lookups at configuration time, not per request.
#pragma once

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

namespace metanode {

template <class Key, class T>
class WeakRegistry {
 public:
  std::shared_ptr<T> get_or_make(const Key& key, const std::function<std::shared_ptr<T>()>& make) {
    std::lock_guard<std::mutex> l(mu_);
    if (map_.size() >= sweep_at_) {
      for (auto it = map_.begin(); it != map_.end();)
        it = it->second.expired() ? map_.erase(it) : std::next(it);
      sweep_at_ = std::max<size_t>(kMinSweep, map_.size() * 2);
    }
    auto& w = map_[key];
    auto p = w.lock();
    if (!p) w = p = make();
    return p;
  }
  std::shared_ptr<T> get_or_make(const Key& key) {
    return get_or_make(key, [] { return std::make_shared<T>(); });
  }
  // The live object for `key`, or null.
  std::shared_ptr<T> find(const Key& key) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : it->second.lock();
  }

 private:
  static constexpr size_t kMinSweep = 256;
  std::mutex mu_;
  size_t sweep_at_ = kMinSweep;
  std::map<Key, std::weak_ptr<T>> map_;
};

}  // namespace metanode
