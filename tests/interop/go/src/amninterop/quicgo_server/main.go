// SPDX-License-Identifier: MIT OR Apache-2.0
// quicgo_server: gRPC over HTTP/3 written by hand on quic-go's http3 server
// (an independent QUIC + HTTP/3 stack), implementing the echo contract of
// package echo with mutual TLS. Prints "listening on HOST:PORT" when ready;
// SIGTERM/SIGINT close it (exit 0).
//
// quic-go 0.29's http3.ResponseWriter cannot send trailers. Errors before
// any response message are trailers-only responses (grpc-status in the
// headers, which it can send); otherwise, after the messages, the handler
// takes the request stream over (http3.HTTPStreamer) and writes the trailing
// HEADERS frame itself (common.WriteTrailers, quic-go's QPACK encoder).
//
// Usage: quicgo_server -listen 127.0.0.1:0 -cert F -key F -ca F
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	pb "amaterspb"
	"amninterop/common"
	"amninterop/echo"

	"github.com/golang/protobuf/proto"
	"github.com/lucas-clemente/quic-go/http3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const maxMsg = 64 << 20

// percentEncode encodes a grpc-message value (PROTOCOL-HTTP2.md).
func percentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// grpcTimeout parses a grpc-timeout value: at most 8 digits and a unit.
func grpcTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
		'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	if n > int64(1<<63-1)/int64(unit) {
		return 1<<63 - 1, true
	}
	return time.Duration(n) * unit, true
}

// call is one gRPC call on an HTTP/3 request stream.
type call struct {
	w       http.ResponseWriter
	r       *http.Request
	ctx     context.Context
	started bool // response headers sent
}

func (c *call) send(m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	if !c.started {
		c.w.WriteHeader(200)
		c.started = true
	}
	if _, err := c.w.Write(common.Frame(b)); err != nil {
		return err
	}
	c.w.(http.Flusher).Flush()
	return nil
}

// finish ends the call with st: trailers-only if nothing was sent yet,
// else a trailer section written on the taken-over stream.
func (c *call) finish(st codes.Code, msg string) {
	fields := map[string]string{"grpc-status": strconv.Itoa(int(st))}
	if msg != "" {
		fields["grpc-message"] = percentEncode(msg)
	}
	for k, v := range c.r.Header {
		if k = strings.ToLower(k); strings.HasPrefix(k, "x-echo-") && len(v) > 0 {
			fields[k] = v[0]
		}
	}
	if !c.started {
		for k, v := range fields {
			c.w.Header().Set(k, v)
		}
		c.w.WriteHeader(200)
		return
	}
	c.w.(http.Flusher).Flush()
	raw := common.RawStream(c.r.Body.(http3.HTTPStreamer).HTTPStream())
	if err := common.WriteTrailers(raw, fields); err != nil {
		fmt.Fprintf(os.Stderr, "quicgo_server: writing trailers: %v\n", err)
	}
	raw.Close()
}

func (c *call) recv(m proto.Message) error {
	b, err := common.ReadMessage(c.r.Body, maxMsg)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, m)
}

func serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "gRPC only", http.StatusMethodNotAllowed)
		return
	}
	if !strings.HasPrefix(r.Header.Get("content-type"), "application/grpc") {
		http.Error(w, "gRPC only", http.StatusUnsupportedMediaType)
		return
	}
	w.Header().Set("content-type", "application/grpc")
	c := &call{w: w, r: r, ctx: r.Context()}
	if v := r.Header.Get("grpc-timeout"); v != "" {
		d, ok := grpcTimeout(v)
		if !ok {
			c.finish(codes.InvalidArgument, "malformed grpc-timeout "+v)
			return
		}
		var cancel context.CancelFunc
		c.ctx, cancel = context.WithTimeout(c.ctx, d)
		defer cancel()
	}
	switch r.URL.Path {
	case "/amaters.v1.AmateRS/Execute":
		var q pb.QueryRequest
		if err := c.recv(&q); err != nil {
			c.finish(codes.Internal, "reading the request message: "+err.Error())
			return
		}
		if _, err := common.ReadMessage(r.Body, maxMsg); err != io.EOF {
			c.finish(codes.Internal, "unary method received more than one request message")
			return
		}
		c.answer(&q)
	case "/amaters.v1.AmateRS/ExecuteStream":
		for {
			var q pb.QueryRequest
			err := c.recv(&q)
			if err == io.EOF {
				c.finish(codes.OK, "")
				return
			}
			if err != nil {
				c.finish(codes.Internal, "reading a request message: "+err.Error())
				return
			}
			if !c.answer(&q) {
				return
			}
		}
	case "/grpc.health.v1.Health/Check":
		var q healthpb.HealthCheckRequest
		if err := c.recv(&q); err != nil {
			c.finish(codes.Internal, "reading the request message: "+err.Error())
			return
		}
		st := healthpb.HealthCheckResponse_SERVING
		switch q.Service {
		case "", "amaters.v1.AmateRS":
		case echo.DownService:
			st = healthpb.HealthCheckResponse_NOT_SERVING
		default:
			c.finish(codes.NotFound, "unknown service "+q.Service)
			return
		}
		if err := c.send(&healthpb.HealthCheckResponse{Status: st}); err == nil {
			c.finish(codes.OK, "")
		}
	default:
		c.finish(codes.Unimplemented, "unknown method "+r.URL.Path)
	}
}

// answer sends the echo response to q, or ends the call with the status
// the contract gives; false when the call ended.
func (c *call) answer(q *pb.QueryRequest) bool {
	res, st := echo.Answer(c.ctx, q.GetQueryBytes())
	if st != nil {
		c.finish(st.Code, st.Message)
		return false
	}
	if err := c.send(&pb.QueryResponse{ResultBytes: res, ServerProof: []byte(echo.Proof)}); err != nil {
		return false
	}
	if c.r.URL.Path == "/amaters.v1.AmateRS/Execute" {
		c.finish(codes.OK, "")
	}
	return true
}

func main() {
	listen, tlsConf := common.ServerFlags("quicgo_server")
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		common.Fatal("listen: %v", err)
	}
	s := &http3.Server{Handler: http.HandlerFunc(serve), TLSConfig: tlsConf}
	done := make(chan struct{})
	common.OnSignal(func() {
		close(done)
		s.Close()
	})
	fmt.Printf("quicgo_server: listening on %s\n", pc.LocalAddr())
	err = s.Serve(pc)
	select {
	case <-done: // closed by a signal
	default:
		common.Fatal("serve: %v", err)
	}
}
