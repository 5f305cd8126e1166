#!/usr/bin/python3
# SPDX-License-Identifier: MIT OR Apache-2.0
# reflection_client.py: python grpcio as an independent client of the server
# reflection of amaters-netd (grpc.reflection.v1 or v1alpha). The reflection
# messages are built here with python3-protobuf's descriptor_pb2 (not from our
# generated code), the answers parsed by protobuf's own parser, FileDescriptorProto
# included. One line per check ("ok: ..." / "FAIL: ..."); exit 1 if any failed.
# Usage: reflection_client.py PORT PKI_DIR v1|v1alpha
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

port, pki, version = sys.argv[1], sys.argv[2], sys.argv[3]
PKG = "grpc.reflection." + version
F = descriptor_pb2.FieldDescriptorProto


def reflection_messages():
    """The reflection messages of PKG, declared field by field as grpc's reflection.proto does."""
    fd = descriptor_pb2.FileDescriptorProto(name="pytest/%s/reflection.proto" % version, package=PKG, syntax="proto3")

    def msg(name, *fields):
        m = fd.message_type.add(name=name)
        for fname, num, ftype, label, tname, oneof in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                f.type_name = "." + PKG + "." + tname
            if oneof is not None:
                if not m.oneof_decl:
                    m.oneof_decl.add(name="message_request" if name.endswith("Request") else "message_response")
                f.oneof_index = 0
        return m

    O, R = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    S, B, I, M = F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_INT32, F.TYPE_MESSAGE
    msg("ServerReflectionRequest", ("host", 1, S, O, None, None), ("file_by_filename", 3, S, O, None, 0),
        ("file_containing_symbol", 4, S, O, None, 0), ("file_containing_extension", 5, M, O, "ExtensionRequest", 0),
        ("all_extension_numbers_of_type", 6, S, O, None, 0), ("list_services", 7, S, O, None, 0))
    msg("ExtensionRequest", ("containing_type", 1, S, O, None, None), ("extension_number", 2, I, O, None, None))
    msg("ServerReflectionResponse", ("valid_host", 1, S, O, None, None),
        ("original_request", 2, M, O, "ServerReflectionRequest", None),
        ("file_descriptor_response", 4, M, O, "FileDescriptorResponse", 0),
        ("all_extension_numbers_response", 5, M, O, "ExtensionNumberResponse", 0),
        ("list_services_response", 6, M, O, "ListServiceResponse", 0), ("error_response", 7, M, O, "ErrorResponse", 0))
    msg("FileDescriptorResponse", ("file_descriptor_proto", 1, B, R, None, None))
    msg("ExtensionNumberResponse", ("base_type_name", 1, S, O, None, None), ("extension_number", 2, I, R, None, None))
    msg("ListServiceResponse", ("service", 1, M, R, "ServiceResponse", None))
    msg("ServiceResponse", ("name", 1, S, O, None, None))
    msg("ErrorResponse", ("error_code", 1, I, O, None, None), ("error_message", 2, S, O, None, None))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    factory = message_factory.MessageFactory(pool)
    get = lambda n: factory.GetPrototype(pool.FindMessageTypeByName(PKG + "." + n))
    return get("ServerReflectionRequest"), get("ServerReflectionResponse")


Req, Resp = reflection_messages()
failed = 0


def check(name, cond, detail=""):
    global failed
    print(("ok: " if cond else "FAIL: ") + name + ("" if cond else " " + str(detail)))
    failed += 0 if cond else 1


read = lambda p: open(p, "rb").read()
creds = grpc.ssl_channel_credentials(root_certificates=read(pki + "/ca.pem"), private_key=read(pki + "/client-key.pem"),
                                     certificate_chain=read(pki + "/client.pem"))
ch = grpc.secure_channel("127.0.0.1:" + port, creds, options=[("grpc.ssl_target_name_override", "localhost")])
info = ch.stream_stream("/%s.ServerReflection/ServerReflectionInfo" % PKG, request_serializer=Req.SerializeToString,
                        response_deserializer=Resp.FromString)

