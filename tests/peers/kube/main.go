// fake-apiserver speaks the part of the Kubernetes API protocol that
// metanoded's pod and namespace reflectors use, as kube-apiserver does:
//
//   - GET /api/v1/pods and /api/v1/namespaces: a JSON list with
//     metadata.resourceVersion; fieldSelector spec.nodeName=NODE on pods;
//     with limit=N, pages of at most N (and at most --max-page) items whose
//     metadata.continue token, sent back as continue=, gives the next page
//     of the same version; a token older than a compaction gets 410.
//   - the same with watch=true&resourceVersion=RV: a chunked stream of
//     {"type":...,"object":...} lines, one per event after RV; BOOKMARK
//     events when allowWatchBookmarks=true; the stream ends after
//     timeoutSeconds; an RV older than the compaction floor gets an ERROR
//     event carrying a Status with code 410 (Expired), as kube-apiserver's
//     watch cache answers.
//   - HTTPS with a CA it makes (--tls-dir), bearer tokens checked against a
//     file re-read per request (--token-file), 401 Status otherwise.
//
// Tests drive it through /control on a second, plain-HTTP listener: apply and delete objects
// (as `kubectl get -o json` prints them), compact (every open watch is
// closed and older versions expire), rotate-ca (a new CA and serving
// certificate, the CA written to TLS-DIR/rotated/ca.crt, open watches
// closed), and read the request log.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type object = map[string]any

type event struct {
	rv       int64
	typ      string // ADDED, MODIFIED, DELETED
	resource string // pods, namespaces
	obj      object
}

type store struct {
	mu       sync.Mutex
	rv       int64
	floor    int64                        // watches from an RV below this get 410
	objects  map[string]map[string]object // resource -> ns/name -> object
	history  []event
	changed  chan struct{} // closed and replaced on every change
	closeAll chan struct{} // closed and replaced by compact
	requests []map[string]any
	// Lists being read in pages, by continue token: the rest of the items,
	// all of one version, as kube-apiserver serves pages from one snapshot.
	pages  map[string]pageRest
	tokens int
}

type pageRest struct {
	items []object
	rv    int64
}

func newStore() *store {
	return &store{objects: map[string]map[string]object{"pods": {}, "namespaces": {}},
		changed: make(chan struct{}), closeAll: make(chan struct{}), pages: map[string]pageRest{}}
}

func meta(o object) object {
	m, _ := o["metadata"].(object)
	if m == nil {
		m = object{}
		o["metadata"] = m
	}
	return m
}

func keyOf(o object) string {
	m := meta(o)
	ns, _ := m["namespace"].(string)
	name, _ := m["name"].(string)
	return ns + "/" + name
}

func resourceOf(kind string) (string, bool) {
	switch kind {
	case "Pod":
		return "pods", true
	case "Namespace":
		return "namespaces", true
	}
	return "", false
}

func (s *store) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// apply stores o as the new state; hidden changes are not recorded as
// events (only a list sees them: what a watch misses across a compaction).
func (s *store) apply(o object, hidden bool) (string, error) {
	kind, _ := o["kind"].(string)
	res, ok := resourceOf(kind)
	if !ok {
		return "", fmt.Errorf("kind %q not served", kind)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rv++
	m := meta(o)
	m["resourceVersion"] = strconv.FormatInt(s.rv, 10)
	if _, ok := m["uid"]; !ok {
		m["uid"] = fmt.Sprintf("00000000-0000-4000-8000-%012d", s.rv)
	}
	k := keyOf(o)
	typ := "ADDED"
	if _, exists := s.objects[res][k]; exists {
		typ = "MODIFIED"
	}
	s.objects[res][k] = o
	if !hidden {
		s.history = append(s.history, event{s.rv, typ, res, o})
	}
	s.notify()
	return typ, nil
}

func (s *store) remove(kind, ns, name string, hidden bool) error {
	res, ok := resourceOf(kind)
	if !ok {
		return fmt.Errorf("kind %q not served", kind)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := ns + "/" + name
	o, ok := s.objects[res][k]
	if !ok {
		return fmt.Errorf("%s %s not found", kind, k)
	}
	delete(s.objects[res], k)
	s.rv++
	gone := object{}
	for kk, v := range o {
		gone[kk] = v
	}
	m := object{}
	for kk, v := range meta(o) {
		m[kk] = v
	}
	m["resourceVersion"] = strconv.FormatInt(s.rv, 10)
	gone["metadata"] = m
	if !hidden {
		s.history = append(s.history, event{s.rv, "DELETED", res, gone})
	}
	s.notify()
	return nil
}

// endWatches: every open watch ends (its client reconnects).
func (s *store) endWatches() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.closeAll)
	s.closeAll = make(chan struct{})
}

