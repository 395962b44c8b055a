// openloop: the native open-loop load client of the spike benchmark.
//
// benchmarks/load/native_client.py builds and drives it; its semantics are those of
// the Python client in benchmarks/load/spike.py (_Client), at a fraction of the CPU
// per call, so that at thousands of calls/s the client's own lateness stays out of
// the latencies it measures.
//
//   openloop SCHEDULE POOLS OUT
//
// SCHEDULE (text, one item a line):
//   target HOST:PORT
//   deadline_ns N          gRPC deadline of each call, from its send
//   max_send_lag_ns N      a call further behind its due time is not sent
//   connect_timeout_ns N
//   warmup_ns N            0: no warm-up
//   threads N              threads draining the completion queue; 0: none (below)
//   phase open START_NS END_NS     offsets from t0; then its flows:
//   flow POOL RATE                 POOL: index in POOLS; RATE: calls/s (%.17g)
//   phase closed START_NS END_NS CONCURRENCY
//
// POOLS (binary, little-endian): u32 pools; per pool u32 payloads, per payload u32
// length and the serialized ScoreRequest.
//
// Protocol on stdin/stdout: connects (exit 3 with a message on stderr if the channel
// is not ready within the connect timeout), warms up, prints "READY", reads
// "GO <t0_ns>" (CLOCK_MONOTONIC), runs the phases, waits for every call to end,
// writes OUT and prints
//   "DONE records=N cpu_ns=N wall_ns=N max_send_lag_ns=N".
//
// OUT (binary, little-endian):
//   char[8] "RWOLREC1"; u64 records; u64 blob_bytes; u64 examples
//   records x Record (48 bytes, below); the reply blob; examples x
//   (i32 status code, u32 length, details): the first details seen for each status.
//
// Threads. On the VMs this runs on, waking a thread costs 35-100 us of CPU (a bare
// clock_nanosleep wake-up: ~35 us; a paced TCP ping-pong in C: ~60 us a call), more
// than gRPC's own work for a call, so the CPU per call is mostly how many times some
// thread blocks and wakes per call.
//   threads 0 (the default of native_client.py): one thread sends and drains the
//     completion queue; between sends it waits in CompletionQueue::AsyncNext, whose
//     deadline gRPC keeps to the millisecond. Calls leave up to ~1 ms after their due
//     time (p50 0.15-0.5 ms measured), several per wake-up at high rates; 100-150 us
//     of CPU a call here against the Python client's 230-440.
//   threads N >= 1: a sender thread sleeping until each due time (clock_nanosleep,
//     absolute) and N threads draining the queue: sends within the kernel's wake-up
//     latency of their time (~0.1 ms p50 here), at 35-40% more CPU per call.
// Either way every call records when it was due, sent and ended; a late send shows
// as send lag, never in the latency (end minus sent).
//
// Replies are not parsed here: the OK replies' bytes go back to Python, which
// classifies them with spike.classify_reply exactly as the Python client does (the
// warm-up's too, so that "answered" means the same thing).