# All requests on one stream: one answer each, in order.
reqs = [Req(host="h", list_services=""), Req(file_containing_symbol="amaters.v1.AmateRS"),
        Req(file_containing_symbol="amaters.v1.NoSuchThing"), Req(file_by_filename="health.proto"),
        Req(file_containing_symbol="grpc.health.v1.HealthCheckResponse.SERVING"),
        Req(file_containing_extension={"containing_type": "amaters.v1.QueryRequest", "extension_number": 100}),
        Req(all_extension_numbers_of_type="amaters.v1.QueryRequest"), Req(all_extension_numbers_of_type="no.Such"),
        Req(file_by_filename="grpc/reflection/%s/reflection.proto" % version)]
answers = list(info(iter(reqs), timeout=20))
check("one answer per request (%d)" % len(answers), len(answers) == len(reqs), len(answers))
answers += [Resp()] * (len(reqs) - len(answers))
for q, a in zip(reqs, answers):
    check("original_request echoed: %s" % q.WhichOneof("message_request"), a.original_request == q, a.original_request)

names = sorted(s.name for s in answers[0].list_services_response.service)
check("list_services: amaters, health and reflection (%s)" % names,
      {"amaters.v1.AmateRS", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
       "grpc.reflection.v1alpha.ServerReflection"} <= set(names), names)
check("valid_host echoes the host", answers[0].valid_host == "h", answers[0].valid_host)

files = answers[1].file_descriptor_response.file_descriptor_proto
fd = descriptor_pb2.FileDescriptorProto.FromString(files[0]) if files else descriptor_pb2.FileDescriptorProto()
svc = {s.name: s for s in fd.service}.get("AmateRS")
methods = {m.name: m for m in svc.method} if svc else {}
check("AmateRS's file parses: amaters.proto, package amaters.v1", fd.name == "amaters.proto" and fd.package == "amaters.v1", fd.name)
check("Execute: QueryRequest -> QueryResponse, unary",
      "Execute" in methods and methods["Execute"].input_type == ".amaters.v1.QueryRequest"
      and methods["Execute"].output_type == ".amaters.v1.QueryResponse"
      and not methods["Execute"].client_streaming and not methods["Execute"].server_streaming, methods.get("Execute"))
check("ExecuteStream: bidirectional",
      "ExecuteStream" in methods and methods["ExecuteStream"].client_streaming and methods["ExecuteStream"].server_streaming)
check("QueryRequest's fields", [(f.name, f.number) for f in fd.message_type[0].field] ==
      [("query_bytes", 1), ("client_signature", 2)] if fd.message_type else False)

for i, what in ((2, "unknown symbol"), (5, "unknown extension"), (7, "extension numbers of an unknown type")):
    e = answers[i]
    check(what + " -> error_response NOT_FOUND", e.WhichOneof("message_response") == "error_response"
          and e.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0] and e.error_response.error_message, e)

hf = answers[3].file_descriptor_response.file_descriptor_proto
h = descriptor_pb2.FileDescriptorProto.FromString(hf[0]) if hf else descriptor_pb2.FileDescriptorProto()
check("file_by_filename health.proto: grpc.health.v1 with Health", h.package == "grpc.health.v1"
      and [s.name for s in h.service] == ["Health"], h.package)
check("an enum value's file is health.proto", [descriptor_pb2.FileDescriptorProto.FromString(b).name for b in
      answers[4].file_descriptor_response.file_descriptor_proto] == ["health.proto"], answers[4])
en = answers[6].all_extension_numbers_response
check("all_extension_numbers_of_type of a known message: none", en.base_type_name == "amaters.v1.QueryRequest"
      and list(en.extension_number) == [] and answers[6].WhichOneof("message_response") == "all_extension_numbers_response", answers[6])
rf = answers[8].file_descriptor_response.file_descriptor_proto
r = descriptor_pb2.FileDescriptorProto.FromString(rf[0]) if rf else descriptor_pb2.FileDescriptorProto()
check("the reflection service describes itself", r.package == PKG and r.service and r.service[0].name == "ServerReflection", r.package)

# Malformed request bytes: the call fails with INVALID_ARGUMENT (and the server lives on).
raw = ch.stream_stream("/%s.ServerReflection/ServerReflectionInfo" % PKG)
try:
    list(raw(iter([b"\x22\xff\xff"]), timeout=20))
    check("malformed request -> INVALID_ARGUMENT", False, "no error")
except grpc.RpcError as e:
    check("malformed request -> INVALID_ARGUMENT", e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code())
print("reflection_client %s: %d failed" % (version, failed))
sys.exit(1 if failed else 0)
