// SPDX-License-Identifier: MIT OR Apache-2.0
// grpcxx_bench: grpc C++ (1.51) benchmark client, the counterpart of
// `amaters-cli bench`. Opens --connections channels (one TCP connection
// each) and keeps --inflight calls outstanding in total (spread round-robin
// over the connections) with the callback API, so every call in flight is
// real and no thread blocks per call.
//
//  unary:  each slot issues Execute, waits for the reply, issues the next.
//  stream: each slot owns one ExecuteStream and ping-pongs one message at a
//          time on it (latency = write start -> echoed response read).
//
// Timeline: warmup seconds (calls not recorded), then duration seconds.
// A call is recorded when it started at/after the measurement start and
// completed before its end; every latency is kept (exact percentiles).
// Output: one JSON object on stdout:
//   qps       recorded calls / duration
//   mb_per_s  recorded calls * 2 * size / duration / 1e6 (payload bytes
//             both ways, 1 MB = 10^6 bytes; as amaters-cli bench)
//   p50_us .. p999_us, max_us  latency percentiles (nearest rank), microseconds
//   errors    calls (or streams) that ended with a non-OK status or a wrong
//             echo, over the whole run including warmup
//   calls     recorded calls
//
// --new-connection (handshakes, unary): every call on a channel of its own
// (a distinct channel argument and a local subchannel pool, so no two share
// a connection): create the channel, connect, full mTLS handshake, the call;
// the channel is then dropped (its connection closes; by the main thread,
// after the slot's next call started). --connections C such
// calls run at once (--inflight is C). Latency: from the channel's creation
// to the response. Adds "new_connection":true, "resume", "connects" (channels
// made, warm-up included), "resumed" (calls whose connection resumed a TLS
// session: the auth context's ssl_session_reused) and "handshakes_per_s"
// (= qps). --resume: the same, the channels sharing a TLS session cache
// (grpc core's grpc_ssl_session_cache, LRU) so that each may resume one.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <grpc/grpc_security.h>
#include <grpcpp/grpcpp.h>

#include "amaters.grpc.pb.h"
#include "common.h"

using amaters::v1::AmateRS;
using amaters::v1::QueryRequest;
using amaters::v1::QueryResponse;
using Clock = std::chrono::steady_clock;

static const char kUsage[] =
    "usage: grpcxx_bench --target HOST:PORT (--ca F --cert F --key F | --insecure) [--server-name NAME]\n"
    "                    [--connections C] [--inflight M] [--duration S] [--warmup S]\n"
    "                    [--size BYTES] [--mode unary|stream] [--new-connection | --resume]\n"
    "  Defaults: C=1 M=1 duration=10 warmup=1 size=64 mode=unary. Prints one JSON object.\n";

struct Bench {
  Clock::time_point measure_start, measure_end;
  std::chrono::system_clock::time_point deadline;  // per call / stream
  std::string payload;
  std::atomic<long> errors{0};
  std::mutex mu;
  std::condition_variable cv;
  int active = 0;  // slots still running
  // --new-connection: what a call's channel needs, the channels made, and
  // the used ones (dropped by the main thread, not inside their callbacks)
  bool new_conn = false;
  std::string target;
  std::shared_ptr<grpc::ChannelCredentials> creds;
  std::function<grpc::ChannelArguments()> chan_args;
  std::atomic<long> connects{0}, resumed{0};
  std::vector<std::shared_ptr<void>> used;

  bool recordable(Clock::time_point t0, Clock::time_point t1) const {
    return t0 >= measure_start && t1 <= measure_end;
  }
  void slot_done() {
    std::lock_guard<std::mutex> g(mu);
    if (--active == 0) cv.notify_all();
  }
  // --new-connection: a channel no other call shares
  std::shared_ptr<grpc::Channel> new_channel() {
    grpc::ChannelArguments args = chan_args();
    args.SetInt("amnx.connection_index", (int)connects++);
    return grpc::CreateCustomChannel(target, creds, args);
  }
  // The context, stub and channel of a call that ended (the context holds
  // the channel too): dropped by the main thread, then the connection closes.
  void drop(std::unique_ptr<grpc::ClientContext> ctx, std::unique_ptr<AmateRS::Stub> stub,
            std::shared_ptr<grpc::Channel> ch) {
    std::lock_guard<std::mutex> g(mu);
    used.push_back(std::shared_ptr<void>(std::move(ctx)));
    used.push_back(std::shared_ptr<void>(std::move(stub)));
    used.push_back(std::move(ch));
    cv.notify_all();
  }
};

// Per-slot sample store; only one call/stream of a slot runs at a time.
struct Sink {
  std::vector<int64_t> ns;
};

