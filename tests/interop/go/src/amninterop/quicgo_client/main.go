// SPDX-License-Identifier: MIT OR Apache-2.0
// quicgo_client: quic-go's HTTP/3 client (an independent QUIC + HTTP/3
// stack) sending gRPC requests written by hand (POST, application/grpc,
// te: trailers, length-prefixed messages) to amaters-netd over mutual TLS.
// One line per check, then "quicgo_client: N passed, M failed"; exit 1 if
// any check failed.
//
// quic-go 0.29's http3 client exposes the response headers but not the
// trailers (its body reader skips a trailing HEADERS frame without
// consuming it), so the response body is read from the QUIC stream under
// it with common.H3Body, which decodes the trailers with quic-go's QPACK.
//
// Usage: quicgo_client -addr 127.0.0.1:PORT -pki DIR -other DIR
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	pb "amaterspb"
	"amninterop/common"

	"github.com/golang/protobuf/proto"
	"github.com/lucas-clemente/quic-go"
	"github.com/lucas-clemente/quic-go/http3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

var (
	addr  = flag.String("addr", "", "server address HOST:PORT")
	pki   = flag.String("pki", "", "directory with ca.pem, client.pem, client-key.pem")
	other = flag.String("other", "", "a PKI of an unrelated CA")
	c     common.Checks
)

const maxMsg = 64 << 20

func transport(ca, cert, key string) *http3.RoundTripper {
	return &http3.RoundTripper{TLSClientConfig: common.ClientTLS(ca, cert, key, "localhost"),
		DisableCompression: true, QuicConfig: &quic.Config{HandshakeIdleTimeout: 10 * time.Second}}
}

// reply is one gRPC call's answer as seen on the wire.
type reply struct {
	res      *http.Response
	body     *common.H3Body
	messages [][]byte
	err      error
}

// status is grpc-status from the trailers, or from the headers of a
// trailers-only response; "" if neither has it.
func (r *reply) status() string {
	if r.body != nil && r.body.Trailers != nil {
		return r.body.Trailers["grpc-status"]
	}
	if r.res != nil {
		return r.res.Header.Get("grpc-status")
	}
	return ""
}

func (r *reply) String() string {
	if r.err != nil {
		return "error: " + r.err.Error()
	}
	tr := map[string]string{}
	if r.body != nil {
		tr = r.body.Trailers
	}
	return fmt.Sprintf("HTTP %d headers %v, %d messages, trailers %v", r.res.StatusCode, r.res.Header, len(r.messages), tr)
}

func newRequest(ctx context.Context, method, path string, body io.Reader, hdr ...string) *http.Request {
	req, err := http.NewRequestWithContext(ctx, method, "https://"+*addr+path, body)
	if err != nil {
		common.Fatal("request: %v", err)
	}
	req.Header.Set("content-type", "application/grpc")
	req.Header.Set("te", "trailers")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req
}

// finish reads the rest of a response: messages up to the end of the body,
// which must end with the trailer section (or be empty after trailers-only headers).
func finish(r *reply) {
	if r.body == nil {
		r.body = common.NewH3Body(common.RawStream(r.res.Body.(http3.HTTPStreamer).HTTPStream()))
	}
	for {
		m, err := common.ReadMessage(r.body, maxMsg)
		if err == io.EOF {
			return
		}
		if err != nil {
			r.err = err
			return
		}
		r.messages = append(r.messages, m)
	}
}

