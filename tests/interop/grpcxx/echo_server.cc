// SPDX-License-Identifier: MIT OR Apache-2.0
// grpcxx_echo_server: an independent gRPC (grpc C++ 1.51) implementation of
// amaters.v1.AmateRS used as interop peer and as the benchmark opponent.
//
//  Execute:        result_bytes = query_bytes
//  ExecuteStream:  one response per request, same echo, in order
//  Request metadata whose key starts with "x-echo-" is returned as trailing
//  metadata (the same contract as amaters-netd's echo handlers).
//  grpc.health.v1.Health is served by grpc's default health service (SERVING).
//
// It uses the callback API (CallbackService + reactors), which is what gRPC
// recommends for performance in C++: handlers run on grpc's internal
// executor, no thread per call and no hand-written completion-queue loop,
// so 64+ concurrent calls are served without a thread-pool size limit.
#include <csignal>
#include <pthread.h>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "amaters.grpc.pb.h"
#include "common.h"

using amaters::v1::AmateRS;
using amaters::v1::QueryRequest;
using amaters::v1::QueryResponse;

static const char kUsage[] =
    "usage: grpcxx_echo_server --listen HOST:PORT (--cert F --key F --ca F | --insecure)\n"
    "  mTLS requires and verifies a client certificate signed by --ca.\n"
    "  Prints \"listening on PORT\" on stdout when ready (PORT 0 = pick one).\n"
    "  Stops on SIGINT/SIGTERM.\n";

// Copies "x-echo-*" request metadata into the trailers (-bin values are
// already decoded by grpc and are re-encoded by it on the way out).
static void echo_metadata(grpc::CallbackServerContext *ctx) {
  for (const auto &kv : ctx->client_metadata()) {
    std::string k(kv.first.data(), kv.first.size());
    if (k.rfind("x-echo-", 0) == 0) ctx->AddTrailingMetadata(k, std::string(kv.second.data(), kv.second.size()));
  }
}

// Bidi echo: read one request, write its echo, read the next; finish OK when
// the client half-closes. Reads and writes never overlap.
class EchoStream : public grpc::ServerBidiReactor<QueryRequest, QueryResponse> {
 public:
  explicit EchoStream(grpc::CallbackServerContext *ctx) : ctx_(ctx) { StartRead(&req_); }

 private:
  void OnReadDone(bool ok) override {
    if (!ok) {
      echo_metadata(ctx_);
      Finish(grpc::Status::OK);
      return;
    }
    resp_.set_result_bytes(std::move(*req_.mutable_query_bytes()));
    StartWrite(&resp_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNKNOWN, "write failed"));
      return;
    }
    StartRead(&req_);
  }
  void OnDone() override { delete this; }
  void OnCancel() override {}

  grpc::CallbackServerContext *ctx_;
  QueryRequest req_;
  QueryResponse resp_;
};

class EchoService final : public AmateRS::CallbackService {
  grpc::ServerUnaryReactor *Execute(grpc::CallbackServerContext *ctx, const QueryRequest *req,
                                    QueryResponse *resp) override {
    resp->set_result_bytes(req->query_bytes());
    echo_metadata(ctx);
    auto *r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }
  grpc::ServerBidiReactor<QueryRequest, QueryResponse> *ExecuteStream(grpc::CallbackServerContext *ctx) override {
    return new EchoStream(ctx);
  }
};

int main(int argc, char **argv) {
  amnx::Args a = amnx::parse_args(argc, argv, " insecure ", "", kUsage);
  if (!a.has("listen") || (!a.has("insecure") && !(a.has("cert") && a.has("key") && a.has("ca")))) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  // Block the stop signals in every thread (grpc's threads inherit the mask);
  // a dedicated thread waits for them below.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  std::shared_ptr<grpc::ServerCredentials> creds;
  if (a.has("insecure")) {
    creds = grpc::InsecureServerCredentials();
  } else {
    grpc::SslServerCredentialsOptions o(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    o.pem_root_certs = amnx::slurp(a.get("ca"));
    o.pem_key_cert_pairs.push_back({amnx::slurp(a.get("key")), amnx::slurp(a.get("cert"))});
    creds = grpc::SslServerCredentials(o);
  }

  grpc::EnableDefaultHealthCheckService(true);
  EchoService svc;
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort(a.get("listen"), creds, &port);
  b.RegisterService(&svc);
  b.SetMaxReceiveMessageSize(amnx::kMaxMessage);
  b.SetMaxSendMessageSize(amnx::kMaxMessage);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "grpcxx_echo_server: cannot listen on %s\n", a.get("listen").c_str());
    return 1;
  }
  std::printf("listening on %d\n", port);
  std::fflush(stdout);

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  });
  server->Wait();
  waiter.join();
  return 0;
}
