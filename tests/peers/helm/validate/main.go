// validate checks a rendered chart the way the API server would take it,
// offline: every document is decoded strictly into its real Kubernetes
// type (k8s.io/api, the types the API server's OpenAPI schemas are made
// from), so an unknown or misspelt field or a wrong type is an error; then
// the API server's validation rules a node-agent DaemonSet can trip are
// checked, each named after the rule it mirrors. The full validation
// package (k8s.io/kubernetes/pkg/apis/core/validation) cannot be built
// outside the Kubernetes tree, hence the list.
//
// usage: validate FILE.yaml
package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: validate FILE.yaml")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var errs []string
	n := 0
	for i, doc := range bytes.Split(data, []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		n++
		for _, e := range check(doc) {
			errs = append(errs, fmt.Sprintf("document %d: %s", i+1, e))
		}
	}
	for _, e := range errs {
		fmt.Println(e)
	}
	if len(errs) > 0 || n == 0 {
		if n == 0 {
			fmt.Println("no objects")
		}
		os.Exit(1)
	}
	fmt.Printf("ok: %d objects\n", n)
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func check(doc []byte) []string {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return []string{err.Error()}
	}
	var obj any
	switch tm.APIVersion + "/" + tm.Kind {
	case "apps/v1/DaemonSet":
		obj = &appsv1.DaemonSet{}
	case "v1/ServiceAccount":
		obj = &corev1.ServiceAccount{}
	case "v1/ConfigMap":
		obj = &corev1.ConfigMap{}
	case "rbac.authorization.k8s.io/v1/ClusterRole":
		obj = &rbacv1.ClusterRole{}
	case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
		obj = &rbacv1.ClusterRoleBinding{}
	default:
		return []string{fmt.Sprintf("%s %s: not a kind this validator knows", tm.APIVersion, tm.Kind)}
	}
	// UnmarshalStrict: unknown fields and duplicate keys are errors, as the
	// API server's strict field validation makes them.
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return []string{fmt.Sprintf("%s: %v", tm.Kind, err)}
	}
	var errs []string
	meta := func(m metav1.ObjectMeta) {
		if !dns1123.MatchString(m.Name) || len(m.Name) > 253 {
			errs = append(errs, fmt.Sprintf("%s %q: metadata.name is not a DNS-1123 name", tm.Kind, m.Name))
		}
	}
	switch o := obj.(type) {
	case *appsv1.DaemonSet:
		meta(o.ObjectMeta)
		errs = append(errs, daemonSet(o)...)
	case *corev1.ServiceAccount:
		meta(o.ObjectMeta)
	case *corev1.ConfigMap:
		meta(o.ObjectMeta)
	case *rbacv1.ClusterRole:
		meta(o.ObjectMeta)
	case *rbacv1.ClusterRoleBinding:
		meta(o.ObjectMeta)
	}
	return errs
}

// The rules of apps and core validation a DaemonSet like ours can break.
func daemonSet(d *appsv1.DaemonSet) []string {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, "DaemonSet "+d.Name+": "+fmt.Sprintf(f, a...)) }
	// ValidateDaemonSetSpec: the selector must match the template's labels.
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchLabels) == 0 {
		bad("spec.selector: required")
	} else {
		for k, v := range d.Spec.Selector.MatchLabels {
			if d.Spec.Template.Labels[k] != v {
				bad("spec.template.metadata.labels: selector %s=%s does not match", k, v)
			}
		}
	}
	p := d.Spec.Template.Spec
	if p.RestartPolicy != "" && p.RestartPolicy != corev1.RestartPolicyAlways {
		bad("spec.template.spec.restartPolicy: a DaemonSet's must be Always")
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range p.Volumes {
		if _, dup := volumes[v.Name]; dup {
			bad("volume %q: duplicate name", v.Name)
		}
		volumes[v.Name] = v
		if v.HostPath != nil && !strings.HasPrefix(v.HostPath.Path, "/") {
			bad("volume %q: hostPath.path must be absolute", v.Name)
		}
	}
	all := append(append([]corev1.Container{}, p.InitContainers...), p.Containers...)
	if len(p.Containers) == 0 {
		bad("spec.template.spec.containers: required")
	}
	names := map[string]bool{}
	for _, c := range all {
		where := "container " + c.Name
		if !dns1123.MatchString(c.Name) || names[c.Name] {
			bad("%s: name not a DNS-1123 label or not unique", where)
		}
		names[c.Name] = true
		if c.Image == "" {
			bad("%s: image: required", where)
		}
		privileged := c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
		for _, m := range c.VolumeMounts {
			if _, ok := volumes[m.Name]; !ok {
				bad("%s: volumeMount %q names no volume", where, m.Name)
			}
			// validateMountPropagation
			if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional && !privileged {
				bad("%s: volumeMount %q: Bidirectional mount propagation is available only to privileged containers", where, m.Name)
			}
		}
		for _, port := range c.Ports {
			// validateHostNetwork: host ports must equal container ports
			if p.HostNetwork && port.HostPort != 0 && port.HostPort != port.ContainerPort {
				bad("%s: port %d: with hostNetwork, hostPort must equal containerPort", where, port.ContainerPort)
			}
		}
		for _, probe := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
			if probe == nil {
				continue
			}
			if probe.HTTPGet == nil && probe.TCPSocket == nil && probe.Exec == nil && probe.GRPC == nil {
				bad("%s: a probe must name one handler", where)
			}
		}
		if c.StartupProbe != nil && c.StartupProbe.SuccessThreshold > 1 {
			bad("%s: startupProbe.successThreshold must be 1", where)
		}
		if c.LivenessProbe != nil && c.LivenessProbe.SuccessThreshold > 1 {
			bad("%s: livenessProbe.successThreshold must be 1", where)
		}
		for _, e := range c.Env {
			if e.Value != "" && e.ValueFrom != nil {
				bad("%s: env %s: value and valueFrom are exclusive", where, e.Name)
			}
		}
	}
	for _, c := range p.InitContainers {
		if c.ReadinessProbe != nil || c.LivenessProbe != nil || c.StartupProbe != nil {
			bad("init container %s: may not have probes", c.Name)
		}
	}
	return errs
}