// Unary slot. Contexts and responses are double-buffered so that the one of
// the call whose completion callback is running is not destroyed from
// inside that callback.
struct UnarySlot {
  Bench *b;
  AmateRS::Stub *stub;
  Sink *sink;
  QueryRequest req;
  std::unique_ptr<grpc::ClientContext> ctx[2];
  QueryResponse resp[2];
  std::shared_ptr<grpc::Channel> ch[2];  // --new-connection: each call's own
  std::unique_ptr<AmateRS::Stub> own[2];
  int cur = 0;
  Clock::time_point t0;

  void issue() {
    cur ^= 1;
    // the call before the last one surely ended: its channel goes
    if (b->new_conn && ctx[cur]) b->drop(std::move(ctx[cur]), std::move(own[cur]), std::move(ch[cur]));
    ctx[cur] = std::make_unique<grpc::ClientContext>();
    ctx[cur]->set_deadline(b->deadline);
    resp[cur].Clear();
    t0 = Clock::now();
    if (b->new_conn) {
      ch[cur] = b->new_channel();
      own[cur] = AmateRS::NewStub(ch[cur]);
      stub = own[cur].get();
    }
    stub->async()->Execute(ctx[cur].get(), &req, &resp[cur], [this](grpc::Status s) { done(s); });
  }
  void done(const grpc::Status &s) {
    Clock::time_point t1 = Clock::now();
    if (b->new_conn && s.ok()) {
      auto ac = ctx[cur]->auth_context();
      auto v = ac ? ac->FindPropertyValues(GRPC_SSL_SESSION_REUSED_PROPERTY) : std::vector<grpc::string_ref>();
      if (!v.empty() && v[0] == "true") b->resumed++;
    }
    if (!s.ok() || resp[cur].result_bytes() != b->payload)
      b->errors++;
    else if (b->recordable(t0, t1))
      sink->ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    if (t1 < b->measure_end)
      issue();
    else
      b->slot_done();
  }
};

// Stream slot: one bidi stream, one message in flight. The next message is
// sent once both the previous write and the echo read have completed.
class StreamSlot : public grpc::ClientBidiReactor<QueryRequest, QueryResponse> {
 public:
  StreamSlot(Bench *b, AmateRS::Stub *stub, Sink *sink) : b_(b), stub_(stub), sink_(sink) {
    req_.set_query_bytes(b->payload);
    ctx_.set_deadline(b->deadline);
    stub_->async()->ExecuteStream(&ctx_, this);
    send();
    StartCall();
  }

 private:
  void send() {
    pending_ = 2;
    t0_ = Clock::now();
    StartRead(&resp_);
    StartWrite(&req_);
  }
  void step() {
    if (--pending_ != 0) return;
    if (Clock::now() < b_->measure_end)
      send();
    else
      StartWritesDone();
  }
  void OnWriteDone(bool ok) override {
    if (ok) step();  // else the stream is broken; OnDone reports it
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    Clock::time_point t1 = Clock::now();
    if (resp_.result_bytes() != b_->payload) {
      b_->errors++;
      ctx_.TryCancel();
      return;
    }
    if (b_->recordable(t0_, t1))
      sink_->ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0_).count());
    step();
  }
  void OnDone(const grpc::Status &s) override {
    if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) b_->errors++;
    bool again = !s.ok() && Clock::now() < b_->measure_end;
    Bench *b = b_;
    AmateRS::Stub *stub = stub_;
    Sink *sink = sink_;
    delete this;
    if (again)
      new StreamSlot(b, stub, sink);  // replace a failed stream
    else
      b->slot_done();
  }

  Bench *b_;
  AmateRS::Stub *stub_;
  Sink *sink_;
  grpc::ClientContext ctx_;
  QueryRequest req_;
  QueryResponse resp_;
  std::atomic<int> pending_{0};
  Clock::time_point t0_;
};

static double pct(const std::vector<int64_t> &v, double p) {
  if (v.empty()) return 0;
  size_t rank = (size_t)std::ceil(p * (double)v.size());
  if (rank < 1) rank = 1;
  return (double)v[std::min(rank, v.size()) - 1] / 1000.0;
}

