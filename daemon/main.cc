// metanoded: flag parsing only; everything else is in metanode_core.
#include <getopt.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>

#include "metanode/bpf/maps.h"
#include "metanode/core/daemon.h"
#include "metanode/core/log_format.h"

namespace {
void usage(FILE* f) {
  std::fprintf(f,
               "usage: metanoded (--config-dir DIR | --xds-address HOST:PORT) [options]\n"
               "  --config-dir DIR          Istio/Aeraki manifests to serve (watched with inotify)\n"
               "  --xds-address HOST:PORT   pull configuration over ADS (istiod: 15010)\n"
               "  --xds-cluster NAME=HOST:PORT\n"
               "                            address of a gRPC cluster a listener names as its RDS\n"
               "                            source (aeraki-xds: Aeraki's 15010); default: the ADS server\n"
               "  --xds-cluster-tls NAME=SERVERNAME|plaintext\n"
               "                            that cluster's TLS name to verify (Aeraki's certificate\n"
               "                            is not istiod's), or no TLS, token or client certificate\n"
               "                            (older Aeraki releases); default: as the ADS server\n"
               "  --xds-delta               delta (incremental) xDS instead of state of the world\n"
               "  --xds-first-response-timeout-ms N\n"
               "                            restart a stream that brings no response in N ms (15000)\n"
               "  --xds-root-cert FILE      TLS to xDS servers and the CA, verified against this root\n"
               "                            (istiod 15012: /var/run/secrets/istio/root-cert.pem)\n"
               "  --xds-server-name NAME    the ADS server's and the CA's TLS name to verify\n"
               "                            (istiod.istio-system.svc); default: the host\n"
               "  --xds-token-file FILE     bearer token sent to xDS servers and the CA, re-read at\n"
               "                            each connect (/var/run/secrets/tokens/istio-token)\n"
               "  --ca-address HOST:PORT    Istio CA: get and rotate a workload certificate, the\n"
               "                            client certificate for xDS (Aeraki's RDS requires one)\n"
               "  --trust-domain NAME       SPIFFE trust domain of that certificate (cluster.local)\n"
               "  --cert-ttl SECONDS        lifetime asked for it (86400); renewed at half of it\n"
               "  --node-id ID              xDS node id (default sidecar~IP~POD.NS~NS.svc.cluster.local\n"
               "                            from POD_NAME, POD_NAMESPACE, INSTANCE_IP); unique per daemon\n"
               "  --node-label KEY=VALUE    a LABELS entry of the node metadata (repeatable)\n"
               "  --node-meta KEY=VALUE     any other node metadata key (repeatable); NAMESPACE,\n"
               "                            CLUSTER_ID, ISTIO_VERSION, INSTANCE_IPS, SERVICE_ACCOUNT,\n"
               "                            NODE_NAME come from the environment as istio-agent's do\n"
               "  --cgroup PATH             cgroup v2 directory to intercept (default: cgroup2 root)\n"
               "  --redirect-address IP:PORT where pods reach the daemon (default: node IP:15001)\n"
               "  --admin-address IP:PORT   admin endpoint, loopback only (default 127.0.0.1:15000)\n"
               "  --admin-allow-remote      let --admin-address be a non-loopback address (its\n"
               "                            /config_dump shows the whole configuration)\n"
               "  --metrics-address IP:PORT Prometheus metrics on their own port, /stats/prometheus\n"
               "                            and /metrics (Istio's: 0.0.0.0:15020; default off)\n"
               "  --readiness-address IP:PORT\n"
               "                            /healthz/ready alone (Istio's: 0.0.0.0:15021; default off)\n"
               "  --pin-dir DIR             bpffs pin directory (default /sys/fs/bpf/metanode)\n"
               "  --no-bpf                  no interception: listen on each service address\n"
               "  --no-skmsg                keep pod<->daemon bytes on the TCP path\n"
               "  --skmsg-upstream          also daemon<->upstream socket-to-socket for local pods\n"
               "  --pods all|listed|netns-dir=DIR[:PREFIX]|kubernetes\n"
               "                            which namespaces are pods: every non-host netns\n"
               "                            (default), those registered with `metanodectl pod\n"
               "                            add`, every netns file DIR/PREFIX* (containerd,\n"
               "                            CRI-O: /var/run/netns:cni-), rescanned every second,\n"
               "                            or this node's pods from the Kubernetes API enrolled\n"
               "                            by the label istio.io/dataplane-mode=metanode on the\n"
               "                            pod or its namespace (=none on a pod opts it out)\n"
               "  --node-name NAME          this node, for --pods kubernetes (default: NODE_NAME)\n"
               "  --kube-api URL            API server (default: in-cluster, KUBERNETES_SERVICE_HOST)\n"
               "  --kube-token-file FILE    bearer token, re-read per request (default: the service\n"
               "                            account's, /var/run/secrets/kubernetes.io/serviceaccount)\n"
               "  --kube-ca-file FILE       CA of the API server (default: the service account's)\n"
               "  --netns-dir DIR[:PREFIX]  where --pods kubernetes finds pod sandboxes' netns files,\n"
               "                            matched to pods by IP (default /var/run/netns:cni-)\n"
               "  --exclude-ports P,P,...   destination ports never intercepted\n"
               "  --manage-host-netns       also intercept processes in the host netns\n"
               "  --workers N               event loops (default: one per core)\n"
               "  --request-timeout-ms N    default per-request timeout (30000)\n"
               "  --no-seccomp              no system call allow-list (capabilities are still dropped)\n"
               "  --drain-timeout-ms N      on SIGTERM, calls in flight may finish this long (5000)\n"
               "  --handover NAME           hitless restart: offer the listening sockets to a\n"
               "                            successor at unix socket NAME (@NAME: abstract), and\n"
               "                            take them from a daemon already serving there once\n"
               "                            configured; that one finishes its calls and waits for\n"
               "                            SIGTERM (README: Upgrades)\n"
               "  --handover-wait-ms N      how long a successor waits for its configuration\n"
               "                            before taking over anyway (30000)\n"
               "Per client connection (one daemon serves every pod; see docs/SECURITY.md):\n"
               "  --client-max-inflight N   requests awaiting replies before reads pause (1024)\n"
               "  --client-max-queued-bytes N\n"
               "                            reply bytes not yet taken by the client: reads pause at\n"
               "                            1/8 of it, replies beyond it become errors (33554432)\n"
               "  --client-read-timeout-ms N a message begun must be complete within N ms (15000)\n"
               "  --client-idle-timeout-ms N close after N ms with nothing in flight (3600000)\n"
               "  --client-write-timeout-ms N\n"
               "                            close when queued replies are not taken in N ms (30000)\n"
               "Per client source (a pod: its netns cookie with interception, else its address),\n"
               "across the node:\n"
               "  --source-max-connections N connections beyond N are closed at accept (4096)\n"
               "  --source-max-pending N     requests awaiting replies; its reads pause beyond (1024)\n"
               "  --source-max-rps N         requests per second; beyond, its reads wait (off)\n"
               "  --access-log PATH         one line per answered request (- : standard output)\n"
               "  --access-log-format text|json\n"
               "                            Envoy-like text (default) or one JSON object per line\n"
               "  --access-log-sample R     log this share of requests, 0 < R <= 1 (1)\n"
               "  --access-log-max-rate N   at most N lines a second; the rest are counted (no cap)\n"
               "  --log-level LEVEL         trace|debug|info|warn|error (info)\n"
               "  --log-format text|json    the daemon's log lines: text (UTC times) or one JSON\n"
               "                            object per line (time, level, msg)\n"
               "  --uninstall               remove pinned programs and maps, then exit\n");
}

bool endpoint_arg(const char* flag, const char* v, metanode::net::Endpoint& out) {
  auto e = metanode::net::parse_endpoint(v);
  if (!e) {
    std::fprintf(stderr, "%s: '%s' is not IPv4:PORT\n", flag, v);
    return false;
  }
  out = *e;
  return true;
}
}  // namespace

