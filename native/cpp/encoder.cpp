// riskwire native feature encoder: see encoder.hpp.
#include "encoder.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace riskwire {
namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

void require_finite(double value, const char* what) {
  require(std::isfinite(value), std::string(what) + " must be finite");
}

}  // namespace

Operation& Program::append(OpKind kind, std::size_t width, bool hashed, std::size_t input) {
  Operation op;
  op.kind = kind;
  op.input = input;
  op.column = width_;
  ops_.push_back(std::move(op));
  width_ += width;
  std::size_t& inputs = hashed ? hash_inputs_ : numeric_inputs_;
  inputs = std::max(inputs, input + 1);
  return ops_.back();
}

void Program::add_identity(std::size_t input, double default_value) {
  require_finite(default_value, "default");
  append(OpKind::kIdentity, 1, false, input).default_value = static_cast<float>(default_value);
}

void Program::add_log1p(std::size_t input, double default_value) {
  require_finite(default_value, "default");
  append(OpKind::kLog1p, 1, false, input).default_value = static_cast<float>(default_value);
}

void Program::add_standardize(std::size_t input, double mean, double std_dev,
                              double default_value) {
  require_finite(default_value, "default");
  require_finite(mean, "mean");
  require_finite(std_dev, "std");
  require(std_dev > 0.0, "std must be > 0");
  Operation& op = append(OpKind::kStandardize, 1, false, input);
  op.default_value = static_cast<float>(default_value);
  op.a = mean;
  op.b = std_dev;
}

void Program::add_bucketize(std::size_t input, std::vector<double> edges, double default_value) {
  require_finite(default_value, "default");
  require(!edges.empty(), "edges must not be empty");
  for (std::size_t i = 0; i < edges.size(); ++i) {
    require_finite(edges[i], "edges");
    require(i == 0 || edges[i - 1] < edges[i], "edges must be strictly increasing");
  }
  Operation& op = append(OpKind::kBucketize, 1, false, input);
  op.default_value = static_cast<float>(default_value);
  op.edges = std::move(edges);
}

void Program::add_one_hot(std::size_t input, const std::vector<std::uint64_t>& vocabulary_hashes) {
  require(!vocabulary_hashes.empty(), "vocabulary must not be empty");
  std::vector<std::pair<std::uint64_t, std::size_t>> sorted;
  sorted.reserve(vocabulary_hashes.size());
  for (std::size_t slot = 0; slot < vocabulary_hashes.size(); ++slot) {
    require(vocabulary_hashes[slot] != kMissingHash, "vocabulary hashes must be non-zero");
    sorted.emplace_back(vocabulary_hashes[slot], slot);
  }
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 1; i < sorted.size(); ++i) {
    // Two vocabulary entries with one hash could never be told apart.
    require(sorted[i - 1].first != sorted[i].first, "vocabulary hashes must be distinct");
  }
  const std::size_t slots = vocabulary_hashes.size() + 1;
  Operation& op = append(OpKind::kOneHot, slots, true, input);
  op.vocabulary = std::move(sorted);
  op.slots = slots;
}

void Program::add_hash_bucket(std::size_t input, std::uint64_t buckets, double default_value) {
  require_finite(default_value, "default");
  require(buckets >= 1, "buckets must be >= 1");
  Operation& op = append(OpKind::kHashBucket, 1, true, input);
  op.default_value = static_cast<float>(default_value);
  op.buckets = buckets;
}

void Program::add_cyclical(std::size_t input, double unit_ms, double offset,
                           std::vector<double> sin_table, std::vector<double> cos_table,
                           double default_value) {
  require_finite(default_value, "default");
  require_finite(offset, "offset");
  require(std::isfinite(unit_ms) && unit_ms > 0.0, "unit_ms must be finite and > 0");
  require(!sin_table.empty(), "the sin table must not be empty");
  require(sin_table.size() == cos_table.size(), "the sin and cos tables must match in length");
  Operation& op = append(OpKind::kCyclical, 2, false, input);
  op.default_value = static_cast<float>(default_value);
  op.a = unit_ms;
  op.b = offset;
  op.sin_table = std::move(sin_table);
  op.cos_table = std::move(cos_table);
}

