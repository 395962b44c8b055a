// Python bindings of the native encoder: module gateway._native._encoder.
//
// The only pybind11 file. encode() checks every buffer while it holds the GIL (dtype,
// shape, contiguity, writability), collects raw pointers, then runs the batch loop,
// releasing the GIL for large batches so other requests keep running meanwhile. The
// inputs come as two matrices, one row per input, so a call costs one argument check
// per kind however many sources a spec reads.
//
// The wire parser (wire.hpp) and the InputReader (reader.hpp) are bound here too:
// WireParser turns request bytes into a ParsedBatch, which keeps the bytes object alive
// (its transactions are views into it); Program.encode_parsed reads a ParsedBatch
// through an InputReader and encodes it without building any Python object per
// transaction.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "encoder.hpp"
#include "reader.hpp"
#include "wire.hpp"

namespace py = pybind11;

namespace {

std::string dtype_name(const py::array& array) {
  return py::str(array.dtype()).cast<std::string>();
}

// Returns the data pointer of a 2-D, C-contiguous [rows, n] array of T, or throws a
// ValueError / TypeError that names the offending argument.
template <typename T>
const T* input_pointer(const py::array& array, std::size_t rows, std::size_t n,
                       const char* what, const char* dtype) {
  if (!array.dtype().is(py::dtype::of<T>())) {
    throw py::type_error(std::string(what) + " must have dtype " + dtype + ", got " +
                         dtype_name(array));
  }
  if (array.ndim() != 2 || static_cast<std::size_t>(array.shape(0)) != rows ||
      static_cast<std::size_t>(array.shape(1)) != n) {
    throw py::value_error(std::string(what) + " must have shape (" + std::to_string(rows) +
                          ", " + std::to_string(n) + "), got " +
                          py::str(array.attr("shape")).cast<std::string>());
  }
  if (!(array.flags() & py::array::c_style)) {
    throw py::value_error(std::string(what) + " must be C-contiguous");
  }
  return static_cast<const T*>(array.data());
}

// Below this many output values the loop takes well under a microsecond: releasing the
// GIL would cost more than it saves, and reacquiring it can wait for another thread's
// switch interval (5 ms by default).
constexpr std::size_t kReleaseGilValues = 1 << 14;

void encode(const riskwire::Program& program, const py::array& numeric, const py::array& hashes,
            const py::array& out) {
  if (!out.dtype().is(py::dtype::of<float>())) {
    throw py::type_error("out must have dtype float32, got " + dtype_name(out));
  }
  if (out.ndim() != 2 || static_cast<std::size_t>(out.shape(1)) != program.width()) {
    throw py::value_error("out must have shape (n, " + std::to_string(program.width()) +
                          "), got " + py::str(out.attr("shape")).cast<std::string>());
  }
  if (!(out.flags() & py::array::c_style)) throw py::value_error("out must be C-contiguous");
  if (!out.writeable()) throw py::value_error("out must be writable");
  const auto n = static_cast<std::size_t>(out.shape(0));
  const double* numeric_base =
      input_pointer<double>(numeric, program.numeric_inputs(), n, "numeric", "float64");
  const std::uint64_t* hash_base =
      input_pointer<std::uint64_t>(hashes, program.hash_inputs(), n, "hashes", "uint64");
  // Input i is row i of its matrix: n contiguous values, as Program::encode reads them.
  std::vector<const double*> numeric_ptrs(program.numeric_inputs());
  std::vector<const std::uint64_t*> hash_ptrs(program.hash_inputs());
  for (std::size_t i = 0; i < numeric_ptrs.size(); ++i) numeric_ptrs[i] = numeric_base + i * n;
  for (std::size_t i = 0; i < hash_ptrs.size(); ++i) hash_ptrs[i] = hash_base + i * n;
  auto* out_ptr = static_cast<float*>(py::array(out).mutable_data());
  if (n * program.width() < kReleaseGilValues) {
    program.encode(n, numeric_ptrs.data(), hash_ptrs.data(), out_ptr);
    return;
  }
  // The caller's references keep numeric, hashes and out alive while the GIL is released.
  py::gil_scoped_release release;
  program.encode(n, numeric_ptrs.data(), hash_ptrs.data(), out_ptr);
}


namespace wire = riskwire::wire;

// --- wire parser ------------------------------------------------------------------------

// int(number) as a Channel number; false when outside int32, where no transaction's
// channel can be.
bool channel_number(const py::handle& number, std::int32_t* out) {
  const auto as_int = py::reinterpret_steal<py::object>(PyNumber_Long(number.ptr()));
  if (!as_int) throw py::error_already_set();
  int overflow = 0;
  const long long value = PyLong_AsLongLongAndOverflow(as_int.ptr(), &overflow);
  if (value == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow != 0 || value < INT32_MIN || value > INT32_MAX) return false;
  *out = static_cast<std::int32_t>(value);
  return true;
}

// The channel_names mapping (Channel number -> name) as WireParser received it.
struct ChannelNames {
  // Sorted by number; numbers outside int32 are left out (no transaction has them).
  std::vector<std::pair<std::int32_t, py::str>> names;
  py::str empty;

