"""Render the FileDescriptorProtos embedded in pymilvus' generated *_pb2.py modules as .proto text.

Usage: python scripts/milvus-proto-from-pymilvus.py <pymilvus/grpc_gen dir> <out dir> [RPC,RPC,...]

With a list of rpcs, the output is the subset they need: the service keeps only those rpcs,
and only the messages and enums reachable from them (transitively) are written.
The serialized descriptors are what pymilvus itself speaks, so package, message, field names
and field numbers are exactly upstream's (milvus-proto at the version pymilvus pins).
"""
import ast, re, sys, pathlib
from google.protobuf import descriptor_pb2 as d

src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
keep_rpcs = set(sys.argv[3].split(",")) if len(sys.argv) > 3 else None
out.mkdir(parents=True, exist_ok=True)
T = d.FieldDescriptorProto
TYPES = {T.TYPE_DOUBLE: "double", T.TYPE_FLOAT: "float", T.TYPE_INT64: "int64", T.TYPE_UINT64: "uint64",
         T.TYPE_INT32: "int32", T.TYPE_FIXED64: "fixed64", T.TYPE_FIXED32: "fixed32", T.TYPE_BOOL: "bool",
         T.TYPE_STRING: "string", T.TYPE_BYTES: "bytes", T.TYPE_UINT32: "uint32", T.TYPE_SFIXED32: "sfixed32",
         T.TYPE_SFIXED64: "sfixed64", T.TYPE_SINT32: "sint32", T.TYPE_SINT64: "sint64"}

def tname(f, pkg):
    if f.type in (T.TYPE_MESSAGE, T.TYPE_ENUM):
        n = f.type_name.lstrip(".")
        return n[len(pkg) + 1:] if n.startswith(pkg + ".") else "." + n
    return TYPES[f.type]

def opts(f):
    o = []
    if f.options.deprecated:
        o.append("deprecated = true")
    if f.options.HasField("packed"):
        o.append(f"packed = {'true' if f.options.packed else 'false'}")
    return f" [{', '.join(o)}]" if o else ""

def render_enum(e, ind):
    lines = [f"{ind}enum {e.name} {{"]
    if e.options.allow_alias:
        lines.append(f"{ind}  option allow_alias = true;")
    for v in e.value:
        dep = " [deprecated = true]" if v.options.deprecated else ""
        lines.append(f"{ind}  {v.name} = {v.number}{dep};")
    lines.append(f"{ind}}}")
    return lines

def render_msg(m, pkg, ind):
    lines = [f"{ind}message {m.name} {{"]
    maps = {n.name: n for n in m.nested_type if n.options.map_entry}
    for e in m.enum_type:
        lines += render_enum(e, ind + "  ")
    for n in m.nested_type:
        if not n.options.map_entry:
            lines += render_msg(n, pkg, ind + "  ")
    oneofs = {}
    for f in m.field:
        if f.HasField("oneof_index") and not f.proto3_optional:
            oneofs.setdefault(f.oneof_index, []).append(f)
    done = set()
    for f in m.field:
        if f.HasField("oneof_index") and not f.proto3_optional:
            if f.oneof_index in done:
                continue
            done.add(f.oneof_index)
            lines.append(f"{ind}  oneof {m.oneof_decl[f.oneof_index].name} {{")
            for g in oneofs[f.oneof_index]:
                lines.append(f"{ind}    {tname(g, pkg)} {g.name} = {g.number}{opts(g)};")
            lines.append(f"{ind}  }}")
            continue
        entry = f.type_name.split(".")[-1] if f.type == T.TYPE_MESSAGE else None
        if f.label == T.LABEL_REPEATED and entry in maps:
            k, v = maps[entry].field
            lines.append(f"{ind}  map<{tname(k, pkg)}, {tname(v, pkg)}> {f.name} = {f.number}{opts(f)};")
            continue
        label = "repeated " if f.label == T.LABEL_REPEATED else ("optional " if f.proto3_optional else "")
        lines.append(f"{ind}  {label}{tname(f, pkg)} {f.name} = {f.number}{opts(f)};")
    for r in m.reserved_range:
        lines.append(f"{ind}  reserved {r.start} to {r.end - 1};" if r.end - 1 > r.start else f"{ind}  reserved {r.start};")
    lines.append(f"{ind}}}")
    return lines