#include <absl/synchronization/mutex.h>
#include <grpc/support/time.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/prctl.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr char kMethod[] = "/riskwire.v1.Scoring/Score";
constexpr int32_t kNotSent = -1;  // status of a call the schedule skipped
constexpr uint8_t kRecorded = 0;  // kinds of record
constexpr uint8_t kWarmUp = 1;

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int64_t cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// An absolute sleep: no drift from computing a relative interval that is already
// stale when the kernel sees it. The timer slack is set to 1 ns on the sender thread,
// otherwise Linux may wake it up to 50 us late, which at 5,000 calls/s is a quarter of
// the interval between calls.
void sleep_until(int64_t t_ns) {
  timespec ts{time_t(t_ns / 1000000000), long(t_ns % 1000000000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

#pragma pack(push, 1)
// One call, as written to OUT; times on CLOCK_MONOTONIC. Mirrored by RECORD_DTYPE in
// native_client.py: change both together.
struct Record {
  int64_t intended;
  int64_t sent;
  int64_t end;
  int64_t reply_offset;  // into the reply blob (OK calls only)
  int32_t reply_len;
  int32_t status;   // grpc::StatusCode, or kNotSent
  int16_t pool;     // index in spike.POOLS
  uint8_t kind;     // kRecorded or kWarmUp
  uint8_t unused;
  int32_t payload;  // index in the pool, -1 when not sent
};
#pragma pack(pop)
static_assert(sizeof(Record) == 48, "Record is read by numpy as 48 packed bytes");

struct Flow {
  int pool;
  double rate;
};

struct PhaseSpec {
  bool closed = false;
  int64_t start_off = 0, end_off = 0;
  int concurrency = 0;
  std::vector<Flow> flows;
};

struct Schedule {
  std::string target;
  int64_t deadline_ns = 1000000000;
  int64_t max_lag_ns = 200000000;
  int64_t connect_timeout_ns = 10000000000;
  int64_t warmup_ns = 0;
  int threads = 1;
  std::vector<PhaseSpec> phases;
};

Schedule read_schedule(const char* path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(std::string("cannot read the schedule ") + path);
  Schedule s;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string key;
    if (!(f >> key)) continue;
    if (key == "target") {
      f >> s.target;
    } else if (key == "deadline_ns") {
      f >> s.deadline_ns;
    } else if (key == "max_send_lag_ns") {
      f >> s.max_lag_ns;
    } else if (key == "connect_timeout_ns") {
      f >> s.connect_timeout_ns;
    } else if (key == "warmup_ns") {
      f >> s.warmup_ns;
    } else if (key == "threads") {
      f >> s.threads;
    } else if (key == "phase") {
      PhaseSpec p;
      std::string kind;
      f >> kind >> p.start_off >> p.end_off;
      p.closed = kind == "closed";
      if (p.closed) f >> p.concurrency;
      s.phases.push_back(p);
    } else if (key == "flow") {
      if (s.phases.empty()) throw std::runtime_error("schedule: a flow before any phase");
      Flow fl;
      f >> fl.pool >> fl.rate;
      s.phases.back().flows.push_back(fl);
    } else {
      throw std::runtime_error("schedule: unknown line: " + line);
    }
    if (f.fail()) throw std::runtime_error("schedule: bad line: " + line);
  }
  if (s.target.empty()) throw std::runtime_error("schedule: no target");
  s.threads = std::max(0, s.threads);
  return s;
}

std::vector<std::vector<grpc::ByteBuffer>> read_pools(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(std::string("cannot read the pools ") + path);
  auto u32 = [&in]() {
    uint32_t v;
    if (!in.read(reinterpret_cast<char*>(&v), 4)) throw std::runtime_error("pools: truncated");
    return v;
  };
  std::vector<std::vector<grpc::ByteBuffer>> pools(u32());
  std::string bytes;
  for (auto& pool : pools) {
    pool.resize(u32());
    for (auto& payload : pool) {
      bytes.resize(u32());
      if (!in.read(bytes.data(), std::streamsize(bytes.size())))
        throw std::runtime_error("pools: truncated");
      // Built once: a ByteBuffer copy is a reference to the same slice, so a call
      // costs no copy of its request.
      grpc::Slice slice(bytes.data(), bytes.size());
      payload = grpc::ByteBuffer(&slice, 1);
    }
  }
  return pools;
}

// One call in flight; its address is the completion queue tag.
struct Call {
  grpc::ClientContext ctx;
  grpc::ByteBuffer reply;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> rpc;
  int64_t intended = 0;
  int64_t sent = 0;
  int32_t payload = 0;
  int16_t pool = 0;
  uint8_t kind = kRecorded;
  bool closed = false;  // a closed-loop caller's: its end starts the caller's next call
};

// Where one thread writes its records: each thread has its own, so that recording a
// call takes no lock; they are merged once, at the end.
struct Sink {
  std::vector<Record> records;
  std::string blob;
  int64_t last_end = 0;
  std::vector<grpc::Slice> slices;  // scratch for ByteBuffer::Dump
};

class Client {
 public:
  Client(const Schedule& schedule, std::vector<std::vector<grpc::ByteBuffer>> pools)
      : s_(schedule),
        pools_(std::move(pools)),
        channel_(grpc::CreateChannel(s_.target, grpc::InsecureChannelCredentials())),
        stub_(channel_),
        method_(kMethod),
        cursors_(pools_.size()),
        sinks_(size_t(s_.threads) + 1) {
    for (auto& c : cursors_) c.store(0);
    for (auto& seen : seen_) seen.store(false);
    // Enough room for every open-loop call of the schedule, so the hot path does not
    // reallocate; closed loops (their count is whatever the server answers) grow.
    size_t planned = 0;
    for (const auto& p : s_.phases) {
      for (const auto& f : p.flows)
        planned += size_t(double(p.end_off - p.start_off) * f.rate / 1e9) + 2;
    }
    for (auto& sink : sinks_) {
      sink.records.reserve(planned + 4096);
      sink.blob.reserve((planned + 4096) * 192);
    }
  }

  bool connect() {
    gpr_timespec deadline = gpr_time_add(
        gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_nanos(s_.connect_timeout_ns, GPR_TIMESPAN));
    return channel_->WaitForConnected(deadline);
  }

  // With threads 0 there are none: the sender drains the queue (wait_until).
  void start_drainers() {
    for (int t = 0; t < s_.threads; ++t) drainers_.emplace_back([this, t] { drain(sinks_[t]); });
  }

  // Two callers in a closed loop for the warm-up time, like _Client.warm_up; their
  // records (kind kWarmUp) go back too, so that Python counts the answered ones.
  void warm_up() {
    if (s_.warmup_ns > 0) closed_loop(now_ns(), now_ns() + s_.warmup_ns, 2, kWarmUp);
  }

  // The schedule from t0 (CLOCK_MONOTONIC), on the calling thread: the sender.
  void run(int64_t t0) {
    // Give the sender a precise timer (see sleep_until).
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    for (const auto& p : s_.phases) {
      int64_t start = t0 + p.start_off, end = t0 + p.end_off;
      if (p.closed)
        closed_loop(start, end, p.concurrency, kRecorded);
      else
        open_loop(p, start, end);
    }
    // Every call ends (at its deadline at the latest): wait for the last one, then
    // let the drainers go.
    while (in_flight_.load() > 0) wait_until(now_ns() + 1000000);
  }

  // The queue must be shut down and drained before it is destroyed: by the drainers,
  // or here (with threads 0 nothing is left in it by then; this only makes sure).
  void finish() {
    cq_.Shutdown();
    for (auto& t : drainers_) t.join();
    if (drainers_.empty()) {
      void* tag;
      bool ok;
      while (cq_.Next(&tag, &ok)) complete(static_cast<Call*>(tag), sinks_[0]);
    }
  }

  int64_t max_send_lag() const { return max_lag_; }

  int64_t last_end() const {
    int64_t last = 0;
    for (const auto& sink : sinks_) last = std::max(last, sink.last_end);
    return last;
  }

  size_t write(const char* path) {
    FILE* out = fopen(path, "wb");
    if (!out) throw std::runtime_error(std::string("cannot write ") + path);
    uint64_t n = 0, blob = 0;
    for (const auto& sink : sinks_) {
      n += sink.records.size();
      blob += sink.blob.size();
    }
    uint64_t examples = examples_.size();
    fwrite("RWOLREC1", 1, 8, out);
    fwrite(&n, 8, 1, out);
    fwrite(&blob, 8, 1, out);
    fwrite(&examples, 8, 1, out);
    // Offsets are per sink while running; rebase them onto the one blob written.
    int64_t base = 0;
    for (auto& sink : sinks_) {
      for (auto& r : sink.records) {
        if (r.reply_len) r.reply_offset += base;
      }
      fwrite(sink.records.data(), sizeof(Record), sink.records.size(), out);
      base += int64_t(sink.blob.size());
    }
    for (const auto& sink : sinks_) fwrite(sink.blob.data(), 1, sink.blob.size(), out);
    for (const auto& [code, details] : examples_) {
      int32_t c = code;
      uint32_t len = uint32_t(details.size());
      fwrite(&c, 4, 1, out);
      fwrite(&len, 4, 1, out);
      fwrite(details.data(), 1, details.size(), out);
    }
    if (fclose(out) != 0) throw std::runtime_error(std::string("cannot write ") + path);
    return n;
  }

 private:
  // Start one call now; never waits for earlier ones (calls in flight are unbounded,
  // as in the Python client).
  void send_call(int16_t pool, int64_t intended, uint8_t kind, bool closed) {
    const auto& payloads = pools_[size_t(pool)];
    // The cursor moves before each call, as _Client.call's does (the first call sends
    // payload 1); atomic because closed-loop calls start from the drainer threads.
    uint64_t i = (cursors_[size_t(pool)].fetch_add(1, std::memory_order_relaxed) + 1) %
                 payloads.size();
    auto* c = new Call;
    c->intended = intended;
    c->pool = pool;
    c->payload = int32_t(i);
    c->kind = kind;
    c->closed = closed;
    in_flight_.fetch_add(1);
    c->sent = now_ns();
    c->ctx.set_deadline(gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                     gpr_time_from_nanos(s_.deadline_ns, GPR_TIMESPAN)));
    c->rpc = stub_.PrepareUnaryCall(&c->ctx, method_, payloads[i], &cq_);
    c->rpc->StartCall();
    c->rpc->Finish(&c->reply, &c->status, c);
  }

  void drain(Sink& sink) {
    void* tag;
    bool ok;
    // Finish's tag always comes back with ok == true: the outcome is in the status.
    while (cq_.Next(&tag, &ok)) complete(static_cast<Call*>(tag), sink);
  }

  // Until t_ns: sleep (drainer threads take the completions) or, with none, take the
  // completions as they come. AsyncNext's deadline is kept to the millisecond by
  // gRPC, so this returns up to ~1 ms late (and never early: the loop checks).
  void wait_until(int64_t t_ns) {
    if (s_.threads > 0) {
      sleep_until(t_ns);
      return;
    }
    for (int64_t now = now_ns(); now < t_ns; now = now_ns()) {
      void* tag;
      bool ok;
      gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                           gpr_time_from_nanos(t_ns - now, GPR_TIMESPAN));
      if (cq_.AsyncNext(&tag, &ok, deadline) == grpc::CompletionQueue::GOT_EVENT)
        complete(static_cast<Call*>(tag), sinks_[0]);
    }
  }

  // Record an ended call (its reply's bytes when OK) and, for a closed-loop caller,
  // start its next call.
  void complete(Call* c, Sink& sink) {
    const int64_t end = now_ns();
    Record r{};
    r.intended = c->intended;
    r.sent = c->sent;
    r.end = end;
    r.status = int32_t(c->status.error_code());
    r.pool = c->pool;
    r.kind = c->kind;
    r.payload = c->payload;
    if (c->status.ok()) {
      r.reply_offset = int64_t(sink.blob.size());
      // Dump takes references to the reply's slices (no copy); one copy into the blob.
      if (c->reply.Dump(&sink.slices).ok()) {
        for (const auto& slice : sink.slices)
          sink.blob.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
      }
      r.reply_len = int32_t(int64_t(sink.blob.size()) - r.reply_offset);
    } else {
      note_error(r.status, c->status.error_message());
    }
    sink.records.push_back(r);
    sink.last_end = end;
    const bool closed = c->closed;
    const uint8_t kind = c->kind;
    delete c;
    if (closed) {
      // The caller's next call, as _Client._closed's loop: while its phase has time
      // left. Started before this call leaves in_flight_, so that in_flight_ never
      // reads 0 between the two.
      const int64_t now = now_ns();
      if (now < closed_end_.load(std::memory_order_relaxed))
        send_call(0, now, kind, true);
      else
        callers_.fetch_sub(1);
    }
    in_flight_.fetch_sub(1);
  }

  void note_error(int32_t code, const std::string& details) {
    // Only the first message per status is kept: a lock the first time, a load after.
    auto& seen = seen_[size_t(code) & 31];
    if (seen.load(std::memory_order_relaxed)) return;
    std::lock_guard<std::mutex> lock(examples_mu_);
    if (examples_.emplace(code, details).second) seen.store(true);
  }

  // The closed loop of _Client._closed: `callers` callers, each starting its next call
  // when its last one ends, until `end`; returns when the last call has ended.
  void closed_loop(int64_t start_at, int64_t end, int callers, uint8_t kind) {
    wait_until(start_at);
    closed_end_.store(end);
    // Counted up as each caller starts (one that would start past the end never
    // does, as a Python caller whose loop test fails at once), down as each stops.
    for (int i = 0; i < callers; ++i) {
      const int64_t now = now_ns();
      if (now >= end) break;
      callers_.fetch_add(1);
      send_call(0, now, kind, true);
    }
    // The calls run themselves (complete() starts each caller's next one): sleep
    // through the phase, then wait, a millisecond at a time, for the last calls.
    wait_until(end);
    while (callers_.load() > 0) wait_until(now_ns() + 1000000);
  }

  // The arrivals of _Client._arrivals, every flow of the phase at once: call k of a
  // flow is due at start + k / rate (computed in doubles exactly as Python does); a
  // call more than max_send_lag behind is recorded NOT_SENT instead of being sent.
  void open_loop(const PhaseSpec& p, int64_t start, int64_t end) {
    struct State {
      int16_t pool;
      double first, interval;
      int64_t k, due;
    };
    std::vector<State> flows;
    for (const auto& f : p.flows) {
      State st{int16_t(f.pool), double(start), 1e9 / f.rate, 0, start};
      flows.push_back(st);
    }
    Sink& mine = sinks_.back();
    for (;;) {
      State* next = nullptr;
      for (auto& st : flows) {
        if (st.due < end && (!next || st.due < next->due)) next = &st;
      }
      if (!next) break;
      const int64_t due = next->due;
      wait_until(due);
      const int64_t lag = now_ns() - due;
      if (lag > s_.max_lag_ns) {
        Record r{};
        r.intended = r.sent = r.end = due;
        r.status = kNotSent;
        r.pool = next->pool;
        r.kind = kRecorded;
        r.payload = -1;
        mine.records.push_back(r);
      } else {
        max_lag_ = std::max(max_lag_, lag);
        send_call(next->pool, due, kRecorded, false);
      }
      next->k += 1;
      next->due = int64_t(next->first + double(next->k) * next->interval);
    }
  }

  const Schedule& s_;
  std::vector<std::vector<grpc::ByteBuffer>> pools_;
  std::shared_ptr<grpc::Channel> channel_;
  grpc::GenericStub stub_;
  const std::string method_;
  grpc::CompletionQueue cq_;
  std::vector<std::atomic<uint64_t>> cursors_;
  std::vector<Sink> sinks_;  // one per drainer, then the sender's (NOT_SENT records)
  std::vector<std::thread> drainers_;
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> closed_end_{0};
  std::atomic<int> callers_{0};
  int64_t max_lag_ = 0;  // sender thread only
  std::atomic<bool> seen_[32];
  std::mutex examples_mu_;
  std::map<int32_t, std::string> examples_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s SCHEDULE POOLS OUT\n", argv[0]);
    return 2;
  }
  // Debian's Abseil has the Mutex deadlock detector on (GraphCycles shows in
  // profiles of this client): every lock gRPC takes feeds its lock graph, a few % of
  // a call's CPU, of no use to a load client.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  try {
    Schedule schedule = read_schedule(argv[1]);
    auto pools = read_pools(argv[2]);
    for (const auto& p : schedule.phases) {
      for (const auto& f : p.flows) {
        if (f.pool < 0 || size_t(f.pool) >= pools.size() || pools[size_t(f.pool)].empty())
          throw std::runtime_error("schedule: a flow's pool has no payloads");
      }
    }
    if (pools.empty() || pools[0].empty())
      throw std::runtime_error("pools: the normal pool (0) has no payloads");
    Client client(schedule, std::move(pools));
    if (!client.connect()) {
      fprintf(stderr, "no connection to %s within %g s\n", schedule.target.c_str(),
              double(schedule.connect_timeout_ns) / 1e9);
      client.finish();
      return 3;
    }
    client.start_drainers();
    client.warm_up();
    printf("READY\n");
    fflush(stdout);

    char line[128];
    long long t0 = 0;
    if (!fgets(line, sizeof line, stdin) || sscanf(line, "GO %lld", &t0) != 1) {
      fprintf(stderr, "expected GO <t0_ns> on stdin\n");
      client.finish();
      return 4;
    }
    const int64_t cpu0 = cpu_ns(), wall0 = now_ns();
    client.run(int64_t(t0));
    client.finish();
    const int64_t cpu1 = cpu_ns();
    const int64_t wall1 = std::max(client.last_end(), wall0);
    size_t n = client.write(argv[3]);
    printf("DONE records=%zu cpu_ns=%" PRId64 " wall_ns=%" PRId64 " max_send_lag_ns=%" PRId64
           "\n",
           n, cpu1 - cpu0, wall1 - wall0, client.max_send_lag());
    fflush(stdout);
  } catch (const std::exception& e) {
    fprintf(stderr, "openloop: %s\n", e.what());
    return 1;
  }
  return 0;
}
