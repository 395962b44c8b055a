// Native sealing of audit decision records: module gateway._native._audit.
//
// The audit writer thread turns each answered transaction into one sealed line
// (gateway/audit/sink.py DecisionRecords.expand, gateway/audit/records.py seal). In
// Python that is ~20 us a record under the GIL, which the event loop waits out: its
// calls into ONNX Runtime release the GIL, the writer takes it, and the loop gets it
// back only when the writer lets go (benchmarks/README.md, "Where the handler's time
// goes"). Here the same bytes cost a few microseconds.
//
// Three functions, each the exact bytes of its Python reference, or None:
//
//   decision_payload(hasher, result, keys, amount_minor, currency, latency_us)
//     == decision_json(result, ids, ...) with ids the three entity hashes; None
//     wherever the reference would not take its direct path (a value of another
//     type, an id that is neither a str nor empty, a lone surrogate in an id): the
//     caller then runs the reference, which writes the same record or raises.
//   seal_line(key_id, kind, payload, prev, seq, ts_ms, worker)
//     == records.seal(...) for a payload already canonical; None for anything but
//     str / int (int64) arguments.
//   seal_lines(key_id, kind, payloads, prev, seq, ts_ms, worker)
//     == records.seal_lines(...): seal_line over a list of payloads, chained; None
//     where seal_line would decline any of them.
//
// EntityHasher(key, hex_chars) is records.EntityHasher: HMAC-SHA256 (RFC 2104) with
// the two padded-key states computed once. SHA-256 is FIPS 180-4, written out below,
// on the x86 SHA extensions where the CPU has them. Everything runs under the GIL (it
// reads Python objects). tests/native/test_audit_parity.py holds each function to its
// reference, both SHA-256 paths to hashlib; tests/fuzz/wire_check.py (make fuzz)
// checks the record of every transaction the fuzzer gets parsed against the reference.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define RISKWIRE_SHA_NI 1
#endif

namespace py = pybind11;

namespace {

// --- SHA-256 -------------------------------------------------------------------------

constexpr std::array<std::uint32_t, 64> K = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

inline std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

// FIPS 180-4's compression function, one 64-byte block at a time.
void compress_portable(std::uint32_t* state, const unsigned char* data, std::size_t blocks) {
  for (; blocks > 0; --blocks, data += 64) {
    std::array<std::uint32_t, 64> w{};
    for (std::size_t i = 0; i < 16; ++i) {
      w[i] = (std::uint32_t{data[4 * i]} << 24) | (std::uint32_t{data[4 * i + 1]} << 16) |
             (std::uint32_t{data[4 * i + 2]} << 8) | std::uint32_t{data[4 * i + 3]};
    }
    for (std::size_t i = 16; i < 64; ++i) {
      const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    std::uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (std::size_t i = 0; i < 64; ++i) {
      const std::uint32_t s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const std::uint32_t ch = (e & f) ^ (~e & g);
      const std::uint32_t t1 = h + s1 + ch + K[i] + w[i];
      const std::uint32_t s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const std::uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
      const std::uint32_t t2 = s0 + maj;
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
  }
}

#ifdef RISKWIRE_SHA_NI
// The same function on the x86 SHA extensions (what OpenSSL, and so hashlib, use on
// this machine: ~6x the portable code). Four rounds per step: the state as ABEF/CDGH,
// the message schedule four words at a time (sha256msg1/msg2).
__attribute__((target("sha,sse4.1,ssse3"))) void compress_sha_ni(std::uint32_t* state,
                                                                  const unsigned char* data,
                                                                  std::size_t blocks) {
  const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i tmp = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state));
  __m128i state1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state + 4));
  tmp = _mm_shuffle_epi32(tmp, 0xB1);                 // CDAB
  state1 = _mm_shuffle_epi32(state1, 0x1B);           // EFGH
  __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);   // ABEF
  state1 = _mm_blend_epi16(state1, tmp, 0xF0);        // CDGH
  for (; blocks > 0; --blocks, data += 64) {
    const __m128i abef = state0;
    const __m128i cdgh = state1;
    __m128i w[4];
    for (int i = 0; i < 4; ++i) {
      w[i] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 16 * i)),
                              byte_swap);
    }
    for (int g = 0; g < 16; ++g) {
      if (g >= 4) {
        // W[4g..4g+3] from the four words groups before it, in place of the oldest.
        const __m128i older = _mm_sha256msg1_epu32(w[g % 4], w[(g + 1) % 4]);
        const __m128i middle = _mm_alignr_epi8(w[(g + 3) % 4], w[(g + 2) % 4], 4);
        w[g % 4] = _mm_sha256msg2_epu32(_mm_add_epi32(older, middle), w[(g + 3) % 4]);
      }
      __m128i msg = _mm_add_epi32(
          w[g % 4], _mm_loadu_si128(reinterpret_cast<const __m128i*>(K.data() + 4 * g)));
      state1 = _mm_sha256rnds2_epu32(state1, state0, msg);
      msg = _mm_shuffle_epi32(msg, 0x0E);
      state0 = _mm_sha256rnds2_epu32(state0, state1, msg);
    }
    state0 = _mm_add_epi32(state0, abef);
    state1 = _mm_add_epi32(state1, cdgh);
  }
  tmp = _mm_shuffle_epi32(state0, 0x1B);              // FEBA
  state1 = _mm_shuffle_epi32(state1, 0xB1);           // DCHG
  state0 = _mm_blend_epi16(tmp, state1, 0xF0);        // DCBA
  state1 = _mm_alignr_epi8(state1, tmp, 8);           // ABEF
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state), state0);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state + 4), state1);
}