int main(int argc, char** argv) {
  metanode::core::DaemonOptions o;
  bool uninstall = false;
  bool admin_remote = false;
  enum { kConfigDir = 1, kCgroup, kRedirect, kAdmin, kPinDir, kNoBpf, kNoSkmsg, kHostNetns,
         kWorkers, kTimeout, kLogLevel, kUninstall, kHelp, kSkmsgUpstream, kPods, kExclude,
         kXdsAddress, kXdsCluster, kXdsClusterTls, kNodeId, kNodeLabel, kNodeMeta, kRootCert, kServerName,
         kTokenFile, kCaAddress, kTrustDomain, kXdsDelta, kCertTtl, kFirstResponse,
         kDrainTimeout, kHandover, kHandoverWait, kNoSeccomp, kClientInflight, kClientQueued, kClientRead, kClientIdle, kClientWrite,
         kSourceConns, kSourcePending, kSourceRps, kAdminRemote, kMetrics, kReadiness,
         kNodeName, kKubeApi, kKubeToken, kKubeCa, kNetnsDir, kAccessLog, kAccessLogFormat,
         kAccessLogSample, kAccessLogRate, kLogFormat };
  static const option longopts[] = {
      {"config-dir", required_argument, nullptr, kConfigDir},
      {"cgroup", required_argument, nullptr, kCgroup},
      {"redirect-address", required_argument, nullptr, kRedirect},
      {"admin-address", required_argument, nullptr, kAdmin},
      {"admin-allow-remote", no_argument, nullptr, kAdminRemote},
      {"metrics-address", required_argument, nullptr, kMetrics},
      {"readiness-address", required_argument, nullptr, kReadiness},
      {"pin-dir", required_argument, nullptr, kPinDir},
      {"no-bpf", no_argument, nullptr, kNoBpf},
      {"no-skmsg", no_argument, nullptr, kNoSkmsg},
      {"manage-host-netns", no_argument, nullptr, kHostNetns},
      {"workers", required_argument, nullptr, kWorkers},
      {"request-timeout-ms", required_argument, nullptr, kTimeout},
      {"log-level", required_argument, nullptr, kLogLevel},
      {"uninstall", no_argument, nullptr, kUninstall},
      {"help", no_argument, nullptr, kHelp},
      {"skmsg-upstream", no_argument, nullptr, kSkmsgUpstream},
      {"pods", required_argument, nullptr, kPods},
      {"exclude-ports", required_argument, nullptr, kExclude},
      {"xds-address", required_argument, nullptr, kXdsAddress},
      {"xds-cluster", required_argument, nullptr, kXdsCluster},
      {"xds-cluster-tls", required_argument, nullptr, kXdsClusterTls},
      {"node-id", required_argument, nullptr, kNodeId},
      {"node-label", required_argument, nullptr, kNodeLabel},
      {"node-meta", required_argument, nullptr, kNodeMeta},
      {"xds-root-cert", required_argument, nullptr, kRootCert},
      {"xds-server-name", required_argument, nullptr, kServerName},
      {"xds-token-file", required_argument, nullptr, kTokenFile},
      {"ca-address", required_argument, nullptr, kCaAddress},
      {"trust-domain", required_argument, nullptr, kTrustDomain},
      {"xds-delta", no_argument, nullptr, kXdsDelta},
      {"cert-ttl", required_argument, nullptr, kCertTtl},
      {"xds-first-response-timeout-ms", required_argument, nullptr, kFirstResponse},
      {"drain-timeout-ms", required_argument, nullptr, kDrainTimeout},
      {"handover", required_argument, nullptr, kHandover},
      {"handover-wait-ms", required_argument, nullptr, kHandoverWait},
      {"no-seccomp", no_argument, nullptr, kNoSeccomp},
      {"client-max-inflight", required_argument, nullptr, kClientInflight},
      {"client-max-queued-bytes", required_argument, nullptr, kClientQueued},
      {"client-read-timeout-ms", required_argument, nullptr, kClientRead},
      {"client-idle-timeout-ms", required_argument, nullptr, kClientIdle},
      {"client-write-timeout-ms", required_argument, nullptr, kClientWrite},
      {"source-max-connections", required_argument, nullptr, kSourceConns},
      {"source-max-pending", required_argument, nullptr, kSourcePending},
      {"source-max-rps", required_argument, nullptr, kSourceRps},
      {"node-name", required_argument, nullptr, kNodeName},
      {"kube-api", required_argument, nullptr, kKubeApi},
      {"kube-token-file", required_argument, nullptr, kKubeToken},
      {"kube-ca-file", required_argument, nullptr, kKubeCa},
      {"netns-dir", required_argument, nullptr, kNetnsDir},
      {"access-log", required_argument, nullptr, kAccessLog},
      {"access-log-format", required_argument, nullptr, kAccessLogFormat},
      {"access-log-sample", required_argument, nullptr, kAccessLogSample},
      {"access-log-max-rate", required_argument, nullptr, kAccessLogRate},
      {"log-format", required_argument, nullptr, kLogFormat},
      {nullptr, 0, nullptr, 0}};
  // Node identity as istio-agent takes it from the downward API.
  auto env = [](const char* k, const char* dflt = "") {
    const char* v = std::getenv(k);
    return std::string(v && *v ? v : dflt);
  };
  auto& node = o.node;
  char host[256] = "metanode";
  gethostname(host, sizeof(host) - 1);
  // Unique per daemon even with two on one host: Aeraki keys its RDS cache
  // by node id and clears it when a stream closes.
  node.pod_name = env("POD_NAME", (std::string(host) + "-" + std::to_string(getpid())).c_str());
  node.namespace_ = env("POD_NAMESPACE", "metanode-system");
  node.ip = env("INSTANCE_IP");
  node.service_account = env("SERVICE_ACCOUNT");
  node.node_name = env("NODE_NAME");
  node.cluster_id = env("CLUSTER_ID", "Kubernetes");
  node.istio_version = env("ISTIO_VERSION");
  int c;
  metanode::net::Endpoint ep;
  // A positive whole number, or a message naming the flag.
  auto number = [](const char* flag, const char* v, unsigned long long& out) {
    char* end = nullptr;
    out = std::strtoull(v, &end, 10);
    if (!*v || *end || out == 0) {
      std::fprintf(stderr, "--%s: '%s' is not a positive number\n", flag, v);
      return false;
    }
    return true;
  };
  unsigned long long n = 0;
  auto& dl = o.downstream;
  metanode::core::AccessLogOptions access_log;
  bool access_log_flags = false;
  bool log_json = false;
  while ((c = getopt_long(argc, argv, "", longopts, nullptr)) != -1) {
    switch (c) {
      case kConfigDir: o.config_dir = optarg; break;
      case kCgroup: o.cgroup = optarg; break;
      case kRedirect:
        if (!endpoint_arg("--redirect-address", optarg, ep)) return 2;
        o.redirect = ep;
        break;
      case kAdmin:
        if (!endpoint_arg("--admin-address", optarg, o.admin)) return 2;
        break;
      case kAdminRemote: admin_remote = true; break;
      case kMetrics:
        if (!endpoint_arg("--metrics-address", optarg, ep)) return 2;
        o.metrics = ep;
        break;
      case kReadiness:
        if (!endpoint_arg("--readiness-address", optarg, ep)) return 2;
        o.readiness = ep;
        break;
      case kPinDir: o.pin_dir = optarg; break;
      case kNoBpf: o.intercept = false; break;
      case kNoSkmsg: o.skmsg = false; break;
      case kHostNetns: o.manage_host_netns = true; break;
      case kWorkers: o.workers = std::strtoul(optarg, nullptr, 10); break;
      case kTimeout: o.request_timeout = std::chrono::milliseconds(std::strtoul(optarg, nullptr, 10)); break;
      case kLogLevel: spdlog::set_level(spdlog::level::from_str(optarg)); break;
      case kUninstall: uninstall = true; break;
      case kHelp: usage(stdout); return 0;
      case kSkmsgUpstream: o.skmsg_upstream = true; break;
      case kPods:
      {
        std::string v = optarg;
        if (v.rfind("netns-dir=", 0) == 0) {
          std::string d = v.substr(10);
          auto colon = d.find(':');
          o.pods_netns_dir = d.substr(0, colon);
          if (colon != std::string::npos) o.pods_netns_prefix = d.substr(colon + 1);
          o.pod_mode_all = false;
        } else if (v == "all" || v == "listed") {
          o.pod_mode_all = v == "all";
        } else if (v == "kubernetes") {
          o.pods_kubernetes = true;
          o.pod_mode_all = false;
        } else {
          std::fprintf(stderr, "--pods: all, listed, netns-dir=DIR[:PREFIX] or kubernetes\n");
          return 2;
        }
        break;
      }
      case kNodeName: node.node_name = optarg; break;
      case kAccessLog: access_log.path = optarg; break;
      case kLogFormat:
        if (std::string(optarg) != "text" && std::string(optarg) != "json") {
          std::fprintf(stderr, "--log-format: text or json\n");
          return 2;
        }
        log_json = std::string(optarg) == "json";
        break;
      case kAccessLogFormat:
        if (std::string(optarg) != "text" && std::string(optarg) != "json") {
          std::fprintf(stderr, "--access-log-format: text or json\n");
          return 2;
        }
        access_log.json = std::string(optarg) == "json";
        access_log_flags = true;
        break;
      case kAccessLogSample: {
        char* end = nullptr;
        double v = std::strtod(optarg, &end);
        if (*end || !(v > 0 && v <= 1)) {
          std::fprintf(stderr, "--access-log-sample: '%s' is not a share in (0, 1]\n", optarg);
          return 2;
        }
        access_log.sample = v;
        access_log_flags = true;
        break;
      }
      case kAccessLogRate:
        if (!number("access-log-max-rate", optarg, n)) return 2;
        access_log.max_lines_per_second = uint32_t(std::min<unsigned long long>(n, UINT32_MAX));
        access_log_flags = true;
        break;
      case kKubeApi: o.kube_api = optarg; break;
      case kKubeToken: o.kube_token_file = optarg; break;
      case kKubeCa: o.kube_ca_file = optarg; break;
      case kNetnsDir: {
        std::string d = optarg;
        auto colon = d.find(':');
        o.kube_netns_dir = d.substr(0, colon);
        o.kube_netns_prefix = colon == std::string::npos ? "" : d.substr(colon + 1);
        break;
      }
      case kExclude: {
        std::string list = optarg;
        for (size_t pos = 0; pos <= list.size();) {
          size_t comma = list.find(',', pos);
          std::string item = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
          char* end = nullptr;
          unsigned long port = std::strtoul(item.c_str(), &end, 10);
          if (item.empty() || *end || port == 0 || port > 65535) {
            std::fprintf(stderr, "--exclude-ports: '%s' is not a port\n", item.c_str());
            return 2;
          }
          o.exclude_ports.push_back(uint16_t(port));
          if (comma == std::string::npos) break;
          pos = comma + 1;
        }
        break;
      }
      case kXdsAddress: o.xds_address = optarg; break;
      case kNodeId: node.id = optarg; break;
      case kRootCert: o.xds_security.root_cert_file = optarg; break;
      case kServerName: o.xds_security.server_name = optarg; break;
      case kTokenFile: o.xds_security.token_file = optarg; break;
      case kCaAddress: o.ca_address = optarg; break;
      case kTrustDomain: o.trust_domain = optarg; break;
      case kXdsDelta: o.xds_delta = true; break;
      case kFirstResponse: {
        char* end = nullptr;
        long v = std::strtol(optarg, &end, 10);
        if (*end || v < 100) {
          std::fprintf(stderr, "--xds-first-response-timeout-ms: '%s' is not a number >= 100\n", optarg);
          return 2;
        }
        o.xds_first_response_timeout = std::chrono::milliseconds(v);
        break;
      }
      case kCertTtl: {
        char* end = nullptr;
        long v = std::strtol(optarg, &end, 10);
        if (*end || v < 2) {
          std::fprintf(stderr, "--cert-ttl: '%s' is not a number of seconds >= 2\n", optarg);
          return 2;
        }
        o.cert_ttl = std::chrono::seconds(v);
        break;
      }
      case kNoSeccomp: o.seccomp = false; break;
      case kDrainTimeout:
        if (!number("drain-timeout-ms", optarg, n)) return 2;
        o.drain_timeout = std::chrono::milliseconds(n);
        break;
      case kHandover: o.handover = optarg; break;
      case kHandoverWait:
        if (!number("handover-wait-ms", optarg, n)) return 2;
        o.handover_wait = std::chrono::milliseconds(n);
        break;
      case kClientInflight:
        if (!number("client-max-inflight", optarg, n)) return 2;
        dl.max_inflight = n;
        break;
      case kClientQueued:
        if (!number("client-max-queued-bytes", optarg, n)) return 2;
        dl.max_queued_bytes = n;
        dl.pause_queued_bytes = std::max<size_t>(1, n / 8);
        break;
      case kClientRead:
        if (!number("client-read-timeout-ms", optarg, n)) return 2;
        dl.read_timeout = std::chrono::milliseconds(n);
        break;
      case kClientIdle:
        if (!number("client-idle-timeout-ms", optarg, n)) return 2;
        dl.idle_timeout = std::chrono::milliseconds(n);
        break;
      case kClientWrite:
        if (!number("client-write-timeout-ms", optarg, n)) return 2;
        dl.write_timeout = std::chrono::milliseconds(n);
        break;
      case kSourceConns:
      case kSourcePending:
      case kSourceRps: {
        const char* flag = c == kSourceConns ? "source-max-connections"
                           : c == kSourcePending ? "source-max-pending" : "source-max-rps";
        if (!number(flag, optarg, n)) return 2;
        if (n > UINT32_MAX) {
          std::fprintf(stderr, "--%s: at most %u\n", flag, UINT32_MAX);
          return 2;
        }
        (c == kSourceConns ? dl.max_connections_per_source
         : c == kSourcePending ? dl.max_pending_per_source : dl.max_rps_per_source) = uint32_t(n);
        break;
      }
      case kXdsCluster:
      case kXdsClusterTls:
      case kNodeLabel:
      case kNodeMeta: {
        std::string kv = optarg;
        auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0 || (c == kXdsClusterTls && eq + 1 == kv.size())) {
          std::fprintf(stderr, "%s: expected KEY=VALUE, got '%s'\n",
                       c == kXdsCluster      ? "--xds-cluster"
                       : c == kXdsClusterTls ? "--xds-cluster-tls"
                       : c == kNodeLabel     ? "--node-label"
                                             : "--node-meta",
                       optarg);
          return 2;
        }
        auto& into = c == kXdsCluster      ? o.xds_clusters
                     : c == kXdsClusterTls ? o.xds_cluster_tls
                     : c == kNodeLabel     ? node.labels
                                           : node.extra;
        into[kv.substr(0, eq)] = kv.substr(eq + 1);
        break;
      }
      default: usage(stderr); return 2;
    }
  }
  metanode::core::set_log_format(log_json);
  if (uninstall) {
    auto r = metanode::bpf::uninstall_kernel(o.pin_dir);
    if (!r) {
      spdlog::critical("uninstall: {}", r.error().message());
      return 1;
    }
    spdlog::info("uninstalled {}", o.pin_dir.empty() ? "/sys/fs/bpf/metanode" : o.pin_dir);
    return 0;
  }
  // The admin port serves the whole configuration and internals: a pod on
  // a hostNetwork node could read it at the node address.
  if ((o.admin.addr >> 24) != 127 && !admin_remote) {
    std::fprintf(stderr,
                 "--admin-address %s is not a loopback address: add --admin-allow-remote to "
                 "serve the admin endpoint there, or use --metrics-address and --readiness-address\n",
                 o.admin.str().c_str());
    return 2;
  }
  if (access_log_flags && access_log.path.empty()) {
    std::fprintf(stderr, "--access-log-format, --access-log-sample and --access-log-max-rate go with --access-log\n");
    return 2;
  }
  if (!access_log.path.empty()) o.access_log = access_log;
  if (!o.pods_kubernetes && (!o.kube_api.empty() || !o.kube_token_file.empty() || !o.kube_ca_file.empty() ||
                             o.kube_netns_dir != "/var/run/netns")) {
    std::fprintf(stderr, "--kube-api, --kube-token-file, --kube-ca-file and --netns-dir go with --pods kubernetes\n");
    return 2;
  }
  if (o.config_dir.empty() == o.xds_address.empty()) {
    std::fprintf(stderr, "give one of --config-dir and --xds-address\n");
    usage(stderr);
    return 2;
  }
  return metanode::core::run_daemon(o);
}
