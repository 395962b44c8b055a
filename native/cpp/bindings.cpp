// Python bindings of the native encoder: module gateway._native._encoder.
//
// The only pybind11 file. encode() checks every buffer while it holds the GIL (dtype,
// shape, contiguity, writability), collects raw pointers, then runs the batch loop,
// releasing the GIL for large batches so other requests keep running meanwhile. The
// inputs come as two matrices, one row per input, so a call costs one argument check
// per kind however many sources a spec reads.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "encoder.hpp"

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

}  // namespace

PYBIND11_MODULE(_encoder, m) {
  m.doc() = "riskwire's native feature encoder (build via setup.py; use gateway.features).";

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
           "C-contiguous, one row per input; releases the GIL for large batches.");
}
