// The embedded control plane's front half: Kubernetes-style manifests (Istio
// ServiceEntry and DestinationRule, Aeraki MetaRouter) -> the xDS resources
// Istio + Aeraki would send for them. Users keep their real manifests; the
// daemon runs on one machine with no cluster.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "metanode/result.h"
#include "metanode/xds/resources.h"

namespace metanode::xds {

struct ManifestFile {
  std::string path;  // used in error messages
  std::string content;
};

// Translates manifests. Every error names the file, the object
// (Kind namespace/name) and the field; nothing is returned half-translated.
// Objects of other kinds are ignored (a manifest directory may hold
// Deployments and Services too).
Result<Resources> translate_manifests(const std::vector<ManifestFile>& files);

// The same, keeping each file's parsed objects between calls: a directory
// with one edited file re-parses that file only (YAML parsing is most of
// the cost of a large directory).
class ManifestTranslator {
 public:
  ManifestTranslator();
  ~ManifestTranslator();
  Result<Resources> translate(const std::vector<ManifestFile>& files);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads every *.yaml / *.yml file directly in `dir`, in name order.
Result<std::vector<ManifestFile>> read_manifest_dir(const std::string& dir);

}  // namespace metanode::xds