void Program::add_differs(std::size_t input_a, std::size_t input_b) {
  Operation& op = append(OpKind::kDiffers, 1, true, input_a);
  op.input_b = input_b;
  hash_inputs_ = std::max(hash_inputs_, input_b + 1);
}

void Program::encode(std::size_t n, const double* const* numeric,
                     const std::uint64_t* const* hashes, float* out) const {
  const std::size_t stride = width_;
  // One operation at a time over the whole batch: each loop reads one contiguous input
  // and has no per-row dispatch on the operation kind.
  for (const Operation& op : ops_) {
    float* col = out + op.column;
    switch (op.kind) {
      case OpKind::kIdentity: {
        const double* x = numeric[op.input];
        for (std::size_t i = 0; i < n; ++i) {
          col[i * stride] = std::isnan(x[i]) ? op.default_value : static_cast<float>(x[i]);
        }
        break;
      }
      case OpKind::kLog1p: {
        const double* x = numeric[op.input];
        for (std::size_t i = 0; i < n; ++i) {
          // `x > 0` maps NaN, negatives and -0.0 to +0.0, as the reference does.
          const double clipped = x[i] > 0.0 ? x[i] : 0.0;
          col[i * stride] =
              std::isnan(x[i]) ? op.default_value : static_cast<float>(std::log1p(clipped));
        }
        break;
      }
      case OpKind::kStandardize: {
        const double* x = numeric[op.input];
        for (std::size_t i = 0; i < n; ++i) {
          col[i * stride] =
              std::isnan(x[i]) ? op.default_value : static_cast<float>((x[i] - op.a) / op.b);
        }
        break;
      }
      case OpKind::kBucketize: {
        const double* x = numeric[op.input];
        for (std::size_t i = 0; i < n; ++i) {
          if (std::isnan(x[i])) {
            col[i * stride] = op.default_value;
            continue;
          }
          const auto index =
              std::upper_bound(op.edges.begin(), op.edges.end(), x[i]) - op.edges.begin();
          col[i * stride] = static_cast<float>(static_cast<double>(index));
        }
        break;
      }
      case OpKind::kOneHot: {
        const std::uint64_t* h = hashes[op.input];
        const std::size_t oov = op.slots - 1;
        for (std::size_t i = 0; i < n; ++i) {
          float* row = col + i * stride;
          std::fill(row, row + op.slots, 0.0f);
          std::size_t slot = oov;
          if (h[i] != kMissingHash) {
            const auto it = std::lower_bound(
                op.vocabulary.begin(), op.vocabulary.end(), h[i],
                [](const std::pair<std::uint64_t, std::size_t>& entry, std::uint64_t key) {
                  return entry.first < key;
                });
            if (it != op.vocabulary.end() && it->first == h[i]) slot = it->second;
          }
          row[slot] = 1.0f;
        }
        break;
      }
      case OpKind::kHashBucket: {
        const std::uint64_t* h = hashes[op.input];
        for (std::size_t i = 0; i < n; ++i) {
          col[i * stride] = h[i] == kMissingHash
                                ? op.default_value
                                : static_cast<float>(static_cast<double>(h[i] % op.buckets));
        }
        break;
      }
      case OpKind::kCyclical: {
        const double* x = numeric[op.input];
        const double period = static_cast<double>(op.sin_table.size());
        for (std::size_t i = 0; i < n; ++i) {
          float* row = col + i * stride;
          if (!std::isfinite(x[i])) {
            row[0] = op.default_value;
            row[1] = op.default_value;
            continue;
          }
          // floor and fmod are exact, so k is the same integer the reference computes.
          const double step = std::floor(x[i] / op.a) + op.b;
          double rem = std::fmod(step, period);
          if (rem < 0.0) rem += period;
          const auto k = static_cast<std::size_t>(rem);
          row[0] = static_cast<float>(op.sin_table[k]);
          row[1] = static_cast<float>(op.cos_table[k]);
        }
        break;
      }
      case OpKind::kDiffers: {
        const std::uint64_t* a = hashes[op.input];
        const std::uint64_t* b = hashes[op.input_b];
        for (std::size_t i = 0; i < n; ++i) {
          const bool differs = a[i] != kMissingHash && b[i] != kMissingHash && a[i] != b[i];
          col[i * stride] = differs ? 1.0f : 0.0f;
        }
        break;
      }
    }
  }
}

}  // namespace riskwire
