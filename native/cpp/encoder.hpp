// riskwire native feature encoder.
//
// A feature spec is compiled once (by gateway/features/dispatch.py) into a Program: a
// list of Operations, one per feature. encode() then fills a whole batch of rows into a
// caller-provided row-major float32 buffer, touching no Python object, so the bindings
// can run it with the GIL released.
//
// The output must equal the numpy reference (gateway/features/reference.py) bit for bit:
// - all arithmetic is float64 and cast to float32 once, using only operations IEEE 754
//   rounds exactly (+ - * /, floor, fmod, comparisons); build with -ffp-contract=off so
//   the compiler never fuses a multiply and an add;
// - log1p is the C library's, which is also what the reference calls (math.log1p);
// - cyclical sin/cos are tables computed in Python and passed in.
#ifndef RISKWIRE_NATIVE_ENCODER_HPP_
#define RISKWIRE_NATIVE_ENCODER_HPP_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace riskwire {

/// Column hash value meaning "missing" (the categorical value was "").
///
/// The Cython glue hashes every categorical value to stable_hash64(prefix + utf8(value)),
/// except "" which becomes 0 and a present value whose hash is 0 which becomes 1, so 0
/// can mark missing without a second array.
inline constexpr std::uint64_t kMissingHash = 0;

/// What an Operation computes; see gateway/features/CONTRACT.md for the semantics.
enum class OpKind : std::uint8_t {
  kIdentity,
  kLog1p,
  kStandardize,
  kBucketize,
  kOneHot,
  kHashBucket,
  kCyclical,
  kDiffers,
};

/// One compiled feature: which inputs it reads, where it writes, its parameters.
struct Operation {
  OpKind kind = OpKind::kIdentity;
  /// Index into the numeric or the hash inputs, by kind.
  std::size_t input = 0;
  /// Second hash input (kDiffers only).
  std::size_t input_b = 0;
  /// First output column.
  std::size_t column = 0;
  /// Output when the input is missing, already cast to float32.
  float default_value = 0.0f;
  /// kStandardize: mean, std. kCyclical: unit (ms per step), offset (steps added).
  double a = 0.0;
  double b = 0.0;
  /// kHashBucket: number of buckets.
  std::uint64_t buckets = 1;
  /// kBucketize: strictly increasing edges.
  std::vector<double> edges;
  /// kOneHot: (column hash, slot) sorted by hash, for binary search.
  std::vector<std::pair<std::uint64_t, std::size_t>> vocabulary;
  /// kOneHot: number of slots including the trailing out-of-vocabulary slot.
  std::size_t slots = 0;
  /// kCyclical: sin and cos tables, one entry per step of the period.
  std::vector<double> sin_table;
  std::vector<double> cos_table;
};

/// A feature spec compiled into operations; immutable once built.
///
/// Build it with the add_* methods, in spec order (each appends its output columns),
/// then call encode() from any number of threads. Inputs are referenced by index: the
/// numeric inputs are float64 arrays (NaN = missing), the hash inputs uint64 arrays of
/// column hashes (kMissingHash = missing). The add_* methods throw
/// std::invalid_argument on parameters that the Python spec parser would reject.
class Program {
 public:
  /// x as is.
  void add_identity(std::size_t input, double default_value);
  /// log1p(max(x, 0)).
  void add_log1p(std::size_t input, double default_value);
  /// (x - mean) / std; std > 0.
  void add_standardize(std::size_t input, double mean, double std_dev, double default_value);
  /// Number of edges <= x (numpy searchsorted side="right"); edges strictly increasing.
  void add_bucketize(std::size_t input, std::vector<double> edges, double default_value);
  /// One slot per vocabulary column hash, then one for out-of-vocabulary and missing.
  /// The hashes must be distinct and non-zero.
  void add_one_hot(std::size_t input, const std::vector<std::uint64_t>& vocabulary_hashes);
  /// hash % buckets, where the hash input was computed over name + "\0" + value (the
  /// glue seeds FNV with the name prefix once per column and continues over each value).
  void add_hash_bucket(std::size_t input, std::uint64_t buckets, double default_value);
  /// (sin[k], cos[k]) with k = fmod(floor(x / unit_ms) + offset, P) made non-negative,
  /// P the table length; infinite x counts as missing (no hour or day).
  void add_cyclical(std::size_t input, double unit_ms, double offset,
                    std::vector<double> sin_table, std::vector<double> cos_table,
                    double default_value);
  /// 1.0 when both hash inputs are present and unequal, else 0.0.
  void add_differs(std::size_t input_a, std::size_t input_b);

  /// Output columns per row.
  std::size_t width() const { return width_; }
  /// How many numeric (float64) inputs encode() reads: highest index used + 1.
  std::size_t numeric_inputs() const { return numeric_inputs_; }
  /// How many hash (uint64) inputs encode() reads: highest index used + 1.
  std::size_t hash_inputs() const { return hash_inputs_; }

  /// Encodes rows [0, n) into out, row-major with width() floats per row.
  ///
  /// numeric[i] and hashes[i] each point at n values. The caller checks sizes; this
  /// loop trusts them.
  void encode(std::size_t n, const double* const* numeric, const std::uint64_t* const* hashes,
              float* out) const;

 private:
  Operation& append(OpKind kind, std::size_t width, bool hashed, std::size_t input);

  std::vector<Operation> ops_;
  std::size_t width_ = 0;
  std::size_t numeric_inputs_ = 0;
  std::size_t hash_inputs_ = 0;
};

}  // namespace riskwire

#endif  // RISKWIRE_NATIVE_ENCODER_HPP_
