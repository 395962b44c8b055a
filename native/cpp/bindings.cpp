// Python bindings of the native encoder: module gateway._native._encoder.
//
// The only pybind11 file. encode() checks every buffer while it holds the GIL (dtype,
// shape, contiguity, writability), collects raw pointers, then releases the GIL for
// the batch loop, so other requests keep running while a batch encodes.
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

// Returns the data pointer of a 1-D, C-contiguous array of T with n elements, or throws
// a ValueError / TypeError that names the offending argument.
template <typename T>
const T* input_pointer(const py::handle& item, std::size_t n, const std::string& what,
                       const char* dtype, std::vector<py::array>& keep) {
  if (!py::isinstance<py::array>(item)) {
    throw py::type_error(what + " must be a numpy array, got " +
                         py::str(py::type::of(item)).cast<std::string>());
  }
  auto array = py::reinterpret_borrow<py::array>(item);
  if (!array.dtype().is(py::dtype::of<T>())) {
    throw py::type_error(what + " must have dtype " + dtype + ", got " + dtype_name(array));
  }
  if (array.ndim() != 1) {
    throw py::value_error(what + " must be 1-D, got " + std::to_string(array.ndim()) + "-D");
  }
  if (static_cast<std::size_t>(array.shape(0)) != n) {
    throw py::value_error(what + " has " + std::to_string(array.shape(0)) +
                          " rows, out has " + std::to_string(n));
  }
  if (!(array.flags() & py::array::c_style)) {
    throw py::value_error(what + " must be C-contiguous");
  }
  keep.push_back(array);
  return static_cast<const T*>(array.data());
}

void encode(const riskwire::Program& program, const py::sequence& numeric,
            const py::sequence& hashes, const py::array& out) {
  if (!out.dtype().is(py::dtype::of<float>())) {
    throw py::type_error("out must have dtype float32, got " + dtype_name(out));
  }
  if (out.ndim() != 2 || static_cast<std::size_t>(out.shape(1)) != program.width()) {
    throw py::value_error("out must have shape (n, " + std::to_string(program.width()) +
                          "), got " + py::str(out.attr("shape")).cast<std::string>());
  }
  if (!(out.flags() & py::array::c_style)) throw py::value_error("out must be C-contiguous");
  if (!out.writeable()) throw py::value_error("out must be writable");
  if (static_cast<std::size_t>(py::len(numeric)) != program.numeric_inputs()) {
    throw py::value_error("expected " + std::to_string(program.numeric_inputs()) +
                          " numeric inputs, got " + std::to_string(py::len(numeric)));
  }
  if (static_cast<std::size_t>(py::len(hashes)) != program.hash_inputs()) {
    throw py::value_error("expected " + std::to_string(program.hash_inputs()) +
                          " hash inputs, got " + std::to_string(py::len(hashes)));
  }
  const auto n = static_cast<std::size_t>(out.shape(0));
  // Holding references keeps every buffer alive while the GIL is released.
  std::vector<py::array> keep;
  std::vector<const double*> numeric_ptrs;
  std::vector<const std::uint64_t*> hash_ptrs;
  for (std::size_t i = 0; i < program.numeric_inputs(); ++i) {
    numeric_ptrs.push_back(input_pointer<double>(numeric[i], n,
                                                 "numeric[" + std::to_string(i) + "]",
                                                 "float64", keep));
  }
  for (std::size_t i = 0; i < program.hash_inputs(); ++i) {
    hash_ptrs.push_back(input_pointer<std::uint64_t>(hashes[i], n,
                                                     "hashes[" + std::to_string(i) + "]",
                                                     "uint64", keep));
  }
  auto* out_ptr = static_cast<float*>(py::array(out).mutable_data());
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
           "Encodes len(out) rows into out (float32, C-contiguous, [n, width]); "
           "releases the GIL.");
}
