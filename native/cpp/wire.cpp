// riskwire protobuf wire-format parser: see wire.hpp.
//
// One recursive-descent decoder over [data, data + size). Every read is bounded by the
// end of the innermost enclosing message (a sub-message's own length), so no input can
// make it read outside the buffer. The hot path builds no strings: the field path of an
// error is a chain of stack nodes rendered only when a WireError is thrown.
#include "wire.hpp"

#include <algorithm>
#include <cstring>
#include <string>

namespace riskwire::wire {
namespace {

// Wire types.
constexpr std::uint32_t kVarint = 0;
constexpr std::uint32_t kFixed64 = 1;
constexpr std::uint32_t kLen = 2;
constexpr std::uint32_t kStartGroup = 3;
constexpr std::uint32_t kEndGroup = 4;
constexpr std::uint32_t kFixed32 = 5;

// upb refuses lengths from INT32_MAX up.
constexpr std::uint64_t kMaxLength = 0x7FFFFFFF;

const char* const kStringFieldNames[kStringFieldCount] = {
    "transaction_id", "account_id", "card_id",    "merchant_id", "merchant_category_code",
    "currency",       "country",    "entry_mode", "device_id",   "ip_country",
};

// Transaction field number -> StringField index, -1 for the non-string fields.
constexpr int kStringFieldOf[18] = {-1, 0, 1, 2, 3, 4, -1, 5, 6, -1, 7, -1, 8, 9, -1, -1, -1, -1};

// One step of a field path, e.g. `transactions[3]`; rendered only for errors.
struct Path {
  enum Kind : std::uint8_t { kRoot, kField, kIndexed, kEntry, kUnknown };
  const Path* parent = nullptr;
  Kind kind = kRoot;
  const char* name = "";
  std::uint64_t index = 0;
};

void render(const Path& path, std::string& out) {
  if (path.parent != nullptr) render(*path.parent, out);
  switch (path.kind) {
    case Path::kRoot:
      out += path.name;
      break;
    case Path::kField:
      out += '.';
      out += path.name;
      break;
    case Path::kIndexed:
      out += '.';
      out += path.name;
      out += '[';
      out += std::to_string(path.index);
      out += ']';
      break;
    case Path::kEntry:
      out += '.';
      out += path.name;
      out += "[entry ";
      out += std::to_string(path.index);
      out += ']';
      break;
    case Path::kUnknown:
      out += ".<field ";
      out += std::to_string(path.index);
      out += '>';
      break;
  }
}

Path field_path(const Path& parent, const char* name) {
  Path path;
  path.parent = &parent;
  path.kind = Path::kField;
  path.name = name;
  return path;
}

Path unknown_path(const Path& parent, std::uint32_t field) {
  Path path;
  path.parent = &parent;
  path.kind = Path::kUnknown;
  path.index = field;
  return path;
}

// Per-transaction map entry counts, for Limits::max_map_entries.
struct MapCounts {
  std::size_t numeric = 0;
  std::size_t categorical = 0;
  std::size_t monitoring = 0;
};

// Ids, codes and map keys are short and nearly always ASCII: one OR over the bytes,
// which the compiler unrolls, settles them without valid_utf8's byte-by-byte cases
// (valid_utf8 was a fifth of the parse of a typical batch).
inline bool ascii(const std::uint8_t* p, std::size_t size) {
  std::uint8_t seen = 0;
  for (std::size_t i = 0; i < size; ++i) seen |= p[i];
  return seen < 0x80;
}

std::uint64_t load_le(const std::uint8_t* p, int bytes) {
  std::uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

class Decoder {
 public:
  Decoder(const std::uint8_t* data, std::size_t size, const Limits& limits, Batch& out)
      : base_(data), end_(data + size), limits_(limits), out_(out) {}

  void score_request();
  void score_batch_request();
  std::size_t count_transactions() const;

 private:
  [[noreturn]] void fail(const Path& path, const std::string& problem,
                         const std::uint8_t* at) const {
    std::string message;
    render(path, message);
    message += ": ";
    message += problem;
    message += " at byte ";
    message += std::to_string(static_cast<std::size_t>(at - base_));
    throw WireError(message);
  }

  // Diagnoses a varint that read_varint refused: truncated or too long.
  [[noreturn]] void fail_varint(const Path& path, const std::uint8_t* p,
                                const std::uint8_t* end, const char* what) const {
    // read_varint fails on fewer than 10 bytes only when they all continue.
    const bool truncated = end - p < 10;
    fail(path, std::string(truncated ? "truncated " : "") + what +
                   (truncated ? "" : " longer than 10 bytes"),
         p);
  }

  // Returns the end of the varint at p (at most 10 bytes, bits past 64 dropped), or
  // nullptr when it is truncated or longer.
  static const std::uint8_t* read_varint(const std::uint8_t* p, const std::uint8_t* end,
                                         std::uint64_t* value) {
    if (p < end && *p < 0x80) {
      *value = *p;
      return p + 1;
    }
    std::uint64_t result = 0;
    for (int i = 0; i < 10; ++i) {
      if (p + i >= end) return nullptr;
      const std::uint64_t byte = p[i];
      result |= (byte & 0x7F) << (7 * i);
      if ((byte & 0x80) == 0) {
        *value = result;
        return p + i + 1;
      }
    }
    return nullptr;
  }

  const std::uint8_t* varint(const std::uint8_t* p, const std::uint8_t* end,
                             std::uint64_t* value, const Path& where, const char* field) const {
    const std::uint8_t* next = read_varint(p, end, value);
    if (next == nullptr) fail_varint(field_path(where, field), p, end, "varint");
    return next;
  }

  // A tag: at most 5 bytes and below 2^32, as upb decodes it.
  const std::uint8_t* tag(const std::uint8_t* p, const std::uint8_t* end, std::uint32_t* value,
                          const Path& where) const {
    if (*p < 0x80) {  // callers check p < end
      *value = *p;
      return p + 1;
    }
    std::uint64_t result = 0;
    for (int i = 0; i < 5; ++i) {
      if (p + i >= end) fail(where, "truncated tag", p);
      const std::uint64_t byte = p[i];
      result |= (byte & 0x7F) << (7 * i);
      if ((byte & 0x80) == 0) {
        if (result > 0xFFFFFFFFu) fail(where, "tag above 2^32-1", p);
        *value = static_cast<std::uint32_t>(result);
        return p + i + 1;
      }
    }
    fail(where, "tag longer than 5 bytes", p);
  }

  // Reads a length prefix; returns the payload start, with *payload_end its end. The
  // error path names `where`, or its field `field` when not null.
  const std::uint8_t* length(const std::uint8_t* p, const std::uint8_t* end,
                             const std::uint8_t** payload_end, const Path& where,
                             const char* field = nullptr) const {
    // One-byte lengths (under 128) are the common case: keep them inline.
    if (p < end && *p < 0x80 && *p <= end - p - 1) {
      *payload_end = p + 1 + *p;
      return p + 1;
    }
    return long_length(p, end, payload_end, where, field);
  }

  const std::uint8_t* long_length(const std::uint8_t* p, const std::uint8_t* end,
                                  const std::uint8_t** payload_end, const Path& where,
                                  const char* field) const {
    const Path path = field != nullptr ? field_path(where, field) : where;
    std::uint64_t size = 0;
    const std::uint8_t* start = read_varint(p, end, &size);
    if (start == nullptr) fail_varint(path, p, end, "length");
    if (size >= kMaxLength) fail(path, "length " + std::to_string(size) + " too large", p);
    const auto left = static_cast<std::uint64_t>(end - start);
    if (size > left) {
      fail(path,
           "length " + std::to_string(size) + " exceeds the " + std::to_string(left) +
               " bytes left",
           p);
    }
    *payload_end = start + size;
    return start;
  }

  const std::uint8_t* string(const std::uint8_t* p, const std::uint8_t* end, StrRef* out,
                             const Path& where, const char* field) const {
    const std::uint8_t* stop = nullptr;
    const std::uint8_t* start = length(p, end, &stop, where, field);
    std::size_t bad = 0;
    const auto size = static_cast<std::size_t>(stop - start);
    if (!ascii(start, size) && !valid_utf8(start, size, &bad)) {
      fail(field_path(where, field), "invalid UTF-8", start + bad);
    }
    out->offset = static_cast<std::uint32_t>(start - base_);
    out->size = static_cast<std::uint32_t>(size);
    return stop;
  }

  const std::uint8_t* fixed(const std::uint8_t* p, const std::uint8_t* end, int bytes,
                            std::uint64_t* value, const Path& path) const {
    if (end - p < bytes) fail(path, bytes == 8 ? "truncated fixed64" : "truncated fixed32", p);
    *value = load_le(p, bytes);
    return p + bytes;
  }

  void enter(int depth, const Path& path, const std::uint8_t* at) const {
    if (depth > kMaxDepth) {
      fail(path, "nesting deeper than " + std::to_string(kMaxDepth), at);
    }
  }

  // Skips the value of an unknown field whose tag ended at p (tag_start: its tag), in a
  // message at `depth`. End-groups are the caller's business.
  const std::uint8_t* skip(const std::uint8_t* p, const std::uint8_t* end, std::uint32_t field,
                           std::uint32_t wire_type, int depth, const Path& where,
                           const std::uint8_t* tag_start) const {
    if (wire_type == kEndGroup) {
      fail(where,
           "end-group for field " + std::to_string(field) + " without a matching start-group",
           tag_start);
    }
    if (wire_type > kFixed32) {
      fail(where,
           "invalid wire type " + std::to_string(wire_type) + " (field " +
               std::to_string(field) + ")",
           tag_start);
    }
    if (field == 0) fail(where, "field number 0", tag_start);
    const Path path = unknown_path(where, field);
    std::uint64_t ignored = 0;
    switch (wire_type) {
      case kVarint: {
        const std::uint8_t* next = read_varint(p, end, &ignored);
        if (next == nullptr) fail_varint(path, p, end, "varint");
        return next;
      }
      case kFixed64:
        return fixed(p, end, 8, &ignored, path);
      case kFixed32:
        return fixed(p, end, 4, &ignored, path);
      case kLen: {
        const std::uint8_t* stop = nullptr;
        length(p, end, &stop, path);
        return stop;
      }
      case kStartGroup:
      default:  // the checks above leave kStartGroup only
        return skip_group(p, end, field, depth + 1, path, tag_start);
    }
  }

  // Skips an unknown group's contents up to and past its end-group.
  const std::uint8_t* skip_group(const std::uint8_t* p, const std::uint8_t* end,
                                 std::uint32_t field, int depth, const Path& path,
                                 const std::uint8_t* tag_start) const {
    enter(depth, path, tag_start);
    while (p < end) {
      const std::uint8_t* start = p;
      std::uint32_t inner = 0;
      p = tag(p, end, &inner, path);
      if ((inner & 7) == kEndGroup) {
        if ((inner >> 3) != field) {
          fail(path,
               "end-group for field " + std::to_string(inner >> 3) +
                   " inside the group of field " + std::to_string(field),
               start);
        }
        return p;
      }
      p = skip(p, end, inner >> 3, inner & 7, depth, path, start);
    }
    fail(path, "group without an end-group", tag_start);
  }

  // A map entry (key 1: string; value 2: double or string). Returns false when the entry
  // holds an unknown field: upb then keeps it out of the map.
  template <bool kNumeric>
  bool entry(const std::uint8_t* p, const std::uint8_t* end, int depth, const Path& where,
             StrRef* key, double* number, StrRef* text) const {
    bool clean = true;
    while (p < end) {
      const std::uint8_t* start = p;
      std::uint32_t t = 0;
      p = tag(p, end, &t, where);
      const std::uint32_t field = t >> 3;
      const std::uint32_t wire_type = t & 7;
      if (field == 1 && wire_type == kLen) {
        p = string(p, end, key, where, "key");
        continue;
      }
      if (field == 2) {
        if (kNumeric && wire_type == kFixed64) {
          std::uint64_t bits = 0;
          p = fixed(p, end, 8, &bits, field_path(where, "value"));
          std::memcpy(number, &bits, sizeof bits);
          continue;
        }
        if (!kNumeric && wire_type == kLen) {
          p = string(p, end, text, where, "value");
          continue;
        }
      }
      p = skip(p, end, field, wire_type, depth, where, start);
      clean = false;
    }
    return clean;
  }

  // Parses a map field's entry (the payload of a length-delimited field 15, 16 or 17).
  const std::uint8_t* map_entry(const std::uint8_t* p, const std::uint8_t* end,
                                std::uint32_t field, int depth, const Path& where,
                                MapCounts& counts, const std::uint8_t* tag_start) {
    static const char* const kNames[3] = {"numeric_extras", "categorical_extras",
                                          "monitoring_attributes"};
    const char* name = kNames[field - 15];
    std::size_t& count =
        field == 15 ? counts.numeric : (field == 16 ? counts.categorical : counts.monitoring);
    if (count >= limits_.max_map_entries) {
      fail(field_path(where, name),
           "more than " + std::to_string(limits_.max_map_entries) + " entries", tag_start);
    }
    Path path;
    path.parent = &where;
    path.kind = Path::kEntry;
    path.name = name;
    path.index = count;
    ++count;
    const std::uint8_t* stop = nullptr;
    p = length(p, end, &stop, path);
    enter(depth + 1, path, tag_start);
    StrRef key;
    if (field == 15) {
      double value = 0.0;
      if (entry<true>(p, stop, depth + 1, path, &key, &value, nullptr)) {
        out_.numeric_entries.push_back(NumericEntry{key, value});
      }
    } else {
      StrRef value;
      if (entry<false>(p, stop, depth + 1, path, &key, nullptr, &value)) {
        (field == 16 ? out_.categorical_entries : out_.monitoring_entries)
            .push_back(StringEntry{key, value});
      }
    }
    return stop;
  }

  // Parses Transaction fields from [p, end) into txn (merging into what it holds).
  void transaction(const std::uint8_t* p, const std::uint8_t* end, Transaction& txn, int depth,
                   const Path& where, MapCounts& counts) {
    while (p < end) {
      const std::uint8_t* start = p;
      std::uint32_t t = 0;
      p = tag(p, end, &t, where);
      const std::uint32_t field = t >> 3;
      const std::uint32_t wire_type = t & 7;
      if (field < 18) {
        const int string_index = kStringFieldOf[field];
        if (string_index >= 0) {
          if (wire_type == kLen) {
            p = string(p, end, &txn.strings[string_index], where, kStringFieldNames[string_index]);
            continue;
          }
        } else if (field >= 15) {
          if (wire_type == kLen) {
            p = map_entry(p, end, field, depth, where, counts, start);
            continue;
          }
        } else if (field != 0 && wire_type == kVarint) {
          std::uint64_t value = 0;
          switch (field) {
            case 6:
              p = varint(p, end, &value, where, "amount_minor");
              txn.amount_minor = static_cast<std::int64_t>(value);
              break;
            case 9:
              p = varint(p, end, &value, where, "channel");
              txn.channel = static_cast<std::int32_t>(static_cast<std::uint32_t>(value));
              break;
            case 11:
              p = varint(p, end, &value, where, "timestamp_ms");
              txn.timestamp_ms = static_cast<std::int64_t>(value);
              break;
            default:  // 14
              p = varint(p, end, &value, where, "customer_tenure_days");
              txn.customer_tenure_days =
                  static_cast<std::int32_t>(static_cast<std::uint32_t>(value));
              txn.has_customer_tenure_days = true;
              break;
          }
          continue;
        }
      }
      p = skip(p, end, field, wire_type, depth, where, start);
    }
  }

  // Starts a transaction: its map ranges begin at the entry vectors' current ends.
  void begin(Transaction& txn) const {
    txn.numeric_extras.begin = static_cast<std::uint32_t>(out_.numeric_entries.size());
    txn.categorical_extras.begin = static_cast<std::uint32_t>(out_.categorical_entries.size());
    txn.monitoring_attributes.begin = static_cast<std::uint32_t>(out_.monitoring_entries.size());
  }

  // Closes a transaction: every entry appended since begin() is its own.
  void finish(Transaction& txn) const {
    txn.numeric_extras.count =
        static_cast<std::uint32_t>(out_.numeric_entries.size()) - txn.numeric_extras.begin;
    txn.categorical_extras.count = static_cast<std::uint32_t>(out_.categorical_entries.size()) -
                                   txn.categorical_extras.begin;
    txn.monitoring_attributes.count = static_cast<std::uint32_t>(out_.monitoring_entries.size()) -
                                      txn.monitoring_attributes.begin;
  }

  // The fields ScoreRequest and ScoreBatchRequest share: explain (2), route (3).
  bool option(std::uint32_t field, std::uint32_t wire_type, const std::uint8_t** p,
              const Path& root) {
    if (field == 2 && wire_type == kVarint) {
      std::uint64_t value = 0;
      *p = varint(*p, end_, &value, root, "explain");
      out_.explain = value != 0;
      return true;
    }
    if (field == 3 && wire_type == kLen) {
      *p = string(*p, end_, &out_.route, root, "route");
      return true;
    }
    return false;
  }

  const std::uint8_t* base_;
  const std::uint8_t* end_;
  const Limits& limits_;
  Batch& out_;
};

void Decoder::score_request() {
  Path root;
  root.name = "ScoreRequest";
  Path where = field_path(root, "transaction");
  Transaction txn;
  MapCounts counts;
  begin(txn);
  const std::uint8_t* p = base_;
  while (p < end_) {
    const std::uint8_t* start = p;
    std::uint32_t t = 0;
    p = tag(p, end_, &t, root);
    const std::uint32_t field = t >> 3;
    const std::uint32_t wire_type = t & 7;
    if (field == 1 && wire_type == kLen) {
      // Seen twice, the sub-message is merged, as protobuf does.
      const std::uint8_t* stop = nullptr;
      p = length(p, end_, &stop, where);
      enter(1, where, start);
      transaction(p, stop, txn, 1, where, counts);
      p = stop;
      continue;
    }
    if (option(field, wire_type, &p, root)) continue;
    p = skip(p, end_, field, wire_type, 0, root, start);
  }
  finish(txn);
  out_.transactions.push_back(txn);
}

// Counts the top-level `transactions` entries, to size the vector once: a quick pass
// over tags and lengths that stops at anything unusual (the real pass reports errors).
std::size_t Decoder::count_transactions() const {
  std::size_t count = 0;
  const std::uint8_t* p = base_;
  while (p < end_) {
    std::uint64_t t = 0;
    p = read_varint(p, end_, &t);
    if (p == nullptr) break;
    std::uint64_t value = 0;
    switch (t & 7) {
      case kVarint:
        p = read_varint(p, end_, &value);
        break;
      case kFixed64:
        p = end_ - p >= 8 ? p + 8 : nullptr;
        break;
      case kFixed32:
        p = end_ - p >= 4 ? p + 4 : nullptr;
        break;
      case kLen:
        p = read_varint(p, end_, &value);
        if (p == nullptr || value > static_cast<std::uint64_t>(end_ - p)) return count;
        p += value;
        if (t == ((1u << 3) | kLen)) ++count;
        break;
      default:
        return count;
    }
    if (p == nullptr) break;
  }
  return count;
}

void Decoder::score_batch_request() {
  Path root;
  root.name = "ScoreBatchRequest";
  out_.transactions.reserve(std::min(count_transactions(), limits_.max_transactions));
  const std::uint8_t* p = base_;
  while (p < end_) {
    const std::uint8_t* start = p;
    std::uint32_t t = 0;
    p = tag(p, end_, &t, root);
    const std::uint32_t field = t >> 3;
    const std::uint32_t wire_type = t & 7;
    if (field == 1 && wire_type == kLen) {
      const std::size_t index = out_.transactions.size();
      if (index >= limits_.max_transactions) {
        fail(field_path(root, "transactions"),
             "more than " + std::to_string(limits_.max_transactions) + " entries", start);
      }
      Path where;
      where.parent = &root;
      where.kind = Path::kIndexed;
      where.name = "transactions";
      where.index = index;
      const std::uint8_t* stop = nullptr;
      p = length(p, end_, &stop, where);
      enter(1, where, start);
      out_.transactions.emplace_back();
      Transaction& txn = out_.transactions.back();
      MapCounts counts;
      begin(txn);
      transaction(p, stop, txn, 1, where, counts);
      finish(txn);
      p = stop;
      continue;
    }
    if (option(field, wire_type, &p, root)) continue;
    p = skip(p, end_, field, wire_type, 0, root, start);
  }
}

void check_size(std::size_t size, const char* message) {
  if (size > kMaxInputSize) {
    throw WireError(std::string(message) + ": " + std::to_string(size) +
                    " bytes is more than the 2147483646 accepted at byte 0");
  }
}

}  // namespace

const char* string_field_name(StringField field) {
  return kStringFieldNames[static_cast<std::size_t>(field)];
}

bool Batch::numeric_extra(const Transaction& txn, std::string_view key, double* value) const {
  const NumericEntry* first = numeric_entries.data() + txn.numeric_extras.begin;
  for (const NumericEntry* e = first + txn.numeric_extras.count; e != first;) {
    --e;
    if (view(e->key) == key) {
      *value = e->value;
      return true;
    }
  }
  return false;
}

bool Batch::categorical_extra(const Transaction& txn, std::string_view key, StrRef* value) const {
  const StringEntry* first = categorical_entries.data() + txn.categorical_extras.begin;
  for (const StringEntry* e = first + txn.categorical_extras.count; e != first;) {
    --e;
    if (view(e->key) == key) {
      *value = e->value;
      return true;
    }
  }
  return false;
}

void Batch::clear() {
  data = nullptr;
  size = 0;
  transactions.clear();
  numeric_entries.clear();
  categorical_entries.clear();
  monitoring_entries.clear();
  explain = false;
  route = StrRef{};
}

void Parser::parse_score_request(const std::uint8_t* data, std::size_t size, Batch& out) const {
  out.clear();
  check_size(size, "ScoreRequest");
  out.data = data;
  out.size = size;
  Decoder(data, size, limits_, out).score_request();
}

void Parser::parse_score_batch_request(const std::uint8_t* data, std::size_t size,
                                       Batch& out) const {
  out.clear();
  check_size(size, "ScoreBatchRequest");
  out.data = data;
  out.size = size;
  Decoder(data, size, limits_, out).score_batch_request();
}

bool valid_utf8(const std::uint8_t* data, std::size_t size, std::size_t* bad) {
  std::size_t i = 0;
  while (i < size) {
    // ASCII, eight bytes at a time: ids, codes and keys almost always are.
    while (i + 8 <= size) {
      std::uint64_t word = 0;
      std::memcpy(&word, data + i, sizeof word);
      if ((word & 0x8080808080808080ULL) != 0) break;
      i += 8;
    }
    if (i >= size) break;
    const std::uint8_t c = data[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    // The well-formed sequences of Unicode's table 3-7: the second byte's range depends
    // on the first (no overlong forms, no surrogates, nothing above U+10FFFF).
    std::size_t n = 0;
    std::uint8_t lo = 0x80;
    std::uint8_t hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
    } else if (c == 0xE0) {
      n = 3;
      lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      n = 3;
    } else if (c == 0xED) {
      n = 3;
      hi = 0x9F;
    } else if (c == 0xF0) {
      n = 4;
      lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3) {
      n = 4;
    } else if (c == 0xF4) {
      n = 4;
      hi = 0x8F;
    } else {
      *bad = i;
      return false;
    }
    if (size - i < n || data[i + 1] < lo || data[i + 1] > hi) {
      *bad = i;
      return false;
    }
    for (std::size_t k = 2; k < n; ++k) {
      if ((data[i + k] & 0xC0) != 0x80) {
        *bad = i;
        return false;
      }
    }
    i += n;
  }
  return true;
}

std::size_t code_points(std::string_view utf8) {
  std::size_t count = 0;
  for (const char ch : utf8) {
    // Every code point has exactly one byte that is not a continuation byte.
    if ((static_cast<unsigned char>(ch) & 0xC0) != 0x80) ++count;
  }
  return count;
}

}  // namespace riskwire::wire