  explicit ChannelNames(const py::dict& channel_names) {
    for (const auto& [number, name] : channel_names) {
      if (!py::isinstance<py::str>(name)) {
        throw py::type_error("channel_names values must be str, got " +
                             py::str(py::type::of(name).attr("__name__")).cast<std::string>());
      }
      std::int32_t value = 0;
      if (!channel_number(number, &value)) continue;
      names.emplace_back(value, py::reinterpret_borrow<py::str>(name));
    }
    std::sort(names.begin(), names.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
  }

  // The name of `number`, "" when unknown.
  py::handle lookup(std::int32_t number) const {
    const auto it = std::lower_bound(
        names.begin(), names.end(), number,
        [](const std::pair<std::int32_t, py::str>& entry, std::int32_t key) {
          return entry.first < key;
        });
    return it != names.end() && it->first == number ? py::handle(it->second) : py::handle(empty);
  }
};

struct WireParser {
  wire::Parser parser;
  std::shared_ptr<const ChannelNames> channels;
};

// A parsed request; owner keeps the bytes that batch's string views point into.
struct ParsedBatch {
  py::object owner;
  wire::Batch batch;
  std::shared_ptr<const ChannelNames> channels;
};

// Dict keys, interned once (never freed: they must outlive every module object).
struct Keys {
  py::object strings[wire::kStringFieldCount];
  py::object amount_minor, timestamp_ms, channel, customer_tenure_days;
  py::object numeric_extras, categorical_extras, monitoring_attributes;
};

py::object intern(const char* text) {
  return py::reinterpret_steal<py::object>(PyUnicode_InternFromString(text));
}

const Keys& keys() {
  static const Keys* keys = [] {
    auto* made = new Keys;
    for (std::size_t i = 0; i < wire::kStringFieldCount; ++i) {
      made->strings[i] = intern(wire::string_field_name(static_cast<wire::StringField>(i)));
    }
    made->amount_minor = intern("amount_minor");
    made->timestamp_ms = intern("timestamp_ms");
    made->channel = intern("channel");
    made->customer_tenure_days = intern("customer_tenure_days");
    made->numeric_extras = intern("numeric_extras");
    made->categorical_extras = intern("categorical_extras");
    made->monitoring_attributes = intern("monitoring_attributes");
    return made;
  }();
  return *keys;
}

// A str from bytes the parser checked to be UTF-8.
py::str decode(std::string_view utf8) {
  PyObject* text =
      PyUnicode_DecodeUTF8(utf8.data(), static_cast<Py_ssize_t>(utf8.size()), "strict");
  if (text == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(text);
}

std::unique_ptr<ParsedBatch> parse(const WireParser& self, const py::object& data,
                                   bool batch_request) {
  auto parsed = std::make_unique<ParsedBatch>();
  if (PyBytes_Check(data.ptr())) {
    parsed->owner = data;
  } else if (PyObject_CheckBuffer(data.ptr())) {
    // Any other buffer is copied: the views must not see it change.
    PyObject* copy = PyBytes_FromObject(data.ptr());
    if (copy == nullptr) throw py::error_already_set();
    parsed->owner = py::reinterpret_steal<py::object>(copy);
  } else {
    throw py::type_error("data must be bytes or a bytes-like object, got " +
                         py::str(py::type::of(data).attr("__name__")).cast<std::string>());
  }
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(PyBytes_AS_STRING(parsed->owner.ptr()));
  const auto size = static_cast<std::size_t>(PyBytes_GET_SIZE(parsed->owner.ptr()));
  if (batch_request) {
    self.parser.parse_score_batch_request(bytes, size, parsed->batch);
  } else {
    self.parser.parse_score_request(bytes, size, parsed->batch);
  }
  parsed->channels = self.channels;
  return parsed;
}

const wire::Transaction& transaction_at(const ParsedBatch& parsed, py::ssize_t index) {
  const auto size = static_cast<py::ssize_t>(parsed.batch.transactions.size());
  if (index < 0 || index >= size) {
    throw py::index_error("transaction index " + std::to_string(index) +
                          " out of range for a batch of " + std::to_string(size));
  }
  return parsed.batch.transactions[static_cast<std::size_t>(index)];
}

py::dict transaction_dict(const ParsedBatch& parsed, py::ssize_t index) {
  const wire::Batch& batch = parsed.batch;
  const wire::Transaction& txn = transaction_at(parsed, index);
  const Keys& k = keys();
  py::dict fields;
  for (std::size_t i = 0; i < wire::kStringFieldCount; ++i) {
    fields[k.strings[i]] = decode(batch.view(txn.strings[i]));
  }
  fields[k.amount_minor] = py::int_(txn.amount_minor);
  fields[k.timestamp_ms] = py::int_(txn.timestamp_ms);
  fields[k.channel] = py::int_(txn.channel);
  fields[k.customer_tenure_days] =
      txn.has_customer_tenure_days ? py::object(py::int_(txn.customer_tenure_days)) : py::none();
  // Entries in wire order: a later duplicate key overwrites, as protobuf's map does.
  py::dict numeric;
  for (std::uint32_t i = 0; i < txn.numeric_extras.count; ++i) {
    const wire::NumericEntry& e = batch.numeric_entries[txn.numeric_extras.begin + i];
    numeric[decode(batch.view(e.key))] = py::float_(e.value);
  }
  fields[k.numeric_extras] = numeric;
  const std::pair<const py::object*, std::pair<const std::vector<wire::StringEntry>*,
                                               wire::Range>>
      string_maps[2] = {
          {&k.categorical_extras, {&batch.categorical_entries, txn.categorical_extras}},
          {&k.monitoring_attributes, {&batch.monitoring_entries, txn.monitoring_attributes}},
      };
  for (const auto& [key, map] : string_maps) {
    py::dict values;
    for (std::uint32_t i = 0; i < map.second.count; ++i) {
      const wire::StringEntry& e = (*map.first)[map.second.begin + i];
      values[decode(batch.view(e.key))] = decode(batch.view(e.value));
    }
    fields[*key] = values;
  }
  return fields;
}

// amount_minor and currency of one transaction: what its audit decision record reads,
// without transaction()'s dict of every field.
py::tuple amount_and_currency(const ParsedBatch& parsed, py::ssize_t index) {
  const wire::Transaction& txn = transaction_at(parsed, index);
  return py::make_tuple(py::int_(txn.amount_minor),
                        decode(parsed.batch.string(txn, wire::StringField::kCurrency)));
}

// Each transaction's monitoring_attributes, for the outcome store (never a model's
// input): the one map the data plane reads on every call, without the whole dict.
py::list monitoring_attributes(const ParsedBatch& parsed) {
  const wire::Batch& batch = parsed.batch;
  py::list out(batch.transactions.size());
  for (std::size_t i = 0; i < batch.transactions.size(); ++i) {
    const wire::Range range = batch.transactions[i].monitoring_attributes;
    py::dict values;
    for (std::uint32_t j = 0; j < range.count; ++j) {
      const wire::StringEntry& e = batch.monitoring_entries[range.begin + j];
      values[decode(batch.view(e.key))] = decode(batch.view(e.value));
    }
    out[i] = values;
  }
  return out;
}

py::list transaction_ids(const ParsedBatch& parsed) {
  const wire::Batch& batch = parsed.batch;
  py::list ids(batch.transactions.size());
  for (std::size_t i = 0; i < batch.transactions.size(); ++i) {
    ids[i] = decode(batch.string(batch.transactions[i], wire::StringField::kTransactionId));
  }
  return ids;
}

py::list routing_keys(const ParsedBatch& parsed) {
  static constexpr wire::StringField kFields[] = {
      wire::StringField::kAccountId,  wire::StringField::kCardId,
      wire::StringField::kMerchantId, wire::StringField::kDeviceId,
      wire::StringField::kTransactionId, wire::StringField::kCountry,
      wire::StringField::kMerchantCategoryCode,
  };
  const wire::Batch& batch = parsed.batch;
  const Keys& k = keys();
  py::list out(batch.transactions.size());
  for (std::size_t i = 0; i < batch.transactions.size(); ++i) {
    const wire::Transaction& txn = batch.transactions[i];
    py::dict routing;
    routing[k.channel] = parsed.channels->lookup(txn.channel);
    for (const wire::StringField field : kFields) {
      routing[k.strings[static_cast<std::size_t>(field)]] = decode(batch.string(txn, field));
    }
    out[i] = routing;
  }
  return out;
}

// True when every numeric_extras value that counts (the last one of its key) is finite.
bool extras_finite(const wire::Batch& batch, const wire::Transaction& txn) {
  const wire::NumericEntry* entries = batch.numeric_entries.data() + txn.numeric_extras.begin;
  const std::size_t count = txn.numeric_extras.count;
  std::size_t first_bad = 0;
  while (first_bad < count && std::isfinite(entries[first_bad].value)) ++first_bad;
  if (first_bad == count) return true;  // the common case: no key to compare
  // Walk back: the first time a key shows up is its last entry, the one that counts.
  std::unordered_set<std::string_view> seen;
  for (std::size_t i = count; i-- > first_bad;) {
    const std::string_view key = batch.view(entries[i].key);
    if (seen.insert(key).second && !std::isfinite(entries[i].value)) return false;
  }
  return true;
}

bool contains(const py::object& container, const py::handle& item) {
  const int found = PySequence_Contains(container.ptr(), item.ptr());
  if (found < 0) throw py::error_already_set();
  return found == 1;
}

// The checks of gateway/grpc/converters.py check_fields, in its order; the index of the
// first transaction failing one, or -1.
py::ssize_t first_invalid(const ParsedBatch& parsed, const py::object& currencies,
                          const py::object& channels, std::int64_t max_id_chars) {
  const wire::Batch& batch = parsed.batch;
  // Batches repeat a few currencies and channels: ask Python once for each (up to a
  // handful remembered).
  constexpr std::size_t kRemembered = 16;
  std::pair<std::string_view, bool> currency_seen[kRemembered];
  std::size_t currency_count = 0;
  std::pair<std::int32_t, bool> channel_seen[kRemembered];
  std::size_t channel_count = 0;
  for (std::size_t i = 0; i < batch.transactions.size(); ++i) {
    const wire::Transaction& txn = batch.transactions[i];
    const auto bad = static_cast<py::ssize_t>(i);
    const std::string_view id = batch.string(txn, wire::StringField::kTransactionId);
    if (id.empty()) return bad;
    // Code points never outnumber bytes: count them only for a long id.
    if (static_cast<std::int64_t>(id.size()) > max_id_chars &&
        static_cast<std::int64_t>(wire::code_points(id)) > max_id_chars) {
      return bad;
    }
    if (txn.amount_minor < 0) return bad;
    const std::string_view currency = batch.string(txn, wire::StringField::kCurrency);
    const auto* known_currency =
        std::find_if(currency_seen, currency_seen + currency_count,
                     [&](const auto& seen) { return seen.first == currency; });
    bool currency_ok = false;
    if (known_currency != currency_seen + currency_count) {
      currency_ok = known_currency->second;
    } else {
      currency_ok = contains(currencies, decode(currency));
      if (currency_count < kRemembered) currency_seen[currency_count++] = {currency, currency_ok};
    }
    if (!currency_ok) return bad;
    if (txn.timestamp_ms <= 0) return bad;
    const auto* known_channel =
        std::find_if(channel_seen, channel_seen + channel_count,
                     [&](const auto& seen) { return seen.first == txn.channel; });
    bool channel_ok = false;
    if (known_channel != channel_seen + channel_count) {
      channel_ok = known_channel->second;
    } else {
      channel_ok = contains(channels, py::int_(txn.channel));
      if (channel_count < kRemembered) channel_seen[channel_count++] = {txn.channel, channel_ok};
    }
    if (!channel_ok) return bad;
    if (txn.has_customer_tenure_days && txn.customer_tenure_days < 0) return bad;
    if (!extras_finite(batch, txn)) return bad;
  }
  return -1;
}

// --- InputReader -------------------------------------------------------------------------

struct InputReader {
  riskwire::InputReader reader;
  py::object unknown_currency;
};

std::string type_name(const py::handle& value) {
  return py::str(py::type::of(value).attr("__name__")).cast<std::string>();
}

[[noreturn]] void unknown_read(const char* what, std::size_t i, const py::handle& op,
                               const char* const* known, std::size_t count) {
  py::list names;
  for (std::size_t k = 0; k < count; ++k) names.append(py::str(known[k]));
  names.attr("sort")();
  throw py::value_error(py::str("{}[{}]: unknown read {!r}; expected one of {}")
                            .format(what, i, op, names)
                            .cast<std::string>());
}

[[noreturn]] void unknown_field(const char* what, std::size_t i, const char* op,
                                const py::handle& name, py::list fields) {
  throw py::value_error(py::str("{}[{}]: {} reads no Transaction field {!r}; expected one of {}")
                            .format(what, i, op, name, fields)
                            .cast<std::string>());
}

// What the Cython reader does with `str(read[1])`.
std::string utf8_of(const py::handle& value) { return py::str(value).cast<std::string>(); }

InputReader make_input_reader(const py::iterable& numeric, const py::iterable& hashed,
                              const py::dict& currencies, const py::dict& channel_names,
                              py::object unknown_currency) {
  static const char* const kNumericReads[] = {"int", "tenure", "amount", "amount_usd",
                                              "numeric_extra"};
  static const char* const kHashReads[] = {"str", "channel", "categorical_extra"};
  std::vector<riskwire::NumericInput> numeric_inputs;
  std::size_t i = 0;
  for (const py::handle item : numeric) {
    const py::object op = item[py::int_(0)];
    riskwire::NumericInput input;
    if (!py::isinstance<py::str>(op) || !riskwire::numeric_read_named(op.cast<std::string>(),
                                                                      &input.read)) {
      unknown_read("numeric", i, op, kNumericReads, 5);
    }
    const py::object name = item[py::int_(1)];
    if (input.read == riskwire::NumericRead::kInt &&
        !riskwire::int_field_named(utf8_of(name), &input.int_field)) {
      py::list fields;
      for (const char* field :
           {"amount_minor", "timestamp_ms", "channel", "customer_tenure_days"}) {
        fields.append(py::str(field));
      }
      unknown_field("numeric", i, "int", py::str(name), fields);
    }
    if (input.read == riskwire::NumericRead::kNumericExtra) input.key = utf8_of(name);
    numeric_inputs.push_back(std::move(input));
    ++i;
  }
  std::vector<riskwire::HashInput> hash_inputs;
  i = 0;
  for (const py::handle item : hashed) {
    const py::object op = item[py::int_(0)];
    riskwire::HashInput input;
    if (!py::isinstance<py::str>(op) ||
        !riskwire::hash_read_named(op.cast<std::string>(), &input.read)) {
      unknown_read("hashed", i, op, kHashReads, 3);
    }
    const py::object name = item[py::int_(1)];
    const py::object prefix = item[py::int_(2)];
    if (!PyBytes_Check(prefix.ptr())) {
      throw py::type_error("hashed[" + std::to_string(i) +
                           "]: the hash prefix must be bytes, got " +
                           type_name(prefix));
    }
    const std::string_view prefix_bytes(PyBytes_AS_STRING(prefix.ptr()),
                                        static_cast<std::size_t>(PyBytes_GET_SIZE(prefix.ptr())));
    input.prefix_state =
        riskwire::fnv1a64_update(riskwire::kFnvOffset, prefix_bytes.data(), prefix_bytes.size());
    if (input.read == riskwire::HashRead::kStr &&
        !riskwire::string_field_named(utf8_of(name), &input.field)) {
      py::list fields;
      for (std::size_t f = 0; f < wire::kStringFieldCount; ++f) {
        fields.append(py::str(wire::string_field_name(static_cast<wire::StringField>(f))));
      }
      unknown_field("hashed", i, "str", py::str(name), fields);
    }
    if (input.read == riskwire::HashRead::kCategoricalExtra) input.key = utf8_of(name);
    if (input.read == riskwire::HashRead::kChannel) {
      for (const auto& [number, channel_name] : channel_names) {
        if (!py::isinstance<py::str>(channel_name)) {
          throw py::type_error("categorical values must be str, got " + type_name(channel_name));
        }
        std::int32_t value = 0;
        if (!channel_number(number, &value)) continue;
        input.channel_hashes.emplace_back(
            value,
            riskwire::column_hash(channel_name.cast<std::string>(), input.prefix_state));
      }
    }
    hash_inputs.push_back(std::move(input));
    ++i;
  }
  std::vector<std::pair<std::string, riskwire::CurrencyScale>> table;
  for (const auto& [code, entry] : currencies) {
    riskwire::CurrencyScale scale;
    scale.scale = py::float_(py::reinterpret_borrow<py::object>(entry)[py::int_(0)]).cast<double>();
    scale.rate = py::float_(py::reinterpret_borrow<py::object>(entry)[py::int_(1)]).cast<double>();
    table.emplace_back(utf8_of(code), scale);
  }
  return InputReader{riskwire::InputReader(std::move(numeric_inputs), std::move(hash_inputs),
                                           std::move(table)),
                     std::move(unknown_currency)};
}

// Raises reader.unknown_currency(code) when a read failed.
void check_read(const InputReader& reader, const ParsedBatch& parsed,
                const riskwire::ReadResult& result) {
  if (result.ok) return;
  const py::object error = reader.unknown_currency(decode(parsed.batch.view(result.currency)));
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())), error.ptr());
  throw py::error_already_set();
}