// unary sends the given request messages (already encoded), half-closes
// and reads the whole response.
func unary(rt *http3.RoundTripper, path string, msgs [][]byte, hdr ...string) *reply {
	var body bytes.Buffer
	for _, m := range msgs {
		body.Write(common.Frame(m))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// a plain io.Reader: no content-length, as a gRPC client sends
	req := newRequest(ctx, http.MethodPost, path, io.MultiReader(&body), hdr...)
	r := &reply{}
	if r.res, r.err = rt.RoundTrip(req); r.err != nil {
		return r
	}
	finish(r)
	return r
}

func query(q []byte) []byte {
	b, err := proto.Marshal(&pb.QueryRequest{QueryBytes: q})
	if err != nil {
		common.Fatal("marshal: %v", err)
	}
	return b
}

func result(m []byte) ([]byte, error) {
	var r pb.QueryResponse
	err := proto.Unmarshal(m, &r)
	return r.GetResultBytes(), err
}

// echoed: an OK answer of one message whose result is q.
func echoed(r *reply, q []byte) bool {
	if r.err != nil || r.res.StatusCode != 200 || !strings.HasPrefix(r.res.Header.Get("content-type"), "application/grpc") ||
		r.status() != "0" || len(r.messages) != 1 {
		return false
	}
	got, err := result(r.messages[0])
	return err == nil && bytes.Equal(got, q)
}

const execute = "/amaters.v1.AmateRS/Execute"

func main() {
	flag.Parse()
	if *addr == "" || *pki == "" || *other == "" {
		common.Fatal("usage: quicgo_client -addr HOST:PORT -pki DIR -other DIR")
	}
	P := func(f string) string { return filepath.Join(*pki, f) }
	O := func(f string) string { return filepath.Join(*other, f) }
	rt := transport(P("ca.pem"), P("client.pem"), P("client-key.pem"))
	defer rt.Close()

	r := unary(rt, execute, [][]byte{query([]byte("hello"))})
	c.Check("unary Execute over HTTP/3: 200, application/grpc, one message 'hello', trailers grpc-status 0",
		echoed(r, []byte("hello")), "%v", r)
	c.Check("  ... HTTP/3 negotiated (ALPN h3) with TLS 1.3", r.res != nil && r.res.ProtoMajor == 3 && r.res.TLS != nil &&
		r.res.TLS.NegotiatedProtocol == "h3" && r.res.TLS.Version == 0x0304, "%v", r.res)
	c.Check("  ... grpc-status in the trailer section, not in the headers",
		r.body != nil && r.body.Trailers != nil && r.res.Header.Get("grpc-status") == "", "%v", r)

	big := make([]byte, 4<<20)
	rand.Read(big)
	r = unary(rt, execute, [][]byte{query(big)})
	c.Check("unary Execute with 4 MiB of random bytes echoed", echoed(r, big), "%v", r)

	r = unary(rt, execute, [][]byte{query([]byte("md"))}, "x-echo-trace", "t-42", "x-other", "no")
	c.Check("x-echo-trace returned in the trailers, x-other not", echoed(r, []byte("md")) &&
		r.body.Trailers["x-echo-trace"] == "t-42" && r.body.Trailers["x-other"] == "", "%v", r)

	// a streamed call: each message answered before the next is sent, then
	// a burst, then the half-close ends it with OK
	{
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		pr, pw := io.Pipe()
		first := make(chan error, 1)
		go func() { _, err := pw.Write(common.Frame(query([]byte("ping-0")))); first <- err }()
		s := &reply{}
		s.res, s.err = rt.RoundTrip(newRequest(ctx, http.MethodPost, "/amaters.v1.AmateRS/ExecuteStream", pr))
		okPing := s.err == nil && <-first == nil
		if okPing {
			s.body = common.NewH3Body(common.RawStream(s.res.Body.(http3.HTTPStreamer).HTTPStream()))
		}
		for i := 0; okPing && i < 10; i++ {
			if i > 0 {
				if _, err := pw.Write(common.Frame(query([]byte(fmt.Sprintf("ping-%d", i))))); err != nil {
					s.err, okPing = err, false
					break
				}
			}
			m, err := common.ReadMessage(s.body, maxMsg)
			got, _ := result(m)
			if err != nil || string(got) != fmt.Sprintf("ping-%d", i) {
				s.err, okPing = fmt.Errorf("ping %d: %q, %v", i, got, err), false
			}
		}
		c.Check("ExecuteStream over HTTP/3: 10 messages, each answered before the next is sent", okPing, "%v", s)
		var sent [][]byte
		go func() {
			for i := 0; okPing && i < 100; i++ {
				pw.Write(common.Frame(query([]byte(fmt.Sprintf("burst-%d", i)))))
			}
			pw.Close()
		}()
		for i := 0; i < 100; i++ {
			sent = append(sent, []byte(fmt.Sprintf("burst-%d", i)))
		}
		if okPing {
			finish(s)
		}
		same := len(s.messages) == len(sent)
		for i := 0; same && i < len(sent); i++ {
			got, err := result(s.messages[i])
			same = err == nil && bytes.Equal(got, sent[i])
		}
		c.Check("  ... a burst of 100 messages back in order, then trailers grpc-status 0 after the half-close",
			okPing && s.err == nil && same && s.status() == "0", "%v", s)
		cancel()
	}

	// grpc-timeout
	r = unary(rt, execute, [][]byte{query([]byte("long"))}, "grpc-timeout", "99999999H")
	c.Check("grpc-timeout: 99999999H (the largest legal value) answers OK", echoed(r, []byte("long")), "%v", r)
	r = unary(rt, execute, [][]byte{query([]byte("short"))}, "grpc-timeout", "5S")
	c.Check("grpc-timeout: 5S answers OK", echoed(r, []byte("short")), "%v", r)
	r = unary(rt, execute, [][]byte{query(big)}, "grpc-timeout", "1n")
	c.Check("grpc-timeout: 1n on a 4 MiB call -> grpc-status 4 (DEADLINE_EXCEEDED)", r.err == nil && r.status() == "4", "%v", r)

	// errors
	r = unary(rt, "/amaters.v1.AmateRS/Nope", [][]byte{query([]byte("x"))})
	c.Check("unknown method -> grpc-status 12 (UNIMPLEMENTED)", r.err == nil && r.status() == "12" && len(r.messages) == 0, "%v", r)
	r = unary(rt, "/no.such.Service/Execute", [][]byte{query([]byte("x"))})
	c.Check("unknown service -> grpc-status 12 (UNIMPLEMENTED)", r.err == nil && r.status() == "12", "%v", r)
	// Both messages travel in the one DATA frame of the request body, so the
	// server has the second before it could have answered the first.
	r = unary(rt, execute, [][]byte{query([]byte("a")), query([]byte("b"))})
	c.Check("two request messages (one DATA frame) on a unary method -> a non-OK grpc-status, no echo",
		r.err == nil && r.status() != "" && r.status() != "0" && len(r.messages) == 0, "%v", r)
	{
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+*addr+execute, nil)
		res, err := rt.RoundTrip(req)
		c.Check("a non-gRPC GET gets an HTTP error status (405)", err == nil && res.StatusCode == 405, "res=%v err=%v", res, err)
		if err == nil {
			// with a text body that says why, for browsers and HTTP tools
			body, berr := io.ReadAll(res.Body)
			c.Check("... with a text body that says why", berr == nil &&
				strings.HasPrefix(res.Header.Get("content-type"), "text/plain") &&
				strings.HasPrefix(string(body), "405: method not allowed") &&
				strings.Contains(string(body), "This is a gRPC server"), "content-type %q body %q err %v",
				res.Header.Get("content-type"), body, berr)
		}
		req = newRequest(ctx, http.MethodPost, execute, strings.NewReader("not a grpc message"), "content-type", "text/plain")
		res, err = rt.RoundTrip(req)
		c.Check("a POST with content-type text/plain gets 415", err == nil && res.StatusCode == 415, "res=%v err=%v", res, err)
		cancel()
	}

	// health
	{
		req, _ := proto.Marshal(&healthpb.HealthCheckRequest{})
		r = unary(rt, "/grpc.health.v1.Health/Check", [][]byte{req})
		var hr healthpb.HealthCheckResponse
		ok := r.err == nil && r.status() == "0" && len(r.messages) == 1 && proto.Unmarshal(r.messages[0], &hr) == nil
		c.Check("grpc.health.v1.Health/Check over HTTP/3 -> SERVING",
			ok && hr.Status == healthpb.HealthCheckResponse_SERVING, "%v %v", r, hr.Status)
		req, _ = proto.Marshal(&healthpb.HealthCheckRequest{Service: "no.such.Service"})
		r = unary(rt, "/grpc.health.v1.Health/Check", [][]byte{req})
		c.Check("Health/Check of an unknown service -> grpc-status 5 (NOT_FOUND)", r.err == nil && r.status() == "5", "%v", r)
	}

	// mutual TLS refusals, each with a new connection: a TLS alert in CONNECTION_CLOSE
	refused := func(name string, alert uint64, ca, cert, key string) {
		t := transport(ca, cert, key)
		r := unary(t, execute, [][]byte{query([]byte("x"))})
		t.Close()
		var te *quic.TransportError
		ok := r.err != nil && errors.As(r.err, &te) && uint64(te.ErrorCode) >= 0x100 && uint64(te.ErrorCode) <= 0x1ff
		if alert != 0 {
			ok = ok && te.Remote && uint64(te.ErrorCode) == 0x100+alert
		}
		c.Check(name, ok, "%v", r)
	}
	refused("handshake without a client certificate refused (CRYPTO_ERROR 0x174, certificate_required)",
		116, P("ca.pem"), "", "")
	refused("handshake with a client certificate from another CA refused (a TLS alert from the server)",
		0, P("ca.pem"), O("client.pem"), O("client-key.pem"))
	refused("server certificate from an untrusted CA refused by quic-go", 0, O("ca.pem"), P("client.pem"), P("client-key.pem"))
	{
		t := transport(P("ca.pem"), P("client.pem"), P("client-key.pem"))
		r := unary(t, execute, [][]byte{query([]byte("still-up"))})
		t.Close()
		c.Check("a new good connection is served after the refusals", echoed(r, []byte("still-up")), "%v", r)
	}
	c.Exit("quicgo_client")
}
