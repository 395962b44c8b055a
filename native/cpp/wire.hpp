// riskwire protobuf wire-format parser for riskwire.v1.ScoreRequest and ScoreBatchRequest.
//
// Reads request bytes straight into flat structs, with no protobuf message in between:
// strings stay views (offset, size) into the caller's buffer, map entries go to one
// vector per map per batch, so a batch costs a handful of amortised allocations however
// many transactions it holds. Plain C++17, no Python (gateway/_native binds it in
// bindings.cpp).
//
// What is accepted and what it means follows the protobuf library's own parser (upb, as
// python protobuf 6 uses it), tested differentially in tests/native/test_wire_parity.py:
// - every wire type; unknown fields are skipped in every message, map entries included,
//   groups with their nesting (an end-group must close the innermost start-group);
// - a field whose wire type does not fit its declared type is an unknown field;
// - singular fields: the last occurrence wins; ScoreRequest.transaction seen twice is
//   merged (later scalars overwrite, map entries accumulate);
// - map entries: key 1, value 2, missing ones default ("" / 0.0); duplicate keys, the
//   last entry wins (readers look entries up from the back). An entry that holds any
//   unknown field (a wrong wire type for key or value included) is NOT a map entry: upb
//   moves it to the transaction's unknown fields, so it is dropped here;
// - int32 fields take the varint's low 32 bits, int64 its two's complement, bool is
//   varint != 0, double fixed64 little-endian; customer_tenure_days tracks presence;
// - strings must be valid UTF-8 (no overlong forms, no surrogates, nothing above
//   U+10FFFF), map keys and values too; unknown fields are not checked;
// - a varint is at most 10 bytes (bits past 64 dropped), a tag at most 5 bytes and below
//   2^32, a length below 2^31 - 1 and within its enclosing message; field number 0 and
//   wire types 6 and 7 are errors;
// - nesting: at most kMaxDepth sub-messages and groups deep (upb's default, 100).
// Anything else throws WireError, whose message names the field path and byte offset.
// Nothing here reads outside [data, data + size) on any input.
#ifndef RISKWIRE_NATIVE_WIRE_HPP_
#define RISKWIRE_NATIVE_WIRE_HPP_

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace riskwire::wire {

/// Deepest nesting of sub-messages and unknown groups accepted, the top-level message
/// being depth 0 (upb's default depth limit, which python protobuf uses).
inline constexpr int kMaxDepth = 100;

/// Largest input accepted: offsets are 32-bit, and upb refuses lengths from 2^31 - 1.
inline constexpr std::size_t kMaxInputSize = 0x7FFFFFFE;

/// A malformed or refused request; what() is "<field path>: <problem> at byte <offset>".
class WireError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A string's bytes: [offset, offset + size) of the parsed buffer (valid UTF-8).
struct StrRef {
  std::uint32_t offset = 0;
  std::uint32_t size = 0;
};

/// The Transaction string fields, in field-number order (transaction_id = 1 ...).
enum class StringField : std::uint8_t {
  kTransactionId,
  kAccountId,
  kCardId,
  kMerchantId,
  kMerchantCategoryCode,
  kCurrency,
  kCountry,
  kEntryMode,
  kDeviceId,
  kIpCountry,
};

/// Number of StringField values.
inline constexpr std::size_t kStringFieldCount = 10;

/// The proto name of a string field ("transaction_id", ...).
const char* string_field_name(StringField field);

/// A range [begin, begin + count) of one of Batch's entry vectors.
struct Range {
  std::uint32_t begin = 0;
  std::uint32_t count = 0;
};

/// One numeric_extras entry.
struct NumericEntry {
  StrRef key;
  double value = 0.0;
};

/// One categorical_extras or monitoring_attributes entry.
struct StringEntry {
  StrRef key;
  StrRef value;
};

/// One riskwire.v1.Transaction; every field at its proto3 default until set.
struct Transaction {
  /// Indexed by StringField.
  StrRef strings[kStringFieldCount];
  std::int64_t amount_minor = 0;
  std::int64_t timestamp_ms = 0;
  /// The Channel number as sent (proto3 enums are open: any int32).
  std::int32_t channel = 0;
  std::int32_t customer_tenure_days = 0;
  bool has_customer_tenure_days = false;
  /// Entries in wire order, duplicates kept (the last one wins); indexes into
  /// Batch::numeric_entries, categorical_entries, monitoring_entries.
  Range numeric_extras;
  Range categorical_extras;
  Range monitoring_attributes;

  StrRef string(StringField field) const { return strings[static_cast<std::size_t>(field)]; }
};

/// A parsed request: its transactions, options, and views into the parsed buffer.
///
/// The buffer must outlive the Batch and stay unchanged (the bindings keep the bytes
/// object alive).
struct Batch {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
  std::vector<Transaction> transactions;
  std::vector<NumericEntry> numeric_entries;
  std::vector<StringEntry> categorical_entries;
  std::vector<StringEntry> monitoring_entries;
  bool explain = false;
  StrRef route;

  /// The bytes of a string.
  std::string_view view(StrRef ref) const {
    return {reinterpret_cast<const char*>(data) + ref.offset, ref.size};
  }
  /// Transaction `txn`'s string field.
  std::string_view string(const Transaction& txn, StringField field) const {
    return view(txn.string(field));
  }
  /// numeric_extras[key] of `txn` (the last entry with that key); false when absent.
  bool numeric_extra(const Transaction& txn, std::string_view key, double* value) const;
  /// categorical_extras[key] of `txn` (the last entry with that key); false when absent.
  bool categorical_extra(const Transaction& txn, std::string_view key, StrRef* value) const;
  /// Empties the batch, keeping the vectors' capacity.
  void clear();
};

/// Limits a request must respect beyond the wire format itself.
struct Limits {
  /// ScoreBatchRequest.transactions entries accepted.
  std::size_t max_transactions = 0;
  /// Entries per map per transaction, counted on the wire (duplicates and dropped
  /// entries included, across a merged ScoreRequest.transaction too).
  std::size_t max_map_entries = 4096;
};

/// Parses ScoreRequest and ScoreBatchRequest bytes; stateless apart from its limits, so
/// one Parser may serve any number of threads.
class Parser {
 public:
  explicit Parser(Limits limits) : limits_(limits) {}

  /// Parses a ScoreRequest into `out` (cleared first): exactly one transaction, all
  /// defaults when the request has none. Throws WireError.
  void parse_score_request(const std::uint8_t* data, std::size_t size, Batch& out) const;
  /// Parses a ScoreBatchRequest into `out` (cleared first). Throws WireError, also for
  /// more than max_transactions transactions.
  void parse_score_batch_request(const std::uint8_t* data, std::size_t size, Batch& out) const;

  const Limits& limits() const { return limits_; }

 private:
  Limits limits_;
};

/// True when [data, data + size) is valid UTF-8 as upb (utf8_range) judges it; when not,
/// *bad is the offset of the first byte of the first invalid sequence.
bool valid_utf8(const std::uint8_t* data, std::size_t size, std::size_t* bad);

/// Number of Unicode code points of valid UTF-8 bytes.
std::size_t code_points(std::string_view utf8);

}  // namespace riskwire::wire

#endif  // RISKWIRE_NATIVE_WIRE_HPP_
