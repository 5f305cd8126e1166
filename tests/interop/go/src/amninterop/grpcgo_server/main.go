// SPDX-License-Identifier: MIT OR Apache-2.0
// grpcgo_server: a grpc-go server implementing the amaters.v1.AmateRS echo
// contract over HTTP/2 with mutual TLS, for testing our client against an
// independent implementation. Prints "listening on HOST:PORT" when ready;
// SIGTERM/SIGINT stop it gracefully (exit 0).
//
// The contract, its magic queries and the health statuses are those of
// package echo.
//
// Usage: grpcgo_server -listen 127.0.0.1:0 -cert F -key F -ca F
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"

	pb "amaterspb"
	"amninterop/common"
	"amninterop/echo"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type server struct{}

// answer runs the echo contract on one query with the call's context.
func answer(ctx context.Context, q []byte) (*pb.QueryResponse, error) {
	res, err := echo.Answer(ctx, q)
	if err != nil {
		return nil, status.Error(err.Code, err.Message)
	}
	return &pb.QueryResponse{ResultBytes: res, ServerProof: []byte(echo.Proof)}, nil
}

func echoTrailers(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range md {
		if strings.HasPrefix(k, "x-echo-") {
			out[k] = v
		}
	}
	if len(out) > 0 {
		grpc.SetTrailer(ctx, out)
	}
}

func (server) Execute(ctx context.Context, req *pb.QueryRequest) (*pb.QueryResponse, error) {
	echoTrailers(ctx)
	return answer(ctx, req.GetQueryBytes())
}

func (server) ExecuteStream(st pb.AmateRS_ExecuteStreamServer) error {
	echoTrailers(st.Context())
	for {
		req, err := st.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := answer(st.Context(), req.GetQueryBytes())
		if err != nil {
			return err
		}
		if err := st.Send(resp); err != nil {
			return err
		}
	}
}

func main() {
	listen, tlsConf := common.ServerFlags("grpcgo_server")
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		common.Fatal("listen: %v", err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConf)),
		grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
	pb.RegisterAmateRSServer(s, server{})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("amaters.v1.AmateRS", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(echo.DownService, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s, hs)

	common.OnSignal(s.GracefulStop)
	fmt.Printf("grpcgo_server: listening on %s\n", lis.Addr())
	if err := s.Serve(lis); err != nil {
		common.Fatal("serve: %v", err)
	}
}