bool cpu_has_sha_ni() {
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  const bool sse41 = (ecx & (1u << 19)) != 0;
  const bool ssse3 = (ecx & (1u << 9)) != 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  return sse41 && ssse3 && (ebx & (1u << 29)) != 0;
}
#endif

using Compress = void (*)(std::uint32_t*, const unsigned char*, std::size_t);

// The compression in use: the SHA extensions where the CPU has them.
// use_portable_sha256() switches (the tests hold both to hashlib).
Compress compress_function_auto();

Compress& compress_function() {
  static Compress chosen = compress_function_auto();
  return chosen;
}

Compress compress_function_auto() {
#ifdef RISKWIRE_SHA_NI
  return cpu_has_sha_ni() ? compress_sha_ni : compress_portable;
#else
  return compress_portable;
#endif
}

class Sha256 {
 public:
  static constexpr std::size_t kBlock = 64;
  static constexpr std::size_t kDigest = 32;

  void update(const unsigned char* data, std::size_t n) {
    length_ += n;
    if (buffered_ > 0) {
      const std::size_t take = std::min(kBlock - buffered_, n);
      std::memcpy(buffer_.data() + buffered_, data, take);
      buffered_ += take;
      data += take;
      n -= take;
      if (buffered_ < kBlock) return;
      compress(buffer_.data());
      buffered_ = 0;
    }
    if (n >= kBlock) {
      compress_function()(state_.data(), data, n / kBlock);
      data += n - n % kBlock;
      n %= kBlock;
    }
    std::memcpy(buffer_.data(), data, n);
    buffered_ = n;
  }

  void update(std::string_view text) {
    update(reinterpret_cast<const unsigned char*>(text.data()), text.size());
  }

  // The digest of everything updated so far; the state is spent afterwards.
  std::array<unsigned char, kDigest> finish() {
    const std::uint64_t bits = length_ * 8;
    buffer_[buffered_++] = 0x80;
    if (buffered_ > kBlock - 8) {
      std::memset(buffer_.data() + buffered_, 0, kBlock - buffered_);
      compress(buffer_.data());
      buffered_ = 0;
    }
    std::memset(buffer_.data() + buffered_, 0, kBlock - 8 - buffered_);
    for (int i = 0; i < 8; ++i) {
      buffer_[kBlock - 1 - i] = static_cast<unsigned char>(bits >> (8 * i));
    }
    compress(buffer_.data());
    std::array<unsigned char, kDigest> out{};
    for (std::size_t i = 0; i < 8; ++i) {
      out[4 * i] = static_cast<unsigned char>(state_[i] >> 24);
      out[4 * i + 1] = static_cast<unsigned char>(state_[i] >> 16);
      out[4 * i + 2] = static_cast<unsigned char>(state_[i] >> 8);
      out[4 * i + 3] = static_cast<unsigned char>(state_[i]);
    }
    return out;
  }