files = []
for py in sorted(src.glob("*_pb2.py")):
    m = re.search(r"AddSerializedFile\((b'.*?')\)\n", py.read_text(), re.S)
    if m:
        files.append((py, d.FileDescriptorProto.FromString(ast.literal_eval(m.group(1)))))

# Every top-level message and enum by full name, and what each message refers to.
top = {}
for _, fd in files:
    for msg in fd.message_type:
        top[f".{fd.package}.{msg.name}"] = msg
    for e in fd.enum_type:
        top[f".{fd.package}.{e.name}"] = e

def refs(msg):
    for f in msg.field:
        if f.type_name:
            yield f.type_name
    for n in msg.nested_type:
        yield from refs(n)

def top_of(name):
    # ".pkg.Outer.Inner" -> the top-level ".pkg.Outer" that defines it
    while name and name not in top:
        name = name.rsplit(".", 1)[0]
    return name

needed = None
if keep_rpcs is not None:
    needed, todo = set(), []
    known = {r.name for _, fd in files for svc in fd.service for r in svc.method}
    if keep_rpcs - known:
        sys.exit(f"unknown rpcs: {sorted(keep_rpcs - known)}")
    for _, fd in files:
        for svc in fd.service:
            for r in svc.method:
                if r.name in keep_rpcs:
                    todo += [r.input_type, r.output_type]
    while todo:
        name = top_of(todo.pop())
        if name in needed or name not in top:
            continue
        needed.add(name)
        if isinstance(top[name], d.DescriptorProto):
            todo += list(refs(top[name]))

for py, fd in files:
    pkg = fd.package
    if needed is not None:
        msgs = [m for m in fd.message_type if f".{pkg}.{m.name}" in needed]
        enums = [e for e in fd.enum_type if f".{pkg}.{e.name}" in needed]
        if not msgs and not enums and not fd.service:
            continue
        del fd.message_type[:]
        fd.message_type.extend(msgs)
        del fd.enum_type[:]
        fd.enum_type.extend(enums)
        for svc in fd.service:
            kept = [r for r in svc.method if r.name in keep_rpcs]
            del svc.method[:]
            svc.method.extend(kept)
        services = [svc for svc in fd.service if svc.method]
        del fd.service[:]
        fd.service.extend(services)
        used = {top_of(t).rsplit(".", 1)[0] for m in msgs for t in refs(m)} | {
            t.rsplit(".", 1)[0] for s in fd.service for r in s.method for t in (r.input_type, r.output_type)}
        deps = [dep for dep in fd.dependency
                if any(f".{other.package}" in used and other.name == dep for _, other in files)]
        del fd.dependency[:]
        fd.dependency.extend(deps)
    lines = [f"// Generated from the descriptor of {fd.name} embedded in pymilvus' {py.name}; do not edit.",
             'syntax = "proto3";', "", f"package {pkg};", ""]
    for dep in fd.dependency:
        lines.append(f'import "{dep}";')
    if fd.dependency:
        lines.append("")
    for e in fd.enum_type:
        lines += render_enum(e, "") + [""]
    for msg in fd.message_type:
        lines += render_msg(msg, pkg, "") + [""]
    for s in fd.service:
        lines.append(f"service {s.name} {{")
        for r in s.method:
            i, o = r.input_type.lstrip("."), r.output_type.lstrip(".")
            i = i[len(pkg) + 1:] if i.startswith(pkg + ".") else "." + i
            o = o[len(pkg) + 1:] if o.startswith(pkg + ".") else "." + o
            cs = "stream " if r.client_streaming else ""
            ss = "stream " if r.server_streaming else ""
            lines.append(f"  rpc {r.name}({cs}{i}) returns ({ss}{o}) {{}}")
        lines.append("}")
        lines.append("")
    (out / fd.name).write_text("\n".join(lines))
    print(fd.name, len(fd.message_type), "messages", sum(len(s.method) for s in fd.service), "rpcs", list(fd.dependency))
