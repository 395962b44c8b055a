"""Check protos/inference/grpc_service.proto against the descriptor tritonclient ships.

Run: ``python tests/integration/oip_wire_check.py`` (exit 0: compatible).

Both files declare package ``inference``, and the default protobuf descriptor pool
refuses a second definition of a symbol, so the two are never imported into one
pool: tritonclient's descriptor is read in a child process (``--triton-child``) and
handed back as serialized ``FileDescriptorProto`` bytes; ours is compiled by protoc
into a descriptor set. This process compares the two as plain messages, then builds
our classes in a private pool for a round trip through tritonclient's own helpers.

What must hold, for every message (nested ones and map entries included) that our
file defines: Triton defines it too, with exactly the same fields (name, number,
type, label, message type, oneof); and every RPC we declare has Triton's request and
response types and streaming flags.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_FILE = "inference/grpc_service.proto"
FDP = descriptor_pb2.FieldDescriptorProto

# Values the round trip sends each way; small, but every tensor path is used.
ROUNDTRIP_INPUT = [[0.5, -1.25, 3.0], [2.0, 0.0, 7.5]]
ROUNDTRIP_SCORES = [0.125, 0.875]
ROUNDTRIP_LABELS = [b"APPROVE", b"DECLINE"]


def _triton_child() -> None:
    """Child side: read a ModelInferResponse on stdin, answer with Triton's view.

    Imports tritonclient, so it must never run in the comparing process.
    """
    import numpy as np

    # tritonclient ships no type information.
    import tritonclient.grpc as grpcclient  # type: ignore[import-untyped]
    from tritonclient.grpc import _utils, service_pb2

    fdp = descriptor_pb2.FileDescriptorProto()
    service_pb2.DESCRIPTOR.CopyToProto(fdp)

    # Built by the same helper InferenceServerClient.infer() uses.
    features = grpcclient.InferInput("features", [2, 3], "FP32")
    features.set_data_from_numpy(np.array(ROUNDTRIP_INPUT, dtype=np.float32))
    account = grpcclient.InferInput("account_id", [2], "BYTES")
    account.set_data_from_numpy(np.array([b"acct-1", b"acct-2"], dtype=np.object_))
    request = _utils._get_inference_request(
        model_name="fraud-gbdt",
        inputs=[features, account],
        model_version="3",
        request_id="req-1",
        outputs=[grpcclient.InferRequestedOutput("score")],
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=7,
        timeout=8000,
        parameters={"route": "cards", "threshold": 0.5, "explain": True},
    )

    payload = json.loads(sys.stdin.read())
    decoded: dict[str, Any]
    try:
        response = service_pb2.ModelInferResponse.FromString(base64.b64decode(payload["response"]))
        result = grpcclient.InferResult(response)
        scores = result.as_numpy("score")
        labels = result.as_numpy("decision")
        decoded = {
            "id": response.id,
            "score": None if scores is None else scores.tolist(),
            "decision": None if labels is None else [bytes(x).decode() for x in labels],
        }
    except Exception as exc:  # a response Triton cannot read is a finding, not a crash
        decoded = {"error": repr(exc)}
    json.dump(
        {
            "descriptor": base64.b64encode(fdp.SerializeToString()).decode(),
            "request": base64.b64encode(request.SerializeToString(deterministic=True)).decode(),
            "decoded": decoded,
        },
        sys.stdout,
    )


def run_triton_child(response_bytes: bytes) -> dict[str, Any]:
    """Run this script as the Triton child and return its JSON answer."""
    proc = subprocess.run(
        [sys.executable, __file__, "--triton-child"],
        input=json.dumps({"response": base64.b64encode(response_bytes).decode()}),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"tritonclient child failed:\n{proc.stderr}")
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def compile_ours(proto_root: Path) -> descriptor_pb2.FileDescriptorProto:
    """Compile our .proto with grpc_tools' protoc into a descriptor (no pool involved)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "oip.binpb"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{proto_root}",
                f"--descriptor_set_out={out}",
                str(proto_root / PROTO_FILE),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"protoc failed on {PROTO_FILE}:\n{proc.stderr}")
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (fdp,) = (f for f in fds.file if f.name == PROTO_FILE)
    return fdp


