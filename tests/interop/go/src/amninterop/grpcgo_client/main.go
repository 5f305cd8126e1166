// SPDX-License-Identifier: MIT OR Apache-2.0
// grpcgo_client: grpc-go (an independent gRPC implementation) as the client
// of amaters-netd over HTTP/2 with mutual TLS. One line per check, then
// "grpcgo_client: N passed, M failed"; exit 1 if any check failed.
//
// Usage: grpcgo_client -addr 127.0.0.1:PORT -pki DIR -other DIR
// (DIR holds ca.pem, client.pem, client-key.pem; -other: an unrelated CA
// with its own client certificate).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	pb "amaterspb"
	"amninterop/common"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

var (
	addr  = flag.String("addr", "", "server address HOST:PORT")
	pki   = flag.String("pki", "", "directory with ca.pem, client.pem, client-key.pem")
	other = flag.String("other", "", "a PKI of an unrelated CA")
	c     common.Checks
)

const callTimeout = 20 * time.Second

func dial(ca, cert, key string) *grpc.ClientConn {
	tc := common.ClientTLS(ca, cert, key, "localhost")
	conn, err := grpc.Dial(*addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		common.Fatal("dial: %v", err)
	}
	return conn
}

func execute(cl pb.AmateRSClient, q []byte, timeout time.Duration, opts ...grpc.CallOption) (*pb.QueryResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return cl.Execute(ctx, &pb.QueryRequest{QueryBytes: q}, opts...)
}

func echoes(cl pb.AmateRSClient, name string, q []byte) {
	r, err := execute(cl, q, callTimeout)
	c.Check(name, err == nil && bytes.Equal(r.GetResultBytes(), q) && len(r.GetServerProof()) == 0,
		"err=%v, %d bytes back for %d", err, len(r.GetResultBytes()), len(q))
}

func code(err error) codes.Code { return status.Code(err) }

