// SPDX-License-Identifier: MIT OR Apache-2.0
// grpcgo_reflect: grpc-go's own reflection client stub (grpc_reflection_v1alpha,
// as Debian ships it) against the server reflection of amaters-netd over HTTP/2
// with mutual TLS: the services listed, AmateRS's descriptor parsed with
// golang/protobuf's descriptor types and its methods found, an unknown symbol
// answered NOT_FOUND. One line per check, then "grpcgo_reflect: N passed, M
// failed"; exit 1 if any check failed.
//
// Usage: grpcgo_reflect -addr 127.0.0.1:PORT -pki DIR
package main

import (
	"context"
	"flag"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"amninterop/common"

	"github.com/golang/protobuf/proto"
	descpb "github.com/golang/protobuf/protoc-gen-go/descriptor"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
)

var (
	addr = flag.String("addr", "", "server address HOST:PORT")
	pki  = flag.String("pki", "", "directory with ca.pem, client.pem, client-key.pem")
	c    common.Checks
)

func check(name string, ok bool) { c.Check(name, ok, "") }

func main() {
	flag.Parse()
	tc := common.ClientTLS(filepath.Join(*pki, "ca.pem"), filepath.Join(*pki, "client.pem"),
		filepath.Join(*pki, "client-key.pem"), "localhost")
	conn, err := grpc.Dial(*addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		common.Fatal("dial: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		common.Fatal("ServerReflectionInfo: %v", err)
	}
	ask := func(r *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse {
		if err := stream.Send(r); err != nil {
			common.Fatal("send: %v", err)
		}
		resp, err := stream.Recv()
		if err != nil {
			common.Fatal("recv: %v", err)
		}
		return resp
	}

	lr := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: "*"}})
	var names []string
	for _, s := range lr.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	sort.Strings(names)
	joined := strings.Join(names, " ")
	check("list_services names AmateRS, Health and both reflection services ("+joined+")",
		joined == "amaters.v1.AmateRS grpc.health.v1.Health grpc.reflection.v1.ServerReflection grpc.reflection.v1alpha.ServerReflection")

	fr := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: "amaters.v1.AmateRS.Execute"}})
	files := fr.GetFileDescriptorResponse().GetFileDescriptorProto()
	fd := &descpb.FileDescriptorProto{}
	parsed := len(files) > 0 && proto.Unmarshal(files[0], fd) == nil
	check("the file of amaters.v1.AmateRS.Execute parses (amaters.proto)", parsed && fd.GetName() == "amaters.proto")
	var execute, stream2 *descpb.MethodDescriptorProto
	for _, s := range fd.GetService() {
		for _, m := range s.GetMethod() {
			switch m.GetName() {
			case "Execute":
				execute = m
			case "ExecuteStream":
				stream2 = m
			}
		}
	}
	check("Execute: .amaters.v1.QueryRequest -> .amaters.v1.QueryResponse",
		execute != nil && execute.GetInputType() == ".amaters.v1.QueryRequest" &&
			execute.GetOutputType() == ".amaters.v1.QueryResponse" && !execute.GetClientStreaming())
	check("ExecuteStream streams both ways", stream2 != nil && stream2.GetClientStreaming() && stream2.GetServerStreaming())

	nf := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: "amaters.v1.Missing"}})
	check("an unknown symbol: error_response NOT_FOUND",
		nf.GetErrorResponse() != nil && nf.GetErrorResponse().GetErrorCode() == int32(codes.NotFound))

	hr := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{
		FileByFilename: "grpc/reflection/v1alpha/reflection.proto"}})
	rf := &descpb.FileDescriptorProto{}
	hfiles := hr.GetFileDescriptorResponse().GetFileDescriptorProto()
	check("file_by_filename of the v1alpha reflection file: package grpc.reflection.v1alpha",
		len(hfiles) > 0 && proto.Unmarshal(hfiles[0], rf) == nil && rf.GetPackage() == "grpc.reflection.v1alpha")
	check("each answer echoes its request", hr.GetOriginalRequest().GetFileByFilename() == "grpc/reflection/v1alpha/reflection.proto")
	if err := stream.CloseSend(); err != nil {
		common.Fatal("close: %v", err)
	}
	_, err = stream.Recv()
	check("the stream ends OK after the client's half-close", err == io.EOF)
	c.Exit("grpcgo_reflect")
}