 private:
  void compress(const unsigned char* block) { compress_function()(state_.data(), block, 1); }

  std::array<std::uint32_t, 8> state_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<unsigned char, kBlock> buffer_{};
  std::size_t buffered_ = 0;
  std::uint64_t length_ = 0;
};

constexpr char kHex[] = "0123456789abcdef";

void append_hex(std::string& out, const unsigned char* bytes, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(kHex[bytes[i] >> 4]);
    out.push_back(kHex[bytes[i] & 0xf]);
  }
}

// --- HMAC-SHA256 of entity ids (records.EntityHasher) --------------------------------

class EntityHasher {
 public:
  EntityHasher(std::string_view key, std::size_t hex_chars) : hex_chars_(hex_chars) {
    if (hex_chars == 0 || hex_chars > 2 * Sha256::kDigest) {
      throw py::value_error("hex_chars must be 1 to 64");
    }
    std::array<unsigned char, Sha256::kBlock> padded{};
    if (key.size() > Sha256::kBlock) {
      Sha256 long_key;
      long_key.update(key);
      const auto digest = long_key.finish();
      std::memcpy(padded.data(), digest.data(), digest.size());
    } else {
      std::memcpy(padded.data(), key.data(), key.size());
    }
    std::array<unsigned char, Sha256::kBlock> ipad{};
    std::array<unsigned char, Sha256::kBlock> opad{};
    for (std::size_t i = 0; i < Sha256::kBlock; ++i) {
      ipad[i] = padded[i] ^ 0x36;
      opad[i] = padded[i] ^ 0x5c;
    }
    inner_.update(ipad.data(), ipad.size());
    outer_.update(opad.data(), opad.size());
  }

  // The first hex_chars hex digits of HMAC-SHA256(key, utf8); "" for "".
  void append(std::string& out, std::string_view utf8) const {
    if (utf8.empty()) return;
    Sha256 inner = inner_;
    inner.update(utf8);
    const auto inner_digest = inner.finish();
    Sha256 outer = outer_;
    outer.update(inner_digest.data(), inner_digest.size());
    const auto digest = outer.finish();
    const std::size_t start = out.size();
    append_hex(out, digest.data(), (hex_chars_ + 1) / 2);
    out.resize(start + hex_chars_);  // an odd count ends mid-byte
  }

  std::size_t hex_chars() const { return hex_chars_; }

 private:
  Sha256 inner_;
  Sha256 outer_;
  std::size_t hex_chars_;
};

// --- canonical JSON pieces, as gateway/audit writes them -----------------------------

// Raised inside the builders for "not the reference's direct path": the caller
// answers None. Any Python error met on the way is cleared first.
struct NotDirect {};

[[noreturn]] void not_direct() {
  PyErr_Clear();
  throw NotDirect{};
}

py::object attr(py::handle obj, PyObject* name) {
  PyObject* value = PyObject_GetAttr(obj.ptr(), name);
  if (value == nullptr) not_direct();
  return py::reinterpret_steal<py::object>(value);
}

// json.encoder.encode_basestring_ascii (CPython's c_encode_basestring_ascii): ASCII
// printables as they are, the short escapes, every other code point as \uXXXX
// (lowercase hex; past the BMP as a UTF-16 surrogate pair).
void append_json_string(std::string& out, py::handle text) {
  if (!PyUnicode_Check(text.ptr())) not_direct();
  PyObject* s = text.ptr();
#if PY_VERSION_HEX < 0x030C0000
  if (PyUnicode_READY(s) < 0) not_direct();  // a legacy str: its canonical form first
#endif
  const Py_ssize_t n = PyUnicode_GET_LENGTH(s);
  const int kind = PyUnicode_KIND(s);
  const void* data = PyUnicode_DATA(s);
  out.push_back('"');
  for (Py_ssize_t i = 0; i < n; ++i) {
    Py_UCS4 c = PyUnicode_READ(kind, data, i);
    if (c >= ' ' && c <= '~' && c != '\\' && c != '"') {
      out.push_back(static_cast<char>(c));
      continue;
    }
    out.push_back('\\');
    switch (c) {
      case '\\':
      case '"':
        out.push_back(static_cast<char>(c));
        continue;
      case '\b':
        out.push_back('b');
        continue;
      case '\f':
        out.push_back('f');
        continue;
      case '\n':
        out.push_back('n');
        continue;
      case '\r':
        out.push_back('r');
        continue;
      case '\t':
        out.push_back('t');
        continue;
      default:
        break;
    }
    if (c >= 0x10000) {
      const Py_UCS4 high = 0xd800 + ((c - 0x10000) >> 10);
      out += 'u';
      for (int shift = 12; shift >= 0; shift -= 4) out.push_back(kHex[(high >> shift) & 0xf]);
      out += "\\";
      c = 0xdc00 + ((c - 0x10000) & 0x3ff);
    }
    out.push_back('u');
    for (int shift = 12; shift >= 0; shift -= 4) out.push_back(kHex[(c >> shift) & 0xf]);
  }
  out.push_back('"');
}

