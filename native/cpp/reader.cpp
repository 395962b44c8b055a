// riskwire InputReader: see reader.hpp.
#include "reader.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace riskwire {

bool numeric_read_named(std::string_view name, NumericRead* read) {
  static const std::pair<std::string_view, NumericRead> kReads[] = {
      {"int", NumericRead::kInt},
      {"tenure", NumericRead::kTenure},
      {"amount", NumericRead::kAmount},
      {"amount_usd", NumericRead::kAmountUsd},
      {"numeric_extra", NumericRead::kNumericExtra},
  };
  for (const auto& [known, value] : kReads) {
    if (known == name) {
      *read = value;
      return true;
    }
  }
  return false;
}

bool hash_read_named(std::string_view name, HashRead* read) {
  static const std::pair<std::string_view, HashRead> kReads[] = {
      {"str", HashRead::kStr},
      {"channel", HashRead::kChannel},
      {"categorical_extra", HashRead::kCategoricalExtra},
  };
  for (const auto& [known, value] : kReads) {
    if (known == name) {
      *read = value;
      return true;
    }
  }
  return false;
}

bool int_field_named(std::string_view name, IntField* field) {
  static const std::pair<std::string_view, IntField> kFields[] = {
      {"amount_minor", IntField::kAmountMinor},
      {"timestamp_ms", IntField::kTimestampMs},
      {"channel", IntField::kChannel},
      {"customer_tenure_days", IntField::kCustomerTenureDays},
  };
  for (const auto& [known, value] : kFields) {
    if (known == name) {
      *field = value;
      return true;
    }
  }
  return false;
}

bool string_field_named(std::string_view name, wire::StringField* field) {
  for (std::size_t i = 0; i < wire::kStringFieldCount; ++i) {
    const auto candidate = static_cast<wire::StringField>(i);
    if (name == wire::string_field_name(candidate)) {
      *field = candidate;
      return true;
    }
  }
  return false;
}

InputReader::InputReader(std::vector<NumericInput> numeric, std::vector<HashInput> hashed,
                         std::vector<std::pair<std::string, CurrencyScale>> currencies)
    : numeric_(std::move(numeric)), hashed_(std::move(hashed)) {
  // A dict gives each code once; should a list repeat one, the last entry wins.
  std::stable_sort(currencies.begin(), currencies.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& entry : currencies) {
    if (!currencies_.empty() && currencies_.back().first == entry.first) {
      currencies_.back().second = entry.second;
    } else {
      currencies_.push_back(std::move(entry));
    }
  }
  for (HashInput& input : hashed_) {
    std::sort(input.channel_hashes.begin(), input.channel_hashes.end());
  }
  for (const NumericInput& input : numeric_) {
    if (input.read == NumericRead::kAmount || input.read == NumericRead::kAmountUsd) {
      reads_currency_ = true;
    }
  }
}

const CurrencyScale* InputReader::find_currency(std::string_view code) const {
  const auto it = std::lower_bound(
      currencies_.begin(), currencies_.end(), code,
      [](const std::pair<std::string, CurrencyScale>& entry, std::string_view key) {
        return std::string_view(entry.first) < key;
      });
  if (it == currencies_.end() || it->first != code) return nullptr;
  return &it->second;
}

namespace {

double int_value(const wire::Transaction& txn, IntField field) {
  switch (field) {
    case IntField::kAmountMinor:
      return static_cast<double>(txn.amount_minor);
    case IntField::kTimestampMs:
      return static_cast<double>(txn.timestamp_ms);
    case IntField::kChannel:
      return static_cast<double>(txn.channel);
    case IntField::kCustomerTenureDays:
      break;
  }
  return static_cast<double>(txn.customer_tenure_days);
}

std::uint64_t channel_hash(const HashInput& input, std::int32_t channel) {
  const auto& table = input.channel_hashes;
  const auto it = std::lower_bound(
      table.begin(), table.end(), channel,
      [](const std::pair<std::int32_t, std::uint64_t>& entry, std::int32_t key) {
        return entry.first < key;
      });
  // Unknown numbers (proto3 enums are open) are "no channel", like 0.
  return it != table.end() && it->first == channel ? it->second : 0;
}

}  // namespace

ReadResult InputReader::read(const wire::Batch& batch, const std::int64_t* rows, std::size_t n,
                             double* numeric, std::uint64_t* hashes) const {
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  const std::size_t numeric_count = numeric_.size();
  const std::size_t hash_count = hashed_.size();
  // Batches mostly repeat one currency: remember the last one looked up.
  std::string_view last_code;
  const CurrencyScale* last_scale = nullptr;
  for (std::size_t r = 0; r < n; ++r) {
    const std::size_t index = rows == nullptr ? r : static_cast<std::size_t>(rows[r]);
    const wire::Transaction& txn = batch.transactions[index];
    const CurrencyScale* scale = nullptr;
    if (reads_currency_) {
      const std::string_view code = batch.string(txn, wire::StringField::kCurrency);
      if (last_scale != nullptr && code == last_code) {
        scale = last_scale;
      } else {
        scale = find_currency(code);
        if (scale != nullptr) {
          last_code = code;
          last_scale = scale;
        }
      }
    }
    for (std::size_t j = 0; j < numeric_count; ++j) {
      const NumericInput& input = numeric_[j];
      double value = kNaN;
      switch (input.read) {
        case NumericRead::kInt:
          value = int_value(txn, input.int_field);
          break;
        case NumericRead::kTenure:
          if (txn.has_customer_tenure_days) value = static_cast<double>(txn.customer_tenure_days);
          break;
        case NumericRead::kAmount:
        case NumericRead::kAmountUsd:
          if (scale == nullptr) {
            ReadResult failed;
            failed.ok = false;
            failed.position = r;
            failed.currency = txn.string(wire::StringField::kCurrency);
            return failed;
          }
          // currency.amount_major / to_usd: float(minor) / float(10**e) [* rate], each
          // step one IEEE 754 operation (built with -ffp-contract=off): bit-identical.
          value = static_cast<double>(txn.amount_minor) / scale->scale;
          if (input.read == NumericRead::kAmountUsd) value = value * scale->rate;
          break;
        case NumericRead::kNumericExtra:
          if (!batch.numeric_extra(txn, input.key, &value)) value = kNaN;
          break;
      }
      numeric[j * n + r] = value;
    }
    for (std::size_t j = 0; j < hash_count; ++j) {
      const HashInput& input = hashed_[j];
      std::uint64_t hashed = 0;
      switch (input.read) {
        case HashRead::kStr:
          hashed = column_hash(batch.string(txn, input.field), input.prefix_state);
          break;
        case HashRead::kChannel:
          hashed = channel_hash(input, txn.channel);
          break;
        case HashRead::kCategoricalExtra: {
          wire::StrRef value;
          if (batch.categorical_extra(txn, input.key, &value)) {
            hashed = column_hash(batch.view(value), input.prefix_state);
          }
          break;
        }
      }
      hashes[j * n + r] = hashed;
    }
  }
  return ReadResult{};
}

}  // namespace riskwire