// The transactions `rows` selects (null = all, *n = len(parsed)), each checked in range;
// `holder` keeps a contiguous copy alive where rows was not contiguous.
const std::int64_t* selected_rows(const py::object& rows, const ParsedBatch& parsed,
                                  py::object& holder, std::size_t* n) {
  const std::size_t size = parsed.batch.transactions.size();
  if (rows.is_none()) {
    *n = size;
    return nullptr;
  }
  if (!py::isinstance<py::array>(rows)) {
    throw py::type_error("rows must be a numpy int64 array or None, got " + type_name(rows));
  }
  py::array array = py::reinterpret_borrow<py::array>(rows);
  if (!array.dtype().is(py::dtype::of<std::int64_t>())) {
    throw py::type_error("rows must have dtype int64, got " + dtype_name(array));
  }
  if (array.ndim() != 1) throw py::value_error("rows must be 1-D");
  if (!(array.flags() & py::array::c_style)) {
    array = py::module_::import("numpy").attr("ascontiguousarray")(array);
  }
  holder = array;
  const auto* indexes = static_cast<const std::int64_t*>(array.data());
  *n = static_cast<std::size_t>(array.shape(0));
  for (std::size_t i = 0; i < *n; ++i) {
    if (indexes[i] < 0 || static_cast<std::uint64_t>(indexes[i]) >= size) {
      throw py::index_error("rows[" + std::to_string(i) + "] = " + std::to_string(indexes[i]) +
                            " is out of range for a batch of " + std::to_string(size) +
                            " transactions");
    }
  }
  return indexes;
}

