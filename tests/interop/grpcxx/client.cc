// SPDX-License-Identifier: MIT OR Apache-2.0
// grpcxx_client: one-shot grpc C++ client used by the interop tests to call
// amaters-netd (or grpcxx_echo_server). Sends one Execute with --data,
// prints result_bytes (plus a newline) on stdout and each trailing metadata
// entry as "trailer KEY: VALUE" on stderr. Exit code = gRPC status code.
#include <chrono>
#include <condition_variable>
#include <mutex>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "amaters.grpc.pb.h"
#include "common.h"

static const char kUsage[] =
    "usage: grpcxx_client --target HOST:PORT (--ca F [--cert F --key F] | --insecure)\n"
    "                     [--data STR | --size N] [--timeout MS] [--server-name NAME]\n"
    "                     [--metadata KEY=VALUE]... [--method Execute|PATH]\n"
    "  --size N sends N pattern bytes instead of --data (prints the result length).\n"
    "  --timeout: call deadline in milliseconds, fractions allowed (default 10000).\n"
    "  --server-name overrides the name checked against the server certificate.\n"
    "  --method PATH calls another method (\"/pkg.Svc/M\") with the same request bytes.\n"
    "  Exit code: the gRPC status code (0 = OK); 2 = bad usage; 100 = wrong echo (--size).\n";

int main(int argc, char **argv) {
  amnx::Args a = amnx::parse_args(argc, argv, " insecure ", " metadata ", kUsage);
  if (!a.has("target") || (!a.has("insecure") && !a.has("ca"))) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (a.has("insecure")) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = amnx::slurp(a.get("ca"));
    if (a.has("cert")) o.pem_cert_chain = amnx::slurp(a.get("cert"));
    if (a.has("key")) o.pem_private_key = amnx::slurp(a.get("key"));
    creds = grpc::SslCredentials(o);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(amnx::kMaxMessage);
  args.SetMaxSendMessageSize(amnx::kMaxMessage);
  if (a.has("server-name")) args.SetSslTargetNameOverride(a.get("server-name"));
  auto ch = grpc::CreateCustomChannel(a.get("target"), creds, args);

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::nanoseconds((long long)(a.num("timeout", 10000) * 1e6)));
  for (const auto &kv : a.multi) {
    size_t eq = kv.second.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "--metadata needs KEY=VALUE\n");
      return 2;
    }
    ctx.AddMetadata(kv.second.substr(0, eq), kv.second.substr(eq + 1));
  }
  amaters::v1::QueryRequest req;
  amaters::v1::QueryResponse resp;
  long size = (long)a.num("size", -1);
  if (size > amnx::kMaxMessage) {
    std::fprintf(stderr, "--size too large\n");
    return 2;
  }
  std::string payload = a.get("data");
  if (size >= 0) {
    payload.resize((size_t)size);
    for (long i = 0; i < size; i++) payload[(size_t)i] = (char)('a' + i % 26);
  }
  req.set_query_bytes(payload);

  grpc::Status st;
  std::string method = a.get("method", "Execute");
  if (method == "Execute") {
    st = amaters::v1::AmateRS::NewStub(ch)->Execute(&ctx, req, &resp);
  } else {
    // Generic call on an arbitrary path, same serialized request.
    grpc::GenericStub gs(ch);
    std::string wire = req.SerializeAsString();
    grpc::Slice slice(wire);
    grpc::ByteBuffer in(&slice, 1), out;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    gs.UnaryCall(&ctx, method, grpc::StubOptions(), &in, &out, [&](grpc::Status s) {
      std::lock_guard<std::mutex> g(mu);
      st = s;
      done = true;
      cv.notify_one();
    });
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return done; });
    std::vector<grpc::Slice> slices;
    if (st.ok() && out.Dump(&slices).ok()) {
      std::string body;
      for (auto &s : slices) body.append((const char *)s.begin(), s.size());
      resp.ParseFromString(body);
    }
  }
  for (const auto &kv : ctx.GetServerTrailingMetadata())
    std::fprintf(stderr, "trailer %.*s: %.*s\n", (int)kv.first.size(), kv.first.data(), (int)kv.second.size(),
                 kv.second.data());
  if (!st.ok()) {
    std::fprintf(stderr, "grpcxx_client: status %d: %s\n", (int)st.error_code(), st.error_message().c_str());
    return (int)st.error_code();
  }
  if (size >= 0) {
    if (resp.result_bytes() != payload) {
      std::fprintf(stderr, "grpcxx_client: echo differs from the %ld-byte request\n", size);
      return 100;
    }
    std::printf("%zu\n", resp.result_bytes().size());
  } else {
    std::fwrite(resp.result_bytes().data(), 1, resp.result_bytes().size(), stdout);
    std::fputc('\n', stdout);
  }
  return 0;
}