func main() {
	flag.Parse()
	if *addr == "" || *pki == "" || *other == "" {
		common.Fatal("usage: grpcgo_client -addr HOST:PORT -pki DIR -other DIR")
	}
	P := func(f string) string { return filepath.Join(*pki, f) }
	O := func(f string) string { return filepath.Join(*other, f) }
	conn := dial(P("ca.pem"), P("client.pem"), P("client-key.pem"))
	defer conn.Close()
	cl := pb.NewAmateRSClient(conn)

	// unary
	echoes(cl, "unary Execute echoes 'hello'", []byte("hello"))
	echoes(cl, "unary Execute echoes an empty query", nil)
	big := make([]byte, 4<<20)
	rand.Read(big)
	echoes(cl, "unary Execute echoes 4 MiB of random bytes", big)
	{
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		r, err := cl.Execute(ctx, &pb.QueryRequest{QueryBytes: []byte("q"), ClientSignature: []byte("sig")})
		cancel()
		c.Check("client_signature accepted, result_bytes = query_bytes", err == nil && string(r.GetResultBytes()) == "q",
			"err=%v r=%v", err, r)
	}
	{
		var wg sync.WaitGroup
		var mu sync.Mutex
		bad := 0
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				q := bytes.Repeat([]byte(fmt.Sprintf("call-%d;", i)), i%13+1)
				r, err := execute(cl, q, callTimeout)
				if err != nil || !bytes.Equal(r.GetResultBytes(), q) {
					mu.Lock()
					bad++
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
		c.Check("100 concurrent unary calls on one connection", bad == 0, "%d wrong", bad)
	}

	// bidirectional stream: ping-pong (each answer before the next send), then a burst
	{
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		st, err := cl.ExecuteStream(ctx)
		okPing := err == nil
		for i := 0; okPing && i < 10; i++ {
			q := []byte(fmt.Sprintf("ping-%d", i))
			if err = st.Send(&pb.QueryRequest{QueryBytes: q}); err != nil {
				okPing = false
				break
			}
			r, rerr := st.Recv()
			okPing = rerr == nil && bytes.Equal(r.GetResultBytes(), q)
			err = rerr
		}
		c.Check("ExecuteStream ping-pong: 10 messages, each answered before the next is sent", okPing, "err=%v", err)
		var sent [][]byte
		for i := 0; okPing && i < 200; i++ {
			q := append([]byte(fmt.Sprintf("burst-%d-", i)), bytes.Repeat([]byte{byte(i)}, i*37%3000)...)
			sent = append(sent, q)
			if err = st.Send(&pb.QueryRequest{QueryBytes: q}); err != nil {
				break
			}
		}
		if err == nil {
			err = st.CloseSend()
		}
		got := 0
		for err == nil {
			r, rerr := st.Recv()
			if rerr != nil {
				err = rerr
				break
			}
			if got >= len(sent) || !bytes.Equal(r.GetResultBytes(), sent[got]) {
				err = fmt.Errorf("response %d differs", got)
				break
			}
			got++
		}
		c.Check("ExecuteStream burst: 200 messages back in order, then OK after half-close",
			err == io.EOF && got == 200, "got %d, end %v", got, err)
		cancel()
	}
	{
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		st, err := cl.ExecuteStream(ctx)
		if err == nil {
			err = st.CloseSend()
		}
		if err == nil {
			_, err = st.Recv()
		}
		cancel()
		c.Check("ExecuteStream without messages: OK, no response", err == io.EOF, "err=%v", err)
	}

	// metadata: x-echo-* comes back as trailing metadata, other keys do not
	{
		blob := []byte{0, 1, 0x7f, 0x80, 0xfe, 0xff}
		ctx := metadata.AppendToOutgoingContext(context.Background(),
			"x-echo-ascii", "hello world", "x-echo-blob-bin", string(blob), "x-other", "not-echoed")
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		var tr, hd metadata.MD
		r, err := cl.Execute(ctx, &pb.QueryRequest{QueryBytes: []byte("md")}, grpc.Trailer(&tr), grpc.Header(&hd))
		cancel()
		get := func(k string) string {
			if v := tr.Get(k); len(v) == 1 {
				return v[0]
			}
			return fmt.Sprintf("%q", tr.Get(k))
		}
		c.Check("x-echo-ascii returned as trailing metadata", err == nil && string(r.GetResultBytes()) == "md" &&
			get("x-echo-ascii") == "hello world", "err=%v trailers=%v", err, tr)
		c.Check("x-echo-blob-bin (binary) returned byte for byte", get("x-echo-blob-bin") == string(blob), "trailers=%v", tr)
		c.Check("x-other not echoed", len(tr.Get("x-other")) == 0 && len(hd.Get("x-echo-ascii")) == 0,
			"trailers=%v headers=%v", tr, hd)
	}

	// deadlines
	{
		r, err := execute(cl, []byte("in-time"), 5*time.Second)
		c.Check("call with a 5 s deadline (grpc-timeout sent) answers OK", err == nil && string(r.GetResultBytes()) == "in-time", "err=%v", err)
		_, err = execute(cl, []byte("late"), time.Nanosecond)
		c.Check("1 ns deadline -> DEADLINE_EXCEEDED", code(err) == codes.DeadlineExceeded, "err=%v", err)
		_, err = execute(cl, big, time.Millisecond)
		c.Check("4 MiB with a 1 ms deadline -> DEADLINE_EXCEEDED", code(err) == codes.DeadlineExceeded, "err=%v", err)

		// an open stream that the client never half-closes: only the deadline ends it
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		st, err := cl.ExecuteStream(ctx)
		if err == nil {
			err = st.Send(&pb.QueryRequest{QueryBytes: []byte("first")})
		}
		var first *pb.QueryResponse
		if err == nil {
			first, err = st.Recv()
		}
		if err == nil {
			_, err = st.Recv()
		}
		el := time.Since(t0)
		cancel()
		c.Check("open stream: first echo, then DEADLINE_EXCEEDED after 500 ms",
			string(first.GetResultBytes()) == "first" && code(err) == codes.DeadlineExceeded && el >= 400*time.Millisecond,
			"first=%q err=%v after %v", first.GetResultBytes(), err, el)
		echoes(cl, "connection still serves after expired deadlines", []byte("after"))
	}

	// unknown methods
	for _, m := range []string{"/amaters.v1.AmateRS/Nope", "/no.such.Service/Execute"} {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		err := conn.Invoke(ctx, m, &pb.QueryRequest{QueryBytes: []byte("x")}, &pb.QueryResponse{})
		cancel()
		c.Check("unknown method "+m+" -> UNIMPLEMENTED", code(err) == codes.Unimplemented, "err=%v", err)
	}

	// health
	{
		hc := healthpb.NewHealthClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		c.Check("grpc.health.v1.Health/Check \"\" -> SERVING", err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING,
			"err=%v r=%v", err, r)
		r, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "amaters.v1.AmateRS"})
		c.Check("Health/Check amaters.v1.AmateRS -> SERVING", err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING,
			"err=%v r=%v", err, r)
		_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
		c.Check("Health/Check of an unknown service -> NOT_FOUND", code(err) == codes.NotFound, "err=%v", err)
		cancel()
	}

	// mutual TLS refusals: each on its own connection
	refused := func(name, ca, cert, key string) {
		cc := dial(ca, cert, key)
		_, err := execute(pb.NewAmateRSClient(cc), []byte("x"), 10*time.Second)
		cc.Close()
		c.Check(name+" -> UNAVAILABLE", code(err) == codes.Unavailable, "err=%v", err)
	}
	refused("no client certificate", P("ca.pem"), "", "")
	refused("client certificate from another CA", P("ca.pem"), O("client.pem"), O("client-key.pem"))
	refused("server certificate not trusted (other CA)", O("ca.pem"), P("client.pem"), P("client-key.pem"))
	{
		cc := dial(P("ca.pem"), P("client.pem"), P("client-key.pem"))
		r, err := execute(pb.NewAmateRSClient(cc), []byte("still-up"), callTimeout)
		cc.Close()
		c.Check("a new good connection is served after the refusals", err == nil && string(r.GetResultBytes()) == "still-up", "err=%v", err)
	}
	c.Exit("grpcgo_client")
}