py::tuple read_inputs(const InputReader& self, const ParsedBatch& parsed, const py::object& rows) {
  py::object holder;
  std::size_t n = 0;
  const std::int64_t* indexes = selected_rows(rows, parsed, holder, &n);
  const auto k = static_cast<py::ssize_t>(self.reader.numeric_inputs());
  const auto m = static_cast<py::ssize_t>(self.reader.hash_inputs());
  const auto columns = static_cast<py::ssize_t>(n);
  py::array_t<double> numeric({k, columns});
  py::array_t<std::uint64_t> hashes({m, columns});
  const riskwire::ReadResult result = self.reader.read(
      parsed.batch, indexes, n, numeric.mutable_data(), hashes.mutable_data());
  check_read(self, parsed, result);
  return py::make_tuple(numeric, hashes);
}

void encode_parsed(const riskwire::Program& program, const InputReader& reader,
                   const ParsedBatch& parsed, const py::object& rows, const py::array& out) {
  if (!out.dtype().is(py::dtype::of<float>())) {
    throw py::type_error("out must have dtype float32, got " + dtype_name(out));
  }
  py::object holder;
  std::size_t n = 0;
  const std::int64_t* indexes = selected_rows(rows, parsed, holder, &n);
  if (out.ndim() != 2 || static_cast<std::size_t>(out.shape(0)) != n ||
      static_cast<std::size_t>(out.shape(1)) != program.width()) {
    throw py::value_error("out must have shape (" + std::to_string(n) + ", " +
                          std::to_string(program.width()) + "), got " +
                          py::str(out.attr("shape")).cast<std::string>());
  }
  if (!(out.flags() & py::array::c_style)) throw py::value_error("out must be C-contiguous");
  if (!out.writeable()) throw py::value_error("out must be writable");
  if (reader.reader.numeric_inputs() != program.numeric_inputs() ||
      reader.reader.hash_inputs() != program.hash_inputs()) {
    throw py::value_error(
        "reader has " + std::to_string(reader.reader.numeric_inputs()) + " numeric and " +
        std::to_string(reader.reader.hash_inputs()) + " hash inputs, the program reads " +
        std::to_string(program.numeric_inputs()) + " and " +
        std::to_string(program.hash_inputs()));
  }
  auto* out_ptr = static_cast<float*>(py::array(out).mutable_data());
  // Per-thread scratch, grown to the largest batch seen: no allocation per call.
  thread_local std::vector<double> numeric;
  thread_local std::vector<std::uint64_t> hashes;
  thread_local std::vector<const double*> numeric_ptrs;
  thread_local std::vector<const std::uint64_t*> hash_ptrs;
  numeric.resize(program.numeric_inputs() * n);
  hashes.resize(program.hash_inputs() * n);
  numeric_ptrs.resize(program.numeric_inputs());
  hash_ptrs.resize(program.hash_inputs());
  for (std::size_t i = 0; i < numeric_ptrs.size(); ++i) numeric_ptrs[i] = numeric.data() + i * n;
  for (std::size_t i = 0; i < hash_ptrs.size(); ++i) hash_ptrs[i] = hashes.data() + i * n;
  const auto run = [&]() {
    const riskwire::ReadResult result =
        reader.reader.read(parsed.batch, indexes, n, numeric.data(), hashes.data());
    if (result.ok) program.encode(n, numeric_ptrs.data(), hash_ptrs.data(), out_ptr);
    return result;
  };
  riskwire::ReadResult result;
  if (n * program.width() < kReleaseGilValues) {
    result = run();
  } else {
    // The caller's references keep parsed (and its bytes), rows and out alive.
    py::gil_scoped_release release;
    result = run();
  }
  check_read(reader, parsed, result);
}

}  // namespace