void append_ascii(std::string& out, PyObject* text) {
  Py_ssize_t size = 0;
  const char* bytes = PyUnicode_AsUTF8AndSize(text, &size);
  if (bytes == nullptr) not_direct();
  out.append(bytes, static_cast<std::size_t>(size));
}

// int.__repr__ of an exact int (sink._json_int: anything else is not direct).
void append_json_int(std::string& out, py::handle value) {
  if (!PyLong_CheckExact(value.ptr())) not_direct();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow == 0 && !(v == -1 && PyErr_Occurred())) {
    out += std::to_string(v);
    return;
  }
  PyErr_Clear();
  PyObject* text = PyObject_Repr(value.ptr());
  if (text == nullptr) not_direct();
  const py::object owned = py::reinterpret_steal<py::object>(text);
  append_ascii(out, owned.ptr());
}

// sink._json_float: float.__repr__ of an exact finite float, else the JSON string of
// str(value) ("nan", "inf", "-inf").
void append_json_float(std::string& out, py::handle value) {
  if (!PyFloat_CheckExact(value.ptr())) not_direct();
  const double v = PyFloat_AS_DOUBLE(value.ptr());
  if (!std::isfinite(v)) {
    out += std::isnan(v) ? "\"nan\"" : (v > 0 ? "\"inf\"" : "\"-inf\"");
    return;
  }
  char* text = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, nullptr);
  if (text == nullptr) not_direct();
  out += text;
  PyMem_Free(text);
}

// str(value) as a JSON string: the enums' text, as the reference's str() gives it.
void append_json_str_of(std::string& out, py::handle value) {
  PyObject* text = PyObject_Str(value.ptr());
  if (text == nullptr) not_direct();
  const py::object owned = py::reinterpret_steal<py::object>(text);
  append_json_string(out, owned);
}

// keys.get(name, "") of an exact dict; anything else is not direct.
py::handle key_of(py::handle keys, PyObject* name, PyObject* empty) {
  PyObject* value = PyDict_GetItemWithError(keys.ptr(), name);
  if (value == nullptr) {
    if (PyErr_Occurred()) not_direct();
    return empty;
  }
  return value;
}

// The entity hash of an id as records.EntityHasher gives it: "" for any false value
// (an empty id, a missing one), else the hash of a str; a value of another type, or a
// str with no UTF-8 form (a lone surrogate), is not direct (the reference raises).
void append_entity(std::string& out, const EntityHasher& hasher, py::handle id) {
  const int truthy = PyObject_IsTrue(id.ptr());
  if (truthy < 0) not_direct();
  if (truthy == 0) {
    out += "\"\"";
    return;
  }
  if (!PyUnicode_Check(id.ptr())) not_direct();
  Py_ssize_t size = 0;
  const char* utf8 = PyUnicode_AsUTF8AndSize(id.ptr(), &size);
  if (utf8 == nullptr) not_direct();
  out.push_back('"');
  hasher.append(out, std::string_view(utf8, static_cast<std::size_t>(size)));
  out.push_back('"');
}