// compact: every version up to now expires and every open watch ends.
func (s *store) compact() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.floor = s.rv + 1
	s.history = nil
	s.pages = map[string]pageRest{} // their versions are gone too
	close(s.closeAll)
	s.closeAll = make(chan struct{})
}

func status(code int, reason, msg string) object {
	return object{"kind": "Status", "apiVersion": "v1", "metadata": object{}, "status": "Failure",
		"message": msg, "reason": reason, "code": code}
}

// writeJSON sends v with a Content-Length (never chunked: the tests read
// the control answers with a plain HTTP/1.1 reader).
func writeJSON(w http.ResponseWriter, code int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// matches applies the one field selector the daemon sends.
func matches(sel string, o object) bool {
	if sel == "" {
		return true
	}
	node := strings.TrimPrefix(sel, "spec.nodeName=")
	spec, _ := o["spec"].(object)
	got, _ := spec["nodeName"].(string)
	return got == node
}

type server struct {
	s         *store
	tokenFile string
	bookmark  time.Duration
	maxPage   int // a page holds at most this many items (0: as many as limit asks)
	tlsDir    string
	sans      []string
	cert      atomic.Pointer[tls.Certificate] // served to each new connection
	certGen   atomic.Int64                    // bumped by rotate-ca
}

// The certificate generation a connection was accepted under.
type certGenKey struct{}

func (sv *server) authorized(r *http.Request) bool {
	if sv.tokenFile == "" {
		return true
	}
	want, err := os.ReadFile(sv.tokenFile)
	if err != nil {
		return false
	}
	return r.Header.Get("Authorization") == "Bearer "+strings.TrimSpace(string(want))
}

func (sv *server) api(w http.ResponseWriter, r *http.Request) {
	// A connection made before rotate-ca (its request came in after): the
	// client must come back, and meet the new certificate.
	if g, _ := r.Context().Value(certGenKey{}).(int64); g != sv.certGen.Load() {
		w.Header().Set("Connection", "close")
		writeJSON(w, 503, status(503, "ServiceUnavailable", "serving certificate rotated: reconnect"))
		return
	}
	ok := sv.authorized(r)
	sv.s.mu.Lock()
	sv.s.requests = append(sv.s.requests, map[string]any{"path": r.URL.Path, "query": r.URL.RawQuery, "authorized": ok})
	sv.s.mu.Unlock()
	if !ok {
		writeJSON(w, 401, status(401, "Unauthorized", "Unauthorized"))
		return
	}
	var res, kind string
	switch r.URL.Path {
	case "/api/v1/pods":
		res, kind = "pods", "Pod"
	case "/api/v1/namespaces":
		res, kind = "namespaces", "Namespace"
	default:
		writeJSON(w, 404, status(404, "NotFound", "the server could not find the requested resource"))
		return
	}
	q := r.URL.Query()
	sel := q.Get("fieldSelector")
	if sel != "" && (res != "pods" || !strings.HasPrefix(sel, "spec.nodeName=")) {
		writeJSON(w, 400, status(400, "BadRequest", "field selector not supported here: "+sel))
		return
	}
	if q.Get("labelSelector") != "" {
		writeJSON(w, 400, status(400, "BadRequest", "labelSelector not supported here"))
		return
	}
	if q.Get("watch") == "true" || q.Get("watch") == "1" {
		sv.watch(w, r, res, kind, sel)
		return
	}
	limit, _ := strconv.Atoi(q.Get("limit"))
	sv.s.mu.Lock()
	defer sv.s.mu.Unlock()
	var items []object
	rv := sv.s.rv
	if token := q.Get("continue"); token != "" {
		rest, ok := sv.s.pages[token]
		if !ok {
			writeJSON(w, 410, status(410, "Expired", "The provided continue parameter is too old to display a "+
				"consistent list result. You can start a new list without the continue parameter."))
			return
		}
		delete(sv.s.pages, token)
		items, rv = rest.items, rest.rv
	} else {
		items = []object{}
		keys := make([]string, 0, len(sv.s.objects[res]))
		for k := range sv.s.objects[res] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if o := sv.s.objects[res][k]; matches(sel, o) {
				items = append(items, o)
			}
		}
	}
	md := object{"resourceVersion": strconv.FormatInt(rv, 10)}
	if sv.maxPage > 0 && limit > sv.maxPage {
		limit = sv.maxPage
	}
	if limit > 0 && len(items) > limit {
		sv.s.tokens++
		token := fmt.Sprintf("page/%d=%d", sv.s.tokens, rv)
		sv.s.pages[token] = pageRest{items: items[limit:], rv: rv}
		md["continue"] = token
		md["remainingItemCount"] = len(items) - limit
		items = items[:limit]
	}
	writeJSON(w, 200, object{"kind": kind + "List", "apiVersion": "v1", "metadata": md, "items": items})
}

