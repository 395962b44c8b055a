// riskwire InputReader: parsed transactions (wire.hpp) -> the encoder's input matrices.
//
// The C++ twin of the Cython TransactionReader (native/cython/glue.pyx), which reads
// protobuf Transaction objects: same plan (gateway/features/transactions.py
// source_read), same values bit for bit, tested equal in tests/native/test_wire_parity.py.
// It touches no Python object, so the bindings run it with the GIL released.
#ifndef RISKWIRE_NATIVE_READER_HPP_
#define RISKWIRE_NATIVE_READER_HPP_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "wire.hpp"

namespace riskwire {

/// FNV-1a 64 offset basis: the state before any byte.
inline constexpr std::uint64_t kFnvOffset = 0xCBF29CE484222325ULL;
/// FNV-1a 64 prime.
inline constexpr std::uint64_t kFnvPrime = 0x100000001B3ULL;
/// Column hash of a present value whose stable_hash64 is 0 (0 means missing).
inline constexpr std::uint64_t kZeroHashStandin = 1;

/// Continues FNV-1a 64 from `state` over `size` bytes (start from kFnvOffset).
inline std::uint64_t fnv1a64_update(std::uint64_t state, const void* data, std::size_t size) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) state = (state ^ bytes[i]) * kFnvPrime;
  return state;
}

/// The splitmix64 finalizer; stable_hash64(data) = splitmix64_finalize(FNV-1a 64(data)).
inline std::uint64_t splitmix64_finalize(std::uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ULL;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z;
}

/// stable_hash64 (CONTRACT.md) of the bytes.
inline std::uint64_t stable_hash64(std::string_view data) {
  return splitmix64_finalize(fnv1a64_update(kFnvOffset, data.data(), data.size()));
}

/// Column hash of one UTF-8 value, FNV seeded with `prefix_state` (the FNV state after
/// the prefix bytes): "" -> 0 (kMissingHash), a present value hashing to 0 -> 1.
inline std::uint64_t column_hash(std::string_view value, std::uint64_t prefix_state) {
  if (value.empty()) return 0;
  const std::uint64_t h =
      splitmix64_finalize(fnv1a64_update(prefix_state, value.data(), value.size()));
  return h == 0 ? kZeroHashStandin : h;
}

/// How a numeric input reads one transaction (the numeric ReadOps of transactions.py).
enum class NumericRead : std::uint8_t {
  kInt,           ///< float(<int field>)
  kTenure,        ///< float(customer_tenure_days), NaN when unset
  kAmount,        ///< amount_minor / 10**exponent of the currency
  kAmountUsd,     ///< the same, times the currency's USD rate
  kNumericExtra,  ///< numeric_extras[key], NaN when absent
};

/// How a hash input reads one transaction (the categorical ReadOps of transactions.py).
enum class HashRead : std::uint8_t {
  kStr,               ///< column hash of a string field
  kChannel,           ///< column hash of the channel's name, "" for 0 and unknown numbers
  kCategoricalExtra,  ///< column hash of categorical_extras[key], "" when absent
};

/// The int fields a kInt read may name.
enum class IntField : std::uint8_t { kAmountMinor, kTimestampMs, kChannel, kCustomerTenureDays };

/// Parses a ReadOp name ("int", ...); false when it is not a numeric read.
bool numeric_read_named(std::string_view name, NumericRead* read);
/// Parses a ReadOp name ("str", ...); false when it is not a hash read.
bool hash_read_named(std::string_view name, HashRead* read);
/// Resolves a Transaction int field name; false for any other name.
bool int_field_named(std::string_view name, IntField* field);
/// Resolves a Transaction string field name; false for any other name.
bool string_field_named(std::string_view name, wire::StringField* field);

/// One numeric input (one row of the numeric matrix).
struct NumericInput {
  NumericRead read = NumericRead::kInt;
  /// kInt: the field read.
  IntField int_field = IntField::kAmountMinor;
  /// kNumericExtra: the map key, UTF-8.
  std::string key;
};

/// One hash input (one row of the hash matrix).
struct HashInput {
  HashRead read = HashRead::kStr;
  /// kStr: the field read.
  wire::StringField field = wire::StringField::kTransactionId;
  /// kCategoricalExtra: the map key, UTF-8.
  std::string key;
  /// FNV state after the input's hash prefix (kFnvOffset for none).
  std::uint64_t prefix_state = kFnvOffset;
  /// kChannel: (Channel number, column hash of its name), sorted by number; numbers
  /// not listed hash to 0.
  std::vector<std::pair<std::int32_t, std::uint64_t>> channel_hashes;
};

/// A currency's factors: amount = float(minor) / scale, amount_usd = amount * rate.
struct CurrencyScale {
  double scale = 1.0;
  double rate = 1.0;
};

/// Outcome of InputReader::read.
struct ReadResult {
  /// False when an amount read met a currency missing from the table.
  bool ok = true;
  /// When !ok: the position (in the selection) of the first such transaction...
  std::size_t position = 0;
  /// ...and its currency.
  wire::StrRef currency;
};

/// Reads parsed transactions into an encoder's input matrices, in one pass.
///
/// Immutable once built: read() may run on any number of threads at once.
class InputReader {
 public:
  InputReader(std::vector<NumericInput> numeric, std::vector<HashInput> hashed,
              std::vector<std::pair<std::string, CurrencyScale>> currencies);

  std::size_t numeric_inputs() const { return numeric_.size(); }
  std::size_t hash_inputs() const { return hashed_.size(); }

  /// Reads n transactions of `batch` (rows[i], or i when rows is null; the caller checks
  /// the indexes) into numeric (float64 [numeric_inputs, n], NaN = missing) and hashes
  /// (uint64 [hash_inputs, n], 0 = missing), one row per input. Stops at the first
  /// transaction, in selection order, whose amount read meets an unknown currency.
  ReadResult read(const wire::Batch& batch, const std::int64_t* rows, std::size_t n,
                  double* numeric, std::uint64_t* hashes) const;

 private:
  const CurrencyScale* find_currency(std::string_view code) const;

  std::vector<NumericInput> numeric_;
  std::vector<HashInput> hashed_;
  /// Sorted by code.
  std::vector<std::pair<std::string, CurrencyScale>> currencies_;
  bool reads_currency_ = false;
};

}  // namespace riskwire

#endif  // RISKWIRE_NATIVE_READER_HPP_