PYBIND11_MODULE(_encoder, m) {
  m.doc() = "riskwire's native feature encoder (build via setup.py; use gateway.features).";

  py::register_exception<wire::WireError>(m, "WireError", PyExc_ValueError);

  py::class_<WireParser>(m, "WireParser",
                         "Parses ScoreRequest / ScoreBatchRequest bytes; see wire.hpp.")
      .def(py::init([](const py::dict& channel_names, std::size_t max_transactions,
                       std::size_t max_map_entries) {
             wire::Limits limits;
             limits.max_transactions = max_transactions;
             limits.max_map_entries = max_map_entries;
             return WireParser{wire::Parser(limits),
                               std::make_shared<const ChannelNames>(channel_names)};
           }),
           py::arg("channel_names"), py::arg("max_transactions"),
           py::arg("max_map_entries") = 4096)
      .def(
          "parse_score_request",
          [](const WireParser& self, const py::object& data) { return parse(self, data, false); },
          py::arg("data"),
          "A ScoreRequest: a batch of exactly one transaction. Raises WireError.")
      .def(
          "parse_score_batch_request",
          [](const WireParser& self, const py::object& data) { return parse(self, data, true); },
          py::arg("data"), "A ScoreBatchRequest. Raises WireError.");

  py::class_<ParsedBatch>(m, "ParsedBatch",
                          "A parsed request; its transactions are views into the bytes.")
      .def("__len__", [](const ParsedBatch& self) { return self.batch.transactions.size(); })
      .def_property_readonly("explain", [](const ParsedBatch& self) { return self.batch.explain; })
      .def_property_readonly(
          "route",
          [](const ParsedBatch& self) { return decode(self.batch.view(self.batch.route)); })
      .def("transaction_ids", &transaction_ids)
      .def("routing_keys", &routing_keys)
      .def("monitoring_attributes", &monitoring_attributes,
           "Each transaction's monitoring_attributes map, in order.")
      .def("transaction", &transaction_dict, py::arg("index"),
           "Every Transaction field by its proto name; IndexError out of range.")
      .def("amount_and_currency", &amount_and_currency, py::arg("index"),
           "(amount_minor, currency) of one transaction; IndexError out of range.")
      .def("first_invalid", &first_invalid, py::arg("currencies"), py::arg("channels"),
           py::arg("max_id_chars"),
           "Index of the first transaction converters.check_fields refuses, -1 when none.");

  py::class_<InputReader>(m, "InputReader",
                          "Reads ParsedBatch transactions into encoder inputs; see reader.hpp.")
      .def(py::init(&make_input_reader), py::arg("numeric"), py::arg("hashed"),
           py::arg("currencies"), py::arg("channel_names"), py::arg("unknown_currency"))
      .def_property_readonly("numeric_inputs",
                             [](const InputReader& self) { return self.reader.numeric_inputs(); })
      .def_property_readonly("hash_inputs",
                             [](const InputReader& self) { return self.reader.hash_inputs(); })
      .def("read", &read_inputs, py::arg("parsed"), py::arg("rows") = py::none(),
           "Returns (numeric float64 [numeric_inputs, n], hashes uint64 [hash_inputs, n]).");

  py::class_<riskwire::Program>(m, "Program",
                                "A feature spec compiled into operations; see encoder.hpp.")
      .def(py::init<>())
      .def("add_identity", &riskwire::Program::add_identity, py::arg("input_index"),
           py::arg("default"))
      .def("add_log1p", &riskwire::Program::add_log1p, py::arg("input_index"),
           py::arg("default"))
      .def("add_standardize", &riskwire::Program::add_standardize, py::arg("input_index"),
           py::arg("mean"), py::arg("std"), py::arg("default"))
      .def("add_bucketize", &riskwire::Program::add_bucketize, py::arg("input_index"),
           py::arg("edges"), py::arg("default"))
      .def("add_one_hot", &riskwire::Program::add_one_hot, py::arg("input_index"),
           py::arg("vocabulary_hashes"))
      .def("add_hash_bucket", &riskwire::Program::add_hash_bucket, py::arg("input_index"),
           py::arg("buckets"), py::arg("default"))
      .def("add_cyclical", &riskwire::Program::add_cyclical, py::arg("input_index"),
           py::arg("unit_ms"), py::arg("offset"), py::arg("sin_table"), py::arg("cos_table"),
           py::arg("default"))
      .def("add_differs", &riskwire::Program::add_differs, py::arg("input_a"),
           py::arg("input_b"))
      .def_property_readonly("width", &riskwire::Program::width)
      .def_property_readonly("numeric_inputs", &riskwire::Program::numeric_inputs)
      .def_property_readonly("hash_inputs", &riskwire::Program::hash_inputs)
      .def("encode", &encode, py::arg("numeric"), py::arg("hashes"), py::arg("out"),
           "Encodes len(out) rows into out (float32, C-contiguous, [n, width]) from numeric "
           "(float64 [numeric_inputs, n]) and hashes (uint64 [hash_inputs, n]), both "
           "C-contiguous, one row per input; releases the GIL for large batches.")
      .def("encode_parsed", &encode_parsed, py::arg("reader"), py::arg("parsed"), py::arg("rows"),
           py::arg("out"),
           "Encodes the transactions rows selects (None: all) of parsed into out (float32, "
           "C-contiguous, [n, width]) through reader; releases the GIL for large batches.");
}
