#include "metanode/kube/reflector.h"

#include <spdlog/spdlog.h>

#include <boost/json.hpp>

#include <cctype>

namespace metanode::kube {
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

std::string status_message(const std::string& body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (!ec)
    if (const json::object* o = v.if_object())
      if (auto it = o->find("message"); it != o->end())
        if (const json::string* s = it->value().if_string()) return std::string(*s);
  return body.substr(0, 200);
}

int64_t int_at(const json::object* o, std::string_view key) {
  if (!o) return 0;
  auto it = o->find(key);
  if (it == o->end()) return 0;
  if (const int64_t* i = it->value().if_int64()) return *i;
  if (const uint64_t* u = it->value().if_uint64()) return int64_t(*u);
  return 0;
}

std::string rv_of(const json::value& v) {
  if (const json::object* o = v.if_object())
    if (auto m = o->find("metadata"); m != o->end())
      if (const json::object* mo = m->value().if_object())
        if (auto r = mo->find("resourceVersion"); r != mo->end())
          if (const json::string* s = r->value().if_string()) return std::string(*s);
  return {};
}

// Query parameter values as URL-encoded text (continue tokens are opaque
// and may hold '=' or '/').
std::string url_encode(std::string_view v) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : v) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += char(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

}  // namespace

Reflector::Reflector(boost::asio::io_context& io, std::unique_ptr<Transport> t, ReflectorOptions o,
                     ReflectorHandler h)
    : io_(io), t_(std::move(t)), o_(std::move(o)), h_(std::move(h)), retry_(io) {}

Reflector::~Reflector() { stop(); }

void Reflector::start() {
  running_ = true;
  list();
}

void Reflector::stop() {
  running_ = false;
  retry_.cancel();
  t_->cancel();
}

std::string Reflector::target(bool watching, const std::string& continue_token) const {
  std::string q = o_.selector;
  auto add = [&q](const std::string& kv) { q += (q.empty() ? "" : "&") + kv; };
  if (watching) {
    add("watch=true");
    add("allowWatchBookmarks=true");
    add("resourceVersion=" + rv_);
    add("timeoutSeconds=" + std::to_string(o_.watch_timeout.count()));
  } else if (o_.page_size) {
    add("limit=" + std::to_string(o_.page_size));
    if (!continue_token.empty()) add("continue=" + url_encode(continue_token));
  }
  return o_.path + (q.empty() ? "" : "?" + q);
}

void Reflector::list() {
  if (!running_) return;
  ++stats_.lists;
  pages_.clear();
  pages_bytes_ = 0;
  pages_rv_.clear();
  list_page("");
}

void Reflector::list_page(const std::string& continue_token) {
  if (!running_) return;
  ++stats_.pages;
  body_.clear();
  status_ = 0;
  overflow_ = false;
  t_->get(target(false, continue_token),
          {[this](int status) { status_ = status; },
           [this](std::string_view d) {
             if (pages_bytes_ + body_.size() + d.size() > o_.max_list_bytes) {
               overflow_ = true;  // the rest is not read
               return false;
             }
             body_.append(d);
             return true;
           },
           [this](Result<void> done) { on_list_body(status_, std::move(done)); }});
}

void Reflector::on_list_body(int status, Result<void> done) {
  if (overflow_)
    return fail("list " + o_.path + ": larger than " + std::to_string(o_.max_list_bytes) + " bytes");
  if (!done) return fail("list " + o_.path + ": " + done.error().message());
  // A continue token the server no longer has (compacted): the list starts
  // over, as client-go's pager does.
  if (status == 410 && !pages_rv_.empty()) return relist_now("list " + o_.path + ": continue token expired");
  if (status != 200)
    return fail("list " + o_.path + ": HTTP " + std::to_string(status) + ": " + status_message(body_));
  boost::system::error_code ec;
  json::value v = json::parse(body_, ec);
  pages_bytes_ += body_.size();
  body_.clear();
  const json::object* o = ec ? nullptr : v.if_object();
  const json::array* items = nullptr;
  if (o)
    if (auto it = o->find("items"); it != o->end()) items = it->value().if_array();
  std::string rv = ec ? std::string() : rv_of(v);
  // An empty list may carry "items": null.
  if (!o || rv.empty() || (!items && !(o->contains("items") && o->at("items").is_null())))
    return fail("list " + o_.path + ": not a list with metadata.resourceVersion");
  if (pages_rv_.empty()) pages_rv_ = rv;
  if (items) pages_.insert(pages_.end(), items->begin(), items->end());
  std::string next;
  if (auto m = o->find("metadata"); m != o->end())
    if (const json::object* mo = m->value().if_object())
      if (auto c = mo->find("continue"); c != mo->end())
        if (const json::string* cs = c->value().if_string()) next = std::string(*cs);
  if (!next.empty()) {
    if (!o_.page_size) return fail("list " + o_.path + ": a continue token for a list not asked in pages");
    return list_page(next);
  }
  // The whole set is as of the first page's version; the watch starts there.
  rv_ = pages_rv_;
  synced_ = true;
  backoff_ = 0ms;
  std::vector<json::value> all = std::move(pages_);
  pages_.clear();
  h_.replace(all);
  watch();
}

