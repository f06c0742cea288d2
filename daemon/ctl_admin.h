// metanodectl subcommands that ask a running metanoded (its admin endpoint)
// rather than the pinned maps. Each returns the process exit code.
#pragma once

namespace metanode::ctl {

// status [--admin ADDR] [-o json]: ready or why not, requests, connections,
// rejected reloads, pods (--pods kubernetes). Exit 3 when not ready.
int status(int argc, char** argv);
// explain VIP:PORT [--src POD_IP] [--attr KEY=VALUE]... [--admin ADDR] [-o json]
int explain(int argc, char** argv);
// drain [--admin ADDR] [--timeout-ms N] [-o json]: asks the daemon to drain
// (POST /drain), then waits until no client connection is left. Exit 1
// when some still are at the timeout (30 s).
int drain(int argc, char** argv);
// The admin endpoint's `path`, as it answers (routes, clusters, config);
// with -o json, `json_path` (null: that view has no JSON form, refused).
int passthrough(int argc, char** argv, const char* path, const char* json_path);

}  // namespace metanode::ctl
