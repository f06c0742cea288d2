// Maglev (Eisenbud et al., NSDI 2016): a lookup table of prime size M that
// every host fills by its own permutation (offset + j * skip mod M), taking
// turns so each gets a share of slots proportional to its weight. Lookups
// are one array index; removing a host changes few slots beyond its own.
// An unusable host's slot passes to the next slot's host.
#include "internal.h"

namespace metanode::lb::detail {
namespace {

bool is_prime(uint64_t n) {
  if (n < 2) return false;
  for (uint64_t d = 2; d * d <= n; ++d)
    if (n % d == 0) return false;
  return true;
}

class Maglev final : public LoadBalancer {
 public:
  Maglev(std::vector<uint32_t> w, const std::vector<uint64_t>& ids, uint64_t m) : draw_(w) {
    if (w.empty()) return;
    while (!is_prime(m) || m < w.size()) ++m;
    table_.assign(m, SIZE_MAX);
    std::vector<uint64_t> offset(w.size()), skip(w.size()), next(w.size(), 0);
    for (size_t i = 0; i < w.size(); ++i) {
      uint64_t h1 = mix64(fnv1a(&ids[i], sizeof ids[i]));
      uint64_t h2 = mix64(h1 ^ 0x5bd1e9955bd1e995ull);
      offset[i] = h1 % m;
      skip[i] = h2 % (m - 1) + 1;
    }
    uint32_t max_w = *std::max_element(w.begin(), w.end());
    // Weighted turns: a host's credit grows by weight/max per round and it
    // claims a slot for each whole unit of credit.
    std::vector<double> credit(w.size(), 0);
    uint64_t filled = 0;
    while (filled < m) {
      for (size_t i = 0; i < w.size() && filled < m; ++i) {
        credit[i] += double(w[i]) / max_w;
        if (credit[i] < 1.0) continue;
        credit[i] -= 1.0;
        uint64_t slot;
        do {
          slot = (offset[i] + next[i] * skip[i]) % m;
          ++next[i];
        } while (table_[slot] != SIZE_MAX);
        table_[slot] = i;
        ++filled;
      }
    }
  }

  std::optional<size_t> pick(const PickContext& ctx) override {
    if (table_.empty()) return std::nullopt;
    if (!ctx.hash) return draw_.draw_usable(ctx);
    size_t start = size_t(*ctx.hash % table_.size());
    for (size_t k = 0; k < 64 * draw_.size() && k < table_.size(); ++k) {
      size_t h = table_[(start + k) % table_.size()];
      if (usable(ctx, h)) return h;
    }
    for (size_t h = 0; h < draw_.size(); ++h)
      if (usable(ctx, h)) return h;
    return std::nullopt;
  }

 private:
  WeightedDraw draw_;
  std::vector<size_t> table_;
};

}  // namespace

std::unique_ptr<LoadBalancer> make_maglev(std::vector<uint32_t> w, std::vector<uint64_t> ids,
                                          uint64_t table_size) {
  return std::make_unique<Maglev>(std::move(w), ids, table_size);
}

}  // namespace metanode::lb::detail
