"""A wasi:http/proxy handler in Python, built into a component with componentize-py.

Answers `<method> <path-with-query>` and a newline, then the request body, with status
200 and the field `x-guest: python` (and `x-echo` copied from the request when it has
one). Build it with `examples/http/build.sh python OUT_DIR`.
"""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import streams
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Other,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

# wasi:io streams take at most this many bytes per blocking write.
CHUNK = 4096


def method_name(method) -> str:
    if isinstance(method, Method_Other):
        return method.value
    return type(method).__name__.removeprefix("Method_").upper()


def read_body(request: IncomingRequest) -> bytes:
    body = request.consume()
    stream = body.stream()
    data = bytearray()
    while True:
        try:
            data += stream.blocking_read(65536)
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                break
            raise
    # componentize-py drops a resource on `__exit__` (or `with`), not when the last
    # reference goes: an instance that kept one would not be reused (reuse_instances).
    stream.__exit__(None, None, None)
    body.__exit__(None, None, None)
    return bytes(data)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        head = f"{method_name(request.method())} {request.path_with_query() or '/'}\n"
        fields = [("x-guest", b"python")]
        fields += [(n, v) for n, v in request.headers().entries() if n == "x-echo"]
        payload = head.encode() + read_body(request)
        request.__exit__(None, None, None)

        response = OutgoingResponse(Fields.from_list(fields))
        response.set_status_code(200)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        out = body.write()
        for at in range(0, len(payload), CHUNK):
            out.blocking_write_and_flush(payload[at : at + CHUNK])
        out.__exit__(None, None, None)
        OutgoingBody.finish(body, None)