struct Names {
  PyObject* transaction_id;
  PyObject* account_id;
  PyObject* card_id;
  PyObject* channel;
  PyObject* country;
  PyObject* merchant_category_code;
  PyObject* arm;
  PyObject* config_version;
  PyObject* decision;
  PyObject* source;
  PyObject* fallback_reason;
  PyObject* model_name;
  PyObject* model_version;
  PyObject* reason_codes;
  PyObject* route;
  PyObject* score;
  PyObject* code;
  PyObject* contribution;
  PyObject* feature;
  PyObject* empty;
};

const Names& names() {
  static const Names interned = [] {
    auto in = [](const char* s) { return PyUnicode_InternFromString(s); };
    return Names{in("transaction_id"), in("account_id"),  in("card_id"),
                 in("channel"),        in("country"),     in("merchant_category_code"),
                 in("arm"),            in("config_version"), in("decision"),
                 in("source"),         in("fallback_reason"), in("model_name"),
                 in("model_version"),  in("reason_codes"), in("route"),
                 in("score"),          in("code"),        in("contribution"),
                 in("feature"),        in("")};
  }();
  return interned;
}

// sink.decision_json's bytes, ids hashed here: keys in sorted order.
std::string decision_payload(const EntityHasher& hasher, py::handle result, py::handle keys,
                             py::handle amount_minor, py::handle currency,
                             py::handle latency_us) {
  if (!PyDict_CheckExact(keys.ptr())) not_direct();
  const Names& n = names();
  const py::object transaction_id = attr(result, n.transaction_id);
  const py::handle account_id = key_of(keys, n.account_id, n.empty);
  const py::handle card_id = key_of(keys, n.card_id, n.empty);
  std::string out;
  out.reserve(512);
  out += "{\"account_id\":";
  append_entity(out, hasher, account_id);
  out += ",\"arm\":";
  append_json_str_of(out, attr(result, n.arm));
  out += ",\"card_id\":";
  append_entity(out, hasher, card_id);
  out += ",\"config_version\":";
  append_json_int(out, attr(result, n.config_version));
  out += ",\"decision\":";
  append_json_str_of(out, attr(result, n.decision));
  out += ",\"decision_source\":";
  append_json_str_of(out, attr(result, n.source));
  out += ",\"fallback_reason\":";
  const py::object fallback = attr(result, n.fallback_reason);
  if (fallback.is_none()) {
    out += "null";
  } else {
    append_json_str_of(out, fallback);
  }
  out += ",\"inputs\":{\"amount_minor\":";
  append_json_int(out, amount_minor);
  out += ",\"channel\":";
  append_json_string(out, key_of(keys, n.channel, n.empty));
  out += ",\"country\":";
  append_json_string(out, key_of(keys, n.country, n.empty));
  out += ",\"currency\":";
  append_json_string(out, currency);
  out += ",\"merchant_category_code\":";
  append_json_string(out, key_of(keys, n.merchant_category_code, n.empty));
  out += "},\"latency_us\":";
  append_json_int(out, latency_us);
  out += ",\"model\":";
  append_json_string(out, attr(result, n.model_name));
  out += ',';
  const py::object reasons = attr(result, n.reason_codes);
  const int any = PyObject_IsTrue(reasons.ptr());
  if (any < 0) not_direct();
  if (any == 1) {
    PyObject* items = PySequence_Fast(reasons.ptr(), "reason_codes");
    if (items == nullptr) not_direct();
    const py::object owned = py::reinterpret_steal<py::object>(items);
    out += "\"reason_codes\":[";
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < count; ++i) {
      const py::handle reason = PySequence_Fast_GET_ITEM(items, i);
      if (i > 0) out += ',';
      out += "{\"code\":";
      append_json_string(out, attr(reason, n.code));
      out += ",\"contribution\":";
      append_json_float(out, attr(reason, n.contribution));
      out += ",\"feature\":";
      append_json_string(out, attr(reason, n.feature));
      out += '}';
    }
    out += "],";
  }
  out += "\"route\":";
  append_json_string(out, attr(result, n.route));
  out += ",\"score\":";
  append_json_float(out, attr(result, n.score));
  out += ",\"transaction_id\":";
  append_entity(out, hasher, transaction_id);
  out += ",\"version\":";
  append_json_int(out, attr(result, n.model_version));
  out += '}';
  return out;
}