int main(int argc, char **argv) {
  amnx::Args a = amnx::parse_args(argc, argv, " insecure new-connection resume ", "", kUsage);
  int conns = (int)a.num("connections", 1), inflight = (int)a.num("inflight", 1);
  double duration = a.num("duration", 10), warmup = a.num("warmup", 1);
  long size = (long)a.num("size", 64);
  std::string mode = a.get("mode", "unary");
  bool resume = a.has("resume");
  bool new_conn = a.has("new-connection") || resume;
  if (new_conn) inflight = conns;
  if (!a.has("target") || (!a.has("insecure") && !(a.has("ca") && a.has("cert") && a.has("key"))) || conns < 1 ||
      inflight < 1 || duration <= 0 || warmup < 0 || size < 0 || size > amnx::kMaxMessage - 64 ||
      (mode != "unary" && mode != "stream") || (new_conn && mode != "unary")) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (a.has("insecure")) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = amnx::slurp(a.get("ca"));
    o.pem_cert_chain = amnx::slurp(a.get("cert"));
    o.pem_private_key = amnx::slurp(a.get("key"));
    creds = grpc::SslCredentials(o);
  }

  // One channel per connection: a local subchannel pool (and a distinct
  // argument) keeps grpc from sharing one TCP connection between them.
  grpc_ssl_session_cache *cache = resume ? grpc_ssl_session_cache_create_lru(1024) : nullptr;
  auto chan_args = [&a, cache] {
    grpc::ChannelArguments args;
    if (cache) {
      grpc_arg ca = grpc_ssl_session_cache_create_channel_arg(cache);
      args.SetPointerWithVtable(ca.key, ca.value.pointer.p, ca.value.pointer.vtable);
    }
    args.SetMaxReceiveMessageSize(amnx::kMaxMessage);
    args.SetMaxSendMessageSize(amnx::kMaxMessage);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (a.has("server-name")) args.SetSslTargetNameOverride(a.get("server-name"));
    return args;
  };
  std::vector<std::shared_ptr<grpc::Channel>> chans;
  std::vector<std::unique_ptr<AmateRS::Stub>> stubs;
  for (int i = 0; i < conns && !new_conn; i++) {
    grpc::ChannelArguments args = chan_args();
    args.SetInt("amnx.connection_index", i);
    auto ch = grpc::CreateCustomChannel(a.get("target"), creds, args);
    if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      std::fprintf(stderr, "grpcxx_bench: cannot connect to %s\n", a.get("target").c_str());
      return 1;
    }
    stubs.push_back(AmateRS::NewStub(ch));
    chans.push_back(std::move(ch));
  }

  Bench b;
  b.new_conn = new_conn;
  b.target = a.get("target");
  b.creds = creds;
  b.chan_args = chan_args;
  b.payload.resize((size_t)size);
  for (long i = 0; i < size; i++) b.payload[(size_t)i] = (char)('a' + i % 26);
  Clock::time_point start = Clock::now();
  b.measure_start = start + std::chrono::microseconds((long long)(warmup * 1e6));
  b.measure_end = b.measure_start + std::chrono::microseconds((long long)(duration * 1e6));
  b.deadline = std::chrono::system_clock::now() + std::chrono::microseconds((long long)((warmup + duration) * 1e6)) +
               std::chrono::seconds(30);
  b.active = inflight;

  std::vector<Sink> sinks((size_t)inflight);
  std::vector<std::unique_ptr<UnarySlot>> unary;
  for (int i = 0; i < inflight; i++) {
    AmateRS::Stub *stub = new_conn ? nullptr : stubs[(size_t)(i % conns)].get();
    if (mode == "unary") {
      auto s = std::make_unique<UnarySlot>();
      s->b = &b;
      s->stub = stub;
      s->sink = &sinks[(size_t)i];
      s->req.set_query_bytes(b.payload);
      s->issue();
      unary.push_back(std::move(s));
    } else {
      new StreamSlot(&b, stub, &sinks[(size_t)i]);  // deletes itself in OnDone
    }
  }
  {
    // Every call carries a deadline, so this wait is bounded. Used channels
    // (--new-connection) are dropped here, off grpc's callback threads.
    std::unique_lock<std::mutex> l(b.mu);
    for (;;) {
      b.cv.wait(l, [&] { return b.active == 0 || !b.used.empty(); });
      std::vector<std::shared_ptr<void>> drop;
      drop.swap(b.used);
      bool over = b.active == 0;
      l.unlock();
      drop.clear();
      l.lock();
      if (over) break;
    }
  }

  std::vector<int64_t> all;
  for (auto &s : sinks) all.insert(all.end(), s.ns.begin(), s.ns.end());
  std::sort(all.begin(), all.end());
  double qps = (double)all.size() / duration;
  std::printf(
      "{\"qps\":%.1f,\"mb_per_s\":%.3f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
      "\"max_us\":%.1f,\"errors\":%ld,\"calls\":%zu",
      qps, qps * 2.0 * (double)size / 1e6, pct(all, 0.50), pct(all, 0.90), pct(all, 0.99), pct(all, 0.999),
      all.empty() ? 0.0 : (double)all.back() / 1000.0, b.errors.load(), all.size());
  if (new_conn)
    std::printf(",\"new_connection\":true,\"resume\":%s,\"connects\":%ld,\"resumed\":%ld,\"handshakes_per_s\":%.1f",
                resume ? "true" : "false", b.connects.load(), b.resumed.load(), qps);
  std::printf("}\n");
  std::fflush(stdout);
  // The last completion callbacks may still be unwinding inside grpc's
  // threads; skip tearing down channels/contexts under them.
  std::_Exit(0);
}
