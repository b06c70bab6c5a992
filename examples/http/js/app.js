// A wasi:http/proxy handler in JavaScript, built into a component with jco
// (componentize-js). Answers `<method> <path-with-query>` and a newline, then the
// request body, with status 200 and the field `x-guest: js` (and `x-echo` copied from
// the request when it has one). Build it with `examples/http/build.sh js OUT_DIR`.
import {
  Fields,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.12";

// wasi:io streams take at most this many bytes per blocking write.
const CHUNK = 4096;

function methodName(method) {
  return method.tag === "other" ? method.val : method.tag.toUpperCase();
}

function readBody(request) {
  const body = request.consume();
  const stream = body.stream();
  const chunks = [];
  let length = 0;
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(65536n);
    } catch (e) {
      if (e.payload && e.payload.tag === "closed") break;
      throw e;
    }
    chunks.push(chunk);
    length += chunk.length;
  }
  stream[Symbol.dispose]();
  body[Symbol.dispose]();
  const all = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return all;
}

export const incomingHandler = {
  handle(request, responseOut) {
    const encoder = new TextEncoder();
    const head = encoder.encode(
      `${methodName(request.method())} ${request.pathWithQuery() ?? "/"}\n`,
    );
    const fields = [["x-guest", encoder.encode("js")]];
    const headers = request.headers();
    for (const [name, value] of headers.entries()) {
      if (name === "x-echo") fields.push([name, value]);
    }
    headers[Symbol.dispose]();
    const body = readBody(request);
    // Every resource of the request is dropped before returning, children first: an
    // instance left holding one is never reused (`reuse_instances`, docs/guest-abi.md).
    request[Symbol.dispose]();
    const payload = new Uint8Array(head.length + body.length);
    payload.set(head, 0);
    payload.set(body, head.length);

    const response = new OutgoingResponse(Fields.fromList(fields));
    response.setStatusCode(200);
    const outgoing = response.body();
    ResponseOutparam.set(responseOut, { tag: "ok", val: response });
    const out = outgoing.write();
    for (let at = 0; at < payload.length; at += CHUNK) {
      out.blockingWriteAndFlush(payload.subarray(at, at + CHUNK));
    }
    out[Symbol.dispose]();
    OutgoingBody.finish(outgoing, undefined);
  },
};