// A Python int that fits in int64; else not direct.
long long int64_of(py::handle value) {
  if (!PyLong_Check(value.ptr())) not_direct();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow != 0 || (v == -1 && PyErr_Occurred())) not_direct();
  return v;
}

// A Python int that fits in int64, as int.__repr__ writes it; else not direct.
void append_int64(std::string& out, py::handle value) { out += std::to_string(int64_of(value)); }

// A run of records sealed in turn, chained: the fields around each payload in
// canonical key order, rendered once (records.seal's body), each line's SHA-256 and
// the line with "digest" spliced in first. Construction renders every field and so
// declines (NotDirect) anything but str / int64 arguments.
class Sealer {
 public:
  Sealer(py::handle key_id, py::handle kind, py::handle prev, py::handle seq, py::handle ts_ms,
         py::handle worker)
      : seq_(int64_of(seq)) {
    head_ = "{\"key_id\":";
    append_json_string(head_, key_id);
    head_ += ",\"kind\":";
    append_json_string(head_, kind);
    head_ += ",\"payload\":";
    append_json_string(prev_json_, prev);
    tail_ = ",\"ts_ms\":";
    append_int64(tail_, ts_ms);
    tail_ += ",\"worker\":";
    append_int64(tail_, worker);
    tail_ += '}';
  }

  // Whether `n` more lines keep every seq within int64.
  bool fits(Py_ssize_t n) const {
    return n == 0 || seq_ <= INT64_MAX - static_cast<long long>(n - 1);
  }

  std::size_t overhead() const { return head_.size() + tail_.size() + 160; }

  // Seal `payload` onto `lines` (its line appended); the next line follows it.
  void seal(std::string& lines, PyObject* payload) {
    body_.assign(head_);
    body_.append(PyBytes_AS_STRING(payload), static_cast<std::size_t>(PyBytes_GET_SIZE(payload)));
    body_ += ",\"prev\":";
    body_ += prev_json_;
    body_ += ",\"seq\":";
    body_ += std::to_string(seq_++);
    body_ += tail_;
    Sha256 sha;
    sha.update(body_);
    const auto digest = sha.finish();
    hex_.clear();
    append_hex(hex_, digest.data(), digest.size());
    lines += "{\"digest\":\"";
    lines += hex_;
    lines += "\",";
    lines.append(body_, 1, std::string::npos);
    lines += '\n';
    prev_json_.assign(1, '"');
    prev_json_ += hex_;
    prev_json_ += '"';
  }

  // The last line's digest; empty before any.
  const std::string& digest() const { return hex_; }

 private:
  long long seq_;
  std::string head_, tail_, prev_json_, body_, hex_;
};

// records.seal for a canonical payload: (digest, line), or None.
py::object seal_line(py::handle key_id, py::handle kind, py::handle payload, py::handle prev,
                     py::handle seq, py::handle ts_ms, py::handle worker) {
  try {
    if (!PyBytes_Check(payload.ptr())) not_direct();
    Sealer sealer(key_id, kind, prev, seq, ts_ms, worker);
    std::string line;
    line.reserve(static_cast<std::size_t>(PyBytes_GET_SIZE(payload.ptr())) + sealer.overhead());
    sealer.seal(line, payload.ptr());
    return py::make_tuple(py::str(sealer.digest()), py::bytes(line));
  } catch (const NotDirect&) {
    return py::none();
  }
}

