// A stand-in Istio CA for the tests (no istiod can be had here): the real
// IstioCertificateService API from istio.io/api over TLS, with istiod's
// rules that matter to a client — a bearer token is required, the CSR's
// signature is checked, the identity comes from the caller (here: the one
// token it accepts) not from the CSR, the TTL is honoured in seconds, and the
// chain comes back leaf first, root last.
//
//	ca -listen 127.0.0.1:0 -cert server.pem -key server.key -root-cert root.pem
//	   -root-key root.key -token TOKEN -identity spiffe://cluster.local/ns/N/sa/S
//
// Prints "listening PORT", then per call "CSR <URI SAN>" for what the client
// asked and "ISSUED <identity> <ttl>s", or "DENIED <why>".
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
)

type ca struct {
	pb.UnimplementedIstioCertificateServiceServer
	root     *x509.Certificate
	rootKey  any
	rootPEM  string
	token    string
	identity *url.URL
}

func (c *ca) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if auth := md.Get("authorization"); len(auth) != 1 || auth[0] != "Bearer "+c.token {
		fmt.Println("DENIED bad or missing bearer token")
		return nil, status.Error(codes.Unauthenticated, "authentication failure")
	}
	block, _ := pem.Decode([]byte(req.GetCsr()))
	if block == nil {
		fmt.Println("DENIED CSR is not PEM")
		return nil, status.Error(codes.InvalidArgument, "bad CSR")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		fmt.Println("DENIED", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	for _, u := range csr.URIs {
		fmt.Println("CSR", u)
	}
	ttl := time.Duration(req.GetValidityDuration()) * time.Second
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    time.Now().Add(-2 * time.Minute),
		NotAfter:     time.Now().Add(ttl),
		URIs:         []*url.URL{c.identity},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.root, csr.PublicKey, c.rootKey)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	leaf := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	fmt.Printf("ISSUED %s %ds\n", c.identity, int(ttl.Seconds()))
	return &pb.IstioCertificateResponse{CertChain: []string{leaf, c.rootPEM}}, nil
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address")
	cert := flag.String("cert", "", "server certificate (PEM)")
	key := flag.String("key", "", "server key (PEM)")
	rootCert := flag.String("root-cert", "", "signing root certificate (PEM)")
	rootKey := flag.String("root-key", "", "signing root key (PEM)")
	token := flag.String("token", "", "the one bearer token accepted")
	identity := flag.String("identity", "", "SPIFFE id issued to that token's caller")
	flag.Parse()

	pair, err := tls.LoadX509KeyPair(*rootCert, *rootKey)
	must(err)
	root, err := x509.ParseCertificate(pair.Certificate[0])
	must(err)
	rootPEM, err := os.ReadFile(*rootCert)
	must(err)
	id, err := url.Parse(*identity)
	must(err)
	server, err := tls.LoadX509KeyPair(*cert, *key)
	must(err)
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{server}})))
	pb.RegisterIstioCertificateServiceServer(g, &ca{root: root, rootKey: pair.PrivateKey, rootPEM: string(rootPEM),
		token: *token, identity: id})
	lis, err := net.Listen("tcp", *listen)
	must(err)
	fmt.Printf("listening %d\n", lis.Addr().(*net.TCPAddr).Port)
	must(g.Serve(lis))
}