func (sv *server) watch(w http.ResponseWriter, r *http.Request, res, kind, sel string) {
	q := r.URL.Query()
	from, err := strconv.ParseInt(q.Get("resourceVersion"), 10, 64)
	if err != nil && q.Get("resourceVersion") != "" {
		writeJSON(w, 400, status(400, "BadRequest", "resourceVersion: "+err.Error()))
		return
	}
	timeout := 1800 * time.Second
	if t, err := strconv.Atoi(q.Get("timeoutSeconds")); err == nil && t > 0 {
		timeout = time.Duration(t) * time.Second
	}
	bookmarks := q.Get("allowWatchBookmarks") == "true"
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(200)
	enc := json.NewEncoder(w) // one event per line
	send := func(typ string, o object) bool {
		if err := enc.Encode(object{"type": typ, "object": o}); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	sv.s.mu.Lock()
	if from != 0 && from < sv.s.floor {
		sv.s.mu.Unlock()
		send("ERROR", status(410, "Expired", fmt.Sprintf("too old resource version: %d (%d)", from, sv.s.floor)))
		return
	}
	sent := from
	if from == 0 { // "any version": the current state as ADDED events
		for _, o := range sv.s.objects[res] {
			if matches(sel, o) {
				send("ADDED", o)
			}
		}
		sent = sv.s.rv
	}
	sv.s.mu.Unlock()
	deadline := time.After(timeout)
	tick := time.NewTicker(sv.bookmark)
	defer tick.Stop()
	for {
		sv.s.mu.Lock()
		var out []event
		for _, e := range sv.s.history {
			if e.rv > sent && e.resource == res && matches(sel, e.obj) {
				out = append(out, e)
			}
		}
		if sv.s.rv > sent {
			sent = sv.s.rv
		}
		changed, closeAll := sv.s.changed, sv.s.closeAll
		sv.s.mu.Unlock()
		for _, e := range out {
			if !send(e.typ, e.obj) {
				return
			}
		}
		select {
		case <-changed:
		case <-tick.C:
			if bookmarks {
				if !send("BOOKMARK", object{"kind": kind, "apiVersion": "v1",
					"metadata": object{"resourceVersion": strconv.FormatInt(sent, 10)}}) {
					return
				}
			}
		case <-closeAll:
			return
		case <-deadline:
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (sv *server) control(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	hidden := q.Get("hidden") == "true"
	switch r.URL.Path {
	case "/control/apply":
		var o object
		if err := json.NewDecoder(r.Body).Decode(&o); err != nil {
			writeJSON(w, 400, status(400, "BadRequest", err.Error()))
			return
		}
		objs := []object{o}
		if o["kind"] == "List" { // kubectl get -o json of several objects
			objs = nil
			items, _ := o["items"].([]any)
			for _, it := range items {
				if io, ok := it.(object); ok {
					objs = append(objs, io)
				}
			}
		}
		var types []string
		for _, one := range objs {
			typ, err := sv.s.apply(one, hidden)
			if err != nil {
				writeJSON(w, 400, status(400, "BadRequest", err.Error()))
				return
			}
			types = append(types, typ)
		}
		writeJSON(w, 200, object{"applied": types})
	case "/control/delete":
		if err := sv.s.remove(q.Get("kind"), q.Get("namespace"), q.Get("name"), hidden); err != nil {
			writeJSON(w, 404, status(404, "NotFound", err.Error()))
			return
		}
		writeJSON(w, 200, object{"deleted": q.Get("name")})
	case "/control/compact":
		sv.s.compact()
		writeJSON(w, 200, object{"compacted": true})
	case "/control/rotate-ca":
		dir := filepath.Join(sv.tlsDir, "rotated")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			writeJSON(w, 500, status(500, "InternalError", err.Error()))
			return
		}
		cert, err := makeTLS(dir, sv.sans)
		if err != nil {
			writeJSON(w, 500, status(500, "InternalError", err.Error()))
			return
		}
		sv.cert.Store(&cert)
		sv.certGen.Add(1)
		sv.s.endWatches()
		writeJSON(w, 200, object{"ca": filepath.Join(dir, "ca.crt")})
	case "/control/requests":
		sv.s.mu.Lock()
		reqs := append([]map[string]any(nil), sv.s.requests...)
		sv.s.mu.Unlock()
		writeJSON(w, 200, reqs)
	default:
		writeJSON(w, 404, status(404, "NotFound", r.URL.Path))
	}
}

// makeTLS writes ca.crt into dir and returns a certificate for the server
// signed by that CA, valid for the loopback addresses and `sans`.
func makeTLS(dir string, sans []string) (tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake-apiserver-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes.default.svc"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else if s != "" {
			leaf.DNSNames = append(leaf.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), caPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	controlListen := flag.String("control-listen", "127.0.0.1:0", "plain-HTTP address of /control")
	addrFile := flag.String("addr-file", "", "write the API and control addresses here once serving")
	tlsDir := flag.String("tls-dir", "", "serve HTTPS with a CA made here (ca.crt); plain HTTP without")
	san := flag.String("san", "", "extra comma-separated IPs or names for the server certificate")
	tokenFile := flag.String("token-file", "", "bearer token clients must send, re-read per request")
	objects := flag.String("objects", "", "a JSON object or List (kubectl get -o json) to start with")
	bookmark := flag.Duration("bookmark-interval", time.Second, "BOOKMARK events this often")
	maxPage := flag.Int("max-page", 0, "at most this many items per page of a list asked with limit (0: limit)")
	flag.Parse()

	s := newStore()
	if *objects != "" {
		data, err := os.ReadFile(*objects)
		if err != nil {
			log.Fatal(err)
		}
		var o object
		if err := json.Unmarshal(data, &o); err != nil {
			log.Fatalf("%s: %v", *objects, err)
		}
		items := []any{o}
		if o["kind"] == "List" {
			items, _ = o["items"].([]any)
		}
		for _, it := range items {
			if io, ok := it.(object); ok {
				if _, err := s.apply(io, false); err != nil {
					log.Fatalf("%s: %v", *objects, err)
				}
			}
		}
	}
	sv := &server{s: s, tokenFile: *tokenFile, bookmark: *bookmark, maxPage: *maxPage}
	api := http.NewServeMux()
	api.HandleFunc("/api/", sv.api)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if *tlsDir != "" {
		sv.tlsDir, sv.sans = *tlsDir, strings.Split(*san, ",")
		cert, err := makeTLS(*tlsDir, sv.sans)
		if err != nil {
			log.Fatal(err)
		}
		sv.cert.Store(&cert)
		ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return sv.cert.Load(), nil }})
	}
	ctl := http.NewServeMux()
	ctl.HandleFunc("/control/", sv.control)
	cln, err := net.Listen("tcp", *controlListen)
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal((&http.Server{Handler: ctl}).Serve(cln)) }()
	if *addrFile != "" { // "API-ADDR CONTROL-ADDR", written whole
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(ln.Addr().String()+" "+cln.Addr().String()), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			log.Fatal(err)
		}
	}
	log.Fatal((&http.Server{Handler: api, ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, certGenKey{}, sv.certGen.Load())
	}}).Serve(ln))
}