def _messages(
    scope: str, types: Iterable[descriptor_pb2.DescriptorProto]
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    """Yield (full name, message) for every message, nested ones included."""
    for msg in types:
        full = f"{scope}.{msg.name}"
        yield full, msg
        yield from _messages(full, msg.nested_type)


def _field_signature(msg: descriptor_pb2.DescriptorProto, field: FDP) -> dict[str, Any]:
    """What decides a field's wire encoding and generated API, as comparable values."""
    return {
        "number": field.number,
        "type": FDP.Type.Name(field.type),
        "label": FDP.Label.Name(field.label),
        "type_name": field.type_name,
        "oneof": msg.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None,
        "proto3_optional": field.proto3_optional,
    }


def compare(
    ours: descriptor_pb2.FileDescriptorProto, theirs: descriptor_pb2.FileDescriptorProto
) -> tuple[list[str], int]:
    """Return (problems, number of fields checked) for `ours` against `theirs`."""
    problems: list[str] = []
    if ours.package != theirs.package:
        problems.append(f"package {ours.package!r} != Triton's {theirs.package!r}")
    if ours.enum_type:
        problems.append("enums at file level are not checked here; add them to the check")
    scope = f".{theirs.package}"
    their_msgs = dict(_messages(scope, theirs.message_type))
    checked = 0
    for name, msg in _messages(f".{ours.package}", ours.message_type):
        other = their_msgs.get(name)
        if other is None:
            problems.append(f"{name}: Triton has no such message")
            continue
        if msg.options.map_entry != other.options.map_entry:
            problems.append(
                f"{name}: map entry {msg.options.map_entry} != {other.options.map_entry}"
            )
        mine = {f.name: _field_signature(msg, f) for f in msg.field}
        their = {f.name: _field_signature(other, f) for f in other.field}
        for field_name, sig in mine.items():
            checked += 1
            if field_name not in their:
                problems.append(f"{name}.{field_name}: Triton has no such field")
            elif sig != their[field_name]:
                problems.append(f"{name}.{field_name}: ours {sig} != Triton's {their[field_name]}")
        # A field we left out would be parsed as unknown and silently ignored.
        for field_name in their.keys() - mine.keys():
            problems.append(f"{name}.{field_name}: Triton's field is missing from ours")
        for enum in msg.enum_type:
            problems.append(f"{name}.{enum.name}: nested enums are not checked; extend the check")

    their_services = {s.name: {m.name: m for m in s.method} for s in theirs.service}
    for service in ours.service:
        their_methods = their_services.get(service.name)
        if their_methods is None:
            problems.append(f"service {service.name}: Triton has no such service")
            continue
        for method in service.method:
            other_method = their_methods.get(method.name)
            if other_method is None:
                problems.append(f"{service.name}/{method.name}: Triton has no such RPC")
                continue
            for attr in ("input_type", "output_type", "client_streaming", "server_streaming"):
                if getattr(method, attr) != getattr(other_method, attr):
                    problems.append(
                        f"{service.name}/{method.name}.{attr}: {getattr(method, attr)!r} "
                        f"!= Triton's {getattr(other_method, attr)!r}"
                    )
    return problems, checked


def our_message_class(ours: descriptor_pb2.FileDescriptorProto, name: str) -> Any:
    """Build one of our message classes in a private pool, never the default one."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(ours)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{name}"))


def build_response(ours: descriptor_pb2.FileDescriptorProto) -> bytes:
    """Serialize a ModelInferResponse made with our classes: FP32 and BYTES outputs."""
    import numpy as np

    response = our_message_class(ours, "ModelInferResponse")(
        model_name="fraud-gbdt", model_version="3", id="req-1"
    )
    score = response.outputs.add(name="score", datatype="FP32", shape=[2])
    score.parameters["calibrated"].bool_param = True
    response.outputs.add(name="decision", datatype="BYTES", shape=[2])
    response.raw_output_contents.append(np.array(ROUNDTRIP_SCORES, dtype="<f4").tobytes())
    # BYTES tensors: each element prefixed with its 4-byte little-endian length.
    response.raw_output_contents.append(
        b"".join(len(s).to_bytes(4, "little") + s for s in ROUNDTRIP_LABELS)
    )
    data: bytes = response.SerializeToString()
    return data


def check_roundtrip(ours: descriptor_pb2.FileDescriptorProto, answer: dict[str, Any]) -> list[str]:
    """Check how tritonclient read our response and how we read its request."""
    import numpy as np

    problems: list[str] = []
    expected = {
        "id": "req-1",
        "score": ROUNDTRIP_SCORES,
        "decision": [s.decode() for s in ROUNDTRIP_LABELS],
    }
    if answer["decoded"] != expected:
        problems.append(f"tritonclient read our response as {answer['decoded']}, not {expected}")

    raw_request = base64.b64decode(answer["request"])
    request = our_message_class(ours, "ModelInferRequest").FromString(raw_request)
    if request.SerializeToString(deterministic=True) != raw_request:
        problems.append("tritonclient's request does not re-serialize byte for byte")
    want = {
        "model": ("fraud-gbdt", "3", "req-1"),
        "inputs": [("features", "FP32", [2, 3]), ("account_id", "BYTES", [2])],
        "outputs": ["score"],
        "features": [x for row in ROUNDTRIP_INPUT for x in row],
        "parameters": {
            "priority": ("uint64_param", 7),
            "timeout": ("int64_param", 8000),
            "route": ("string_param", "cards"),
            "threshold": ("double_param", 0.5),
            "explain": ("bool_param", True),
        },
    }
    raw = request.raw_input_contents
    got = {
        "model": (request.model_name, request.model_version, request.id),
        "inputs": [(t.name, t.datatype, list(t.shape)) for t in request.inputs],
        "outputs": [t.name for t in request.outputs],
        "features": np.frombuffer(raw[0], dtype="<f4").tolist() if raw else None,
        "parameters": {
            key: (p.WhichOneof("parameter_choice"), getattr(p, p.WhichOneof("parameter_choice")))
            for key, p in request.parameters.items()
            if p.WhichOneof("parameter_choice")
        },
    }
    for key, value in want.items():
        if got[key] != value:
            problems.append(f"tritonclient's request read as {key}={got[key]!r}, want {value!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Compare the descriptors and run the round trip; print a verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto-root", type=Path, default=REPO_ROOT / "protos")
    parser.add_argument("--triton-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.triton_child:
        _triton_child()
        return 0

    ours = compile_ours(args.proto_root)
    answer = run_triton_child(build_response(ours))
    theirs = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(answer["descriptor"]))
    problems, checked = compare(ours, theirs)
    try:
        rt_problems = check_roundtrip(ours, answer)
    except Exception as exc:  # a broken proto can fail anywhere in here: report, don't crash
        rt_problems = [f"round trip raised {exc!r}"]
    problems += rt_problems
    for problem in problems:
        print(f"MISMATCH {problem}")
    n_msgs = sum(1 for _ in _messages("", ours.message_type))
    n_rpcs = sum(len(s.method) for s in ours.service)
    print(
        f"{'FAIL' if problems else 'OK'}: {n_msgs} messages, {checked} fields, {n_rpcs} RPCs "
        f"of {PROTO_FILE} checked against tritonclient's {theirs.name}; round trip through "
        f"tritonclient {'failed' if rt_problems else 'passed'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
