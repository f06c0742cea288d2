#include "rate_limit_client.h"

#include <grpcpp/grpcpp.h>

#include <thread>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"

namespace metanode::core {

namespace rls = envoy::service::ratelimit::v3;

struct RateLimitClient::Impl {
  std::mutex mu;
  std::map<net::Endpoint, std::unique_ptr<rls::RateLimitService::Stub>> stubs;
  std::atomic<uint32_t> in_flight{0};

  rls::RateLimitService::Stub* stub(net::Endpoint ep) {
    std::lock_guard<std::mutex> l(mu);
    auto& s = stubs[ep];
    if (!s) {
      // A plaintext channel, as Envoy's envoy_grpc cluster without TLS.
      s = rls::RateLimitService::NewStub(
          grpc::CreateChannel(ep.str(), grpc::InsecureChannelCredentials()));
    }
    return s.get();
  }
};

RateLimitClient::RateLimitClient() : impl_(std::make_unique<Impl>()) {}
// Calls in flight hold a pointer to impl_ and post into the workers' loops:
// wait for them (each has a deadline of at most its rule's timeout).
RateLimitClient::~RateLimitClient() {
  for (int i = 0; i < 10000 && impl_->in_flight.load() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void RateLimitClient::check(net::Endpoint service, const std::string& domain,
                            const std::vector<std::pair<std::string, std::string>>& entries,
                            std::chrono::milliseconds timeout, std::function<void(Decision)> done) {
  if (impl_->in_flight.fetch_add(1, std::memory_order_relaxed) >= kMaxInFlight) {
    impl_->in_flight.fetch_sub(1, std::memory_order_relaxed);
    done(Decision::kError);
    return;
  }
  struct Call {
    grpc::ClientContext ctx;
    rls::RateLimitRequest req;
    rls::RateLimitResponse resp;
    std::function<void(Decision)> done;
  };
  auto call = std::make_shared<Call>();
  call->done = std::move(done);
  call->ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  call->req.set_domain(domain);
  call->req.set_hits_addend(1);
  auto* descriptor = call->req.add_descriptors();
  for (const auto& [k, v] : entries) {
    auto* e = descriptor->add_entries();
    e->set_key(k);
    e->set_value(v);
  }
  Impl* impl = impl_.get();
  impl->stub(service)->async()->ShouldRateLimit(
      &call->ctx, &call->req, &call->resp, [call, impl](grpc::Status st) {
        Decision d = !st.ok() ? Decision::kError
                     : call->resp.overall_code() == rls::RateLimitResponse::OVER_LIMIT
                         ? Decision::kOverLimit
                     : call->resp.overall_code() == rls::RateLimitResponse::OK ? Decision::kOk
                                                                               : Decision::kError;
        call->done(d);
        // Last: the destructor waits for this, and `done` must have run.
        impl->in_flight.fetch_sub(1, std::memory_order_relaxed);
      });
}

}  // namespace metanode::core