// records.seal_lines: seal_line for each payload of a list in turn, each line's prev
// the digest of the line before it and its seq one more. One call for a whole item
// instead of one per record: the writer's per-record Python (its bookkeeping, a call
// into seal_line, the line appended to its buffer) is most of what a record cost it.
// Returns (the last digest, the lines joined, each line's end offset in them), or None
// for what seal_line declines (and a payload that is not bytes, a seq run past int64).
py::object seal_lines(py::handle key_id, py::handle kind, py::handle payloads, py::handle prev,
                      py::handle seq, py::handle ts_ms, py::handle worker) {
  try {
    if (!PyList_Check(payloads.ptr())) not_direct();
    const Py_ssize_t n = PyList_GET_SIZE(payloads.ptr());
    Sealer sealer(key_id, kind, prev, seq, ts_ms, worker);
    if (!sealer.fits(n)) not_direct();
    std::size_t total = 0;
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* payload = PyList_GET_ITEM(payloads.ptr(), i);
      if (!PyBytes_Check(payload)) not_direct();
      total += static_cast<std::size_t>(PyBytes_GET_SIZE(payload));
    }
    std::string lines;
    lines.reserve(total + static_cast<std::size_t>(n) * sealer.overhead());
    py::list ends(n);
    for (Py_ssize_t i = 0; i < n; ++i) {
      sealer.seal(lines, PyList_GET_ITEM(payloads.ptr(), i));
      ends[static_cast<std::size_t>(i)] = py::int_(lines.size());
    }
    // The last digest: the prev of whatever is sealed next (the prev given, if none).
    py::object last =
        n == 0 ? py::reinterpret_borrow<py::object>(prev) : py::object(py::str(sealer.digest()));
    return py::make_tuple(last, py::bytes(lines), ends);
  } catch (const NotDirect&) {
    return py::none();
  }
}

}  // namespace

PYBIND11_MODULE(_audit, m) {
  m.doc() = "Native sealing of audit decision records (see gateway/audit/records.py).";

  py::class_<EntityHasher>(m, "EntityHasher",
                           "records.EntityHasher: keyed HMAC-SHA256 of entity ids.")
      .def(py::init([](const py::bytes& key, std::size_t hex_chars) {
             return EntityHasher(std::string_view(key), hex_chars);
           }),
           py::arg("key"), py::arg("hex_chars"))
      .def(
          "__call__",
          [](const EntityHasher& self, const py::str& value) {
            Py_ssize_t size = 0;
            const char* utf8 = PyUnicode_AsUTF8AndSize(value.ptr(), &size);
            if (utf8 == nullptr) throw py::error_already_set();
            std::string out;
            self.append(out, std::string_view(utf8, static_cast<std::size_t>(size)));
            return out;
          },
          py::arg("value"), "The id's hash (UnicodeEncodeError for a str with no UTF-8 form).")
      .def_property_readonly("hex_chars", &EntityHasher::hex_chars);

  m.def(
      "decision_payload",
      [](const EntityHasher& hasher, py::handle result, py::handle keys, py::handle amount_minor,
         py::handle currency, py::handle latency_us) -> py::object {
        try {
          return py::bytes(decision_payload(hasher, result, keys, amount_minor, currency,
                                            latency_us));
        } catch (const NotDirect&) {
          return py::none();
        }
      },
      py::arg("hasher"), py::arg("result"), py::arg("keys"), py::arg("amount_minor"),
      py::arg("currency"), py::arg("latency_us"),
      "sink.decision_json's bytes with the ids hashed here, or None: run the reference.");

  m.def("seal_line", &seal_line, py::arg("key_id"), py::arg("kind"), py::arg("payload"),
        py::arg("prev"), py::arg("seq"), py::arg("ts_ms"), py::arg("worker"),
        "records.seal's (digest, line) for a canonical payload, or None: run the reference.");

  m.def("seal_lines", &seal_lines, py::arg("key_id"), py::arg("kind"), py::arg("payloads"),
        py::arg("prev"), py::arg("seq"), py::arg("ts_ms"), py::arg("worker"),
        "records.seal_lines's (last digest, lines, ends) for canonical payloads, or None.");

  m.def(
      "use_portable_sha256",
      [](bool portable) {
        compress_function() = portable ? compress_portable : compress_function_auto();
      },
      py::arg("portable"),
      "Use the portable SHA-256 (True) or the CPU's SHA extensions where it has them.");
  m.def(
      "sha256_implementation",
      []() { return compress_function() == compress_portable ? "portable" : "sha-ni"; },
      "Which SHA-256 compression is in use: sha-ni or portable.");
  m.def(
      "sha256_hex",
      [](const py::bytes& data) {
        const std::string_view view(data);
        Sha256 sha;
        sha.update(view);
        const auto digest = sha.finish();
        std::string hex;
        append_hex(hex, digest.data(), digest.size());
        return hex;
      },
      py::arg("data"), "hashlib.sha256(data).hexdigest(), computed here (for the tests).");
}