void Reflector::watch() {
  if (!running_) return;
  ++stats_.watches;
  body_.clear();
  status_ = 0;
  watch_started_ = std::chrono::steady_clock::now();
  watch_events_ = 0;
  watch_ended_by_us_ = false;
  t_->get(target(true, ""), {[this](int status) { status_ = status; },
                         [this](std::string_view d) { return on_watch_data(d); },
                         [this](Result<void> done) { on_watch_done(std::move(done)); }});
}

bool Reflector::on_watch_data(std::string_view d) {
  if (status_ != 200) {  // an error status's body: kept for the message
    if (body_.size() < 4096) body_.append(d.substr(0, 4096 - body_.size()));
    return true;
  }
  body_.append(d);
  size_t start = 0;
  for (size_t nl; (nl = body_.find('\n', start)) != std::string::npos; start = nl + 1)
    if (!on_watch_line(std::string_view(body_).substr(start, nl - start))) {
      watch_ended_by_us_ = true;
      return false;
    }
  body_.erase(0, start);
  if (body_.size() > o_.max_event_bytes) {
    watch_ended_by_us_ = true;
    fail("watch " + o_.path + ": an event larger than " + std::to_string(o_.max_event_bytes) + " bytes");
    return false;
  }
  return true;
}

// One event: {"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": {...}}.
// false ends this watch (the next step is already scheduled).
bool Reflector::on_watch_line(std::string_view line) {
  if (line.find_first_not_of(" \r\t") == std::string_view::npos) return true;
  boost::system::error_code ec;
  json::value v = json::parse(line, ec);
  const json::object* o = ec ? nullptr : v.if_object();
  const json::string* type = nullptr;
  const json::value* object = nullptr;
  if (o) {
    if (auto it = o->find("type"); it != o->end()) type = it->value().if_string();
    if (auto it = o->find("object"); it != o->end()) object = &it->value();
  }
  if (!type || !object || !object->is_object()) {
    fail("watch " + o_.path + ": not a watch event");
    return false;
  }
  if (*type == "ERROR") {
    const json::object& st = object->get_object();
    if (int_at(&st, "code") == 410) {
      relist_now("watch " + o_.path + ": resourceVersion " + rv_ + " expired");
    } else {
      std::string msg;
      if (auto it = st.find("message"); it != st.end())
        if (const json::string* s = it->value().if_string()) msg = std::string(*s);
      fail("watch " + o_.path + ": ERROR event: " + msg);
    }
    return false;
  }
  std::string rv = rv_of(*object);
  if (*type == "BOOKMARK") {
    ++stats_.bookmarks;
    if (!rv.empty()) rv_ = rv;
    return true;
  }
  EventType t;
  if (*type == "ADDED") t = EventType::kAdded;
  else if (*type == "MODIFIED") t = EventType::kModified;
  else if (*type == "DELETED") t = EventType::kDeleted;
  else return true;  // a type from a newer server: not ours to act on
  ++stats_.events;
  ++watch_events_;
  if (!rv.empty()) rv_ = rv;
  h_.event(t, *object);
  return true;
}

void Reflector::on_watch_done(Result<void> done) {
  if (watch_ended_by_us_ || !running_) return;  // the next step is scheduled already
  if (status_ == 410) return relist_now("watch " + o_.path + ": HTTP 410 (resourceVersion expired)");
  if (status_ != 0 && status_ != 200)
    return fail("watch " + o_.path + ": HTTP " + std::to_string(status_) + ": " + status_message(body_));
  if (!done) return fail("watch " + o_.path + ": " + done.error().message());
  // The server ended the watch (timeoutSeconds, a restart, its cache
  // compacted): resume from where we are. Watches that keep ending at once
  // with nothing are not retried in a hot loop: the backoff grows, but
  // this is not an error (the next watch may well say 410).
  if (watch_events_ == 0 && std::chrono::steady_clock::now() - watch_started_ < 1s)
    return fail("watch " + o_.path + ": ended at once with no event", false);
  backoff_ = 0ms;
  watch();
}

void Reflector::relist_now(const std::string& why) {
  ++stats_.expired;
  spdlog::info("{}: listing again", why);
  retry_.expires_after(0ms);
  retry_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) list();
  });
}

void Reflector::fail(const std::string& why, bool error) {
  if (error) {
    ++stats_.errors;
    last_error_ = why;
  }
  auto max = o_.max_backoff;
  backoff_ = backoff_ == 0ms ? o_.min_backoff : std::min(max, backoff_ * 2);
  // Jitter in [backoff/2, backoff]: many daemons restarted together do not
  // come back to the API server in step.
  auto wait = std::chrono::milliseconds(
      std::uniform_int_distribution<int64_t>(backoff_.count() / 2, backoff_.count())(rng_));
  if (error) spdlog::warn("{} (retrying in {} ms)", why, wait.count());
  else spdlog::debug("{} (again in {} ms)", why, wait.count());
  bool relist = !synced_ || rv_.empty();
  retry_.expires_after(wait);
  retry_.async_wait([this, relist](const boost::system::error_code& ec) {
    if (ec) return;
    if (relist) list();
    else watch();
  });
}

}  // namespace metanode::kube
