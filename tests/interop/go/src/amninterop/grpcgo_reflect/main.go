// SPDX-License-Identifier: MIT OR Apache-2.0
// grpcgo_reflect: independent reflection clients of amaters-netd with mutual
// TLS. Over HTTP/2: grpc-go's own reflection client stub (grpc_reflection_v1alpha,
// as Debian ships it). With -h3 PATH, over HTTP/3 instead: quic-go's http3
// client (an independent QUIC and HTTP/3 stack) with the same package's
// messages, gRPC-framed by hand as quicgo_client speaks gRPC, every request of
// the bidirectional stream in one POST to PATH (the v1 or v1alpha method), the
// answers read back in order. Checked: the services listed, AmateRS's
// descriptor parsed with golang/protobuf's descriptor types and its methods
// found, an unknown symbol answered NOT_FOUND. One line per check, then
// "grpcgo_reflect: N passed, M failed"; exit 1 if any check failed.
//
// Usage: grpcgo_reflect -addr 127.0.0.1:PORT -pki DIR [-h3 /grpc.reflection.v1.ServerReflection/ServerReflectionInfo]
package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"amninterop/common"

	"github.com/golang/protobuf/proto"
	descpb "github.com/golang/protobuf/protoc-gen-go/descriptor"
	"github.com/lucas-clemente/quic-go"
	"github.com/lucas-clemente/quic-go/http3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
)

var (
	addr = flag.String("addr", "", "server address HOST:PORT")
	pki  = flag.String("pki", "", "directory with ca.pem, client.pem, client-key.pem")
	h3   = flag.String("h3", "", "over HTTP/3 (quic-go), to this method path")
	c    common.Checks
)

func check(name string, ok bool) { c.Check(name, ok, "") }

func main() {
	flag.Parse()
	if *h3 != "" {
		overHTTP3()
		return
	}
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

// overHTTP3: the checks over HTTP/3 with quic-go's http3 client.
func overHTTP3() {
	rt := &http3.RoundTripper{TLSClientConfig: common.ClientTLS(filepath.Join(*pki, "ca.pem"),
		filepath.Join(*pki, "client.pem"), filepath.Join(*pki, "client-key.pem"), "localhost"),
		DisableCompression: true, QuicConfig: &quic.Config{HandshakeIdleTimeout: 10 * time.Second}}
	defer rt.Close()

	reqs := []*rpb.ServerReflectionRequest{
		{MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: ""}},
		{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "amaters.v1.AmateRS"}},
		{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "amaters.v1.Missing"}},
	}
	var body bytes.Buffer
	for _, q := range reqs {
		b, err := proto.Marshal(q)
		if err != nil {
			common.Fatal("marshal: %v", err)
		}
		body.Write(common.Frame(b))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+*addr+*h3, io.MultiReader(&body))
	if err != nil {
		common.Fatal("request: %v", err)
	}
	req.Header.Set("content-type", "application/grpc")
	req.Header.Set("te", "trailers")
	res, err := rt.RoundTrip(req)
	if err != nil {
		common.Fatal("HTTP/3 round trip: %v", err)
	}
	check("HTTP/3 response 200 application/grpc", res.StatusCode == 200 &&
		strings.HasPrefix(res.Header.Get("content-type"), "application/grpc"))
	rb := common.NewH3Body(common.RawStream(res.Body.(http3.HTTPStreamer).HTTPStream()))
	var answers []*rpb.ServerReflectionResponse
	for {
		m, err := common.ReadMessage(rb, 1<<20)
		if err == io.EOF {
			break
		}
		if err != nil {
			common.Fatal("read: %v", err)
		}
		a := &rpb.ServerReflectionResponse{}
		if err := proto.Unmarshal(m, a); err != nil {
			common.Fatal("unmarshal: %v", err)
		}
		answers = append(answers, a)
	}
	check("one answer per request", len(answers) == len(reqs))
	check("grpc-status 0 in the trailers", rb.Trailers != nil && rb.Trailers["grpc-status"] == "0")
	if len(answers) != len(reqs) {
		c.Exit("grpcgo_reflect")
	}
	var names []string
	for _, s := range answers[0].GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	sort.Strings(names)
	check("list_services over HTTP/3: "+strings.Join(names, " "),
		strings.Join(names, " ") == "amaters.v1.AmateRS grpc.health.v1.Health grpc.reflection.v1.ServerReflection grpc.reflection.v1alpha.ServerReflection")
	files := answers[1].GetFileDescriptorResponse().GetFileDescriptorProto()
	fd := &descpb.FileDescriptorProto{}
	check("AmateRS's file parses (amaters.proto)", len(files) > 0 && proto.Unmarshal(files[0], fd) == nil && fd.GetName() == "amaters.proto")
	var methods []string
	for _, s := range fd.GetService() {
		for _, m := range s.GetMethod() {
			methods = append(methods, s.GetName()+"."+m.GetName()+"("+m.GetInputType()+")")
		}
	}
	check("its methods: "+strings.Join(methods, " "),
		strings.Join(methods, " ") == "AmateRS.Execute(.amaters.v1.QueryRequest) AmateRS.ExecuteStream(.amaters.v1.QueryRequest)")
	e := answers[2].GetErrorResponse()
	check("an unknown symbol: NOT_FOUND", e != nil && e.GetErrorCode() == int32(codes.NotFound))
	c.Exit("grpcgo_reflect")
}
