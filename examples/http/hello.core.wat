;; The core module of `hello.wat`, a `wasi:http/proxy` component written by hand (no
;; toolchain). `build.sh` wraps it into the component with wasm-tools, using the WIT in
;; ../wit; the imports below are the canonical ABI's lowering of the `wasi:http` and
;; `wasi:io` functions it calls.
;;
;; It answers `<method> <path-with-query>\n` followed by the request body, with status
;; 200 (418 for paths under /teapot), the field `x-guest: hello` and, when the request had
;; an `x-echo` field, an `x-echo` field with the same value. Paths that test the limits:
;; /trap traps, /spin loops forever, /sleep waits 10 s in a host call, /grow asks for
;; 64 MiB more memory (and traps when refused), /big answers 8 MB. /fetch makes an
;; outbound GET http://<x-target>/ and answers `status N`, `error N` (the `error-code`
;; case number; 15 is HTTP-request-denied) or `handle-error N`.
;;
;; Every response carries `x-count: NNN`, how many requests this instance has handled
;; (a global): `001` in a fresh instance, more when the function opts in to instance
;; reuse. The handler drops every resource it was given or made (so a reused instance
;; holds none between requests), except under /leak, which keeps the request, and
;; /fetch, which keeps the outbound response. /log writes `log NNN` (the same count) to
;; stdout through a stream it gets once and keeps, as a libc does. /env adds its
;; environment to the body, a `NAME=value` line per variable.
(module
  (type $ret (func (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]incoming-request.method"
    (func $req_method (type $ret)))
  (import "wasi:http/types@0.2.12" "[method]incoming-request.path-with-query"
    (func $req_path (type $ret)))
  (import "wasi:http/types@0.2.12" "[method]incoming-request.headers"
    (func $req_headers (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]incoming-request.consume"
    (func $req_consume (type $ret)))
  (import "wasi:http/types@0.2.12" "[method]incoming-body.stream"
    (func $body_stream (type $ret)))
  (import "wasi:io/streams@0.2.12" "[method]input-stream.blocking-read"
    (func $read (param i32 i64 i32)))
  (import "wasi:http/types@0.2.12" "[method]fields.get"
    (func $fields_get (param i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[constructor]fields"
    (func $fields_new (result i32)))
  (import "wasi:http/types@0.2.12" "[method]fields.append"
    (func $fields_append (param i32 i32 i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[constructor]outgoing-response"
    (func $resp_new (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-response.set-status-code"
    (func $resp_status (param i32 i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-response.body"
    (func $resp_body (type $ret)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-body.write"
    (func $body_write (type $ret)))
  (import "wasi:http/types@0.2.12" "[static]outgoing-body.finish"
    (func $body_finish (param i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]response-outparam.set"
    (func $outparam_set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush"
    (func $write_flush (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[resource-drop]output-stream"
    (func $drop_output (param i32)))
  (import "wasi:clocks/monotonic-clock@0.2.12" "subscribe-duration"
    (func $sleep_for (param i64) (result i32)))
  (import "wasi:io/poll@0.2.12" "[method]pollable.block"
    (func $block (param i32)))
  (import "wasi:io/poll@0.2.12" "[resource-drop]pollable"
    (func $drop_pollable (param i32)))
  (import "wasi:http/types@0.2.12" "[constructor]outgoing-request"
    (func $oreq_new (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-request.set-scheme"
    (func $oreq_scheme (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-request.set-authority"
    (func $oreq_authority (param i32 i32 i32 i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-request.set-path-with-query"
    (func $oreq_path (param i32 i32 i32 i32) (result i32)))
  (import "wasi:http/outgoing-handler@0.2.12" "handle"
    (func $send (param i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]future-incoming-response.subscribe"
    (func $future_subscribe (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]future-incoming-response.get"
    (func $future_get (type $ret)))
  (import "wasi:http/types@0.2.12" "[method]incoming-response.status"
    (func $iresp_status (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[resource-drop]incoming-request"
    (func $drop_request (param i32)))
  (import "wasi:http/types@0.2.12" "[resource-drop]fields"
    (func $drop_fields (param i32)))
  (import "wasi:http/types@0.2.12" "[resource-drop]incoming-body"
    (func $drop_body (param i32)))
  (import "wasi:io/streams@0.2.12" "[resource-drop]input-stream"
    (func $drop_input (param i32)))
  (import "wasi:cli/stdout@0.2.12" "get-stdout"
    (func $get_stdout (result i32)))
  (import "wasi:cli/environment@0.2.12" "get-environment"
    (func $get_env (param i32)))

  (memory (export "memory") 1)
  ;; Return areas (8-aligned) at 16; constant strings from 1024; the heap from 4096.
  (global $heap (mut i32) (i32.const 4096))
  ;; Requests this instance has handled.
  (global $count (mut i32) (i32.const 0))
  ;; The stdout stream, once got (0: not yet; no handle is 0).
  (global $stdout (mut i32) (i32.const 0))
  (data (i32.const 1024) "GETHEADPOSTPUTDELETECONNECTOPTIONSTRACEPATCH")
  (data (i32.const 1100) "x-guesthellox-echox-target /\n")
  (data (i32.const 1140) "status error handle-error ")
  (data (i32.const 1170) "x-count")
  (data (i32.const 1180) "log \n")
  (data (i32.const 1186) "=")
  ;; Offsets (into 1024) and lengths of the method names, by `method` case.
  (data (i32.const 1200) "\00\03\03\04\07\04\0b\03\0e\06\14\07\1b\07\22\05\27\05")

  ;; The canonical ABI's allocator: a bump allocator that never frees.
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get 2))))
    (global.set $heap (i32.add (local.get $p) (local.get 3)))
    (block $ok
      (br_if $ok (i32.le_u (global.get $heap)
        (i32.mul (memory.size) (i32.const 65536))))
      (br_if $ok (i32.ne (memory.grow
        (i32.add (i32.shr_u (i32.sub (global.get $heap)
          (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1)))
        (i32.const -1)))
      unreachable)
    (local.get $p))

  ;; Writes `len` bytes at `ptr` to output stream `os`, 4096 at a time (the most one
  ;; blocking-write-and-flush takes); traps if the stream fails.
  (func $write (param $os i32) (param $ptr i32) (param $len i32)
    (local $n i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (local.set $n (select (i32.const 4096) (local.get $len)
          (i32.gt_u (local.get $len) (i32.const 4096))))
        (call $write_flush (local.get $os) (local.get $ptr) (local.get $n) (i32.const 16))
        (if (i32.load8_u (i32.const 16)) (then unreachable))
        (local.set $ptr (i32.add (local.get $ptr) (local.get $n)))
        (local.set $len (i32.sub (local.get $len) (local.get $n)))
        (br $more))))

  ;; Writes `n` (below 1000) in decimal.
  (func $write_num (param $os i32) (param $n i32)
    (i32.store8 (i32.const 80) (i32.add (i32.const 48) (i32.div_u (local.get $n) (i32.const 100))))
    (i32.store8 (i32.const 81)
      (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $n) (i32.const 10)) (i32.const 10))))
    (i32.store8 (i32.const 82) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
    (call $write (local.get $os) (i32.const 80) (i32.const 3)))

  ;; Whether the `len` bytes at `ptr` start with the `plen` bytes at `prefix`.
  (func $starts (param $ptr i32) (param $len i32) (param $prefix i32) (param $plen i32)
    (result i32)
    (local $i i32)
    (if (i32.lt_u (local.get $len) (local.get $plen)) (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $plen)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $ptr) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $prefix) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; GET http://<authority>/ through wasi:http/outgoing-handler; writes what happened.
  (func $fetch (param $os i32) (param $auth i32) (param $alen i32)
    (local $req i32) (local $fut i32) (local $p i32)
    (local.set $req (call $oreq_new (call $fields_new)))
    (drop (call $oreq_scheme (local.get $req) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))
    (drop (call $oreq_authority (local.get $req) (i32.const 1) (local.get $auth) (local.get $alen)))
    (drop (call $oreq_path (local.get $req) (i32.const 1) (i32.const 1127) (i32.const 1)))
    (call $send (local.get $req) (i32.const 0) (i32.const 0) (i32.const 16))
    (if (i32.load8_u (i32.const 16))
      (then
        (call $write (local.get $os) (i32.const 1153) (i32.const 13))
        (call $write_num (local.get $os) (i32.load8_u (i32.const 24)))
        (return)))
    (local.set $fut (i32.load (i32.const 24)))
    (local.set $p (call $future_subscribe (local.get $fut)))
    (call $block (local.get $p))
    (call $drop_pollable (local.get $p))
    (call $future_get (local.get $fut) (i32.const 16))
    ;; option @16, outer result @24, inner result @32, payload @40.
    (if (i32.or (i32.eqz (i32.load8_u (i32.const 16))) (i32.load8_u (i32.const 24)))
      (then unreachable))
    (if (i32.load8_u (i32.const 32))
      (then
        (call $write (local.get $os) (i32.const 1147) (i32.const 6))
        (call $write_num (local.get $os) (i32.load8_u (i32.const 40))))
      (else
        (call $write (local.get $os) (i32.const 1140) (i32.const 7))
        (call $write_num (local.get $os) (call $iresp_status (i32.load (i32.const 40)))))))

;; Writes every environment variable as `NAME=value\n`.
  (func $write_env (param $os i32)
    (local $at i32) (local $end i32)
    (call $get_env (i32.const 16))
    (local.set $at (i32.load (i32.const 16)))
    (local.set $end (i32.add (local.get $at) (i32.shl (i32.load (i32.const 20)) (i32.const 4))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (call $write (local.get $os) (i32.load (local.get $at)) (i32.load offset=4 (local.get $at)))
        (call $write (local.get $os) (i32.const 1186) (i32.const 1))
        (call $write (local.get $os) (i32.load offset=8 (local.get $at)) (i32.load offset=12 (local.get $at)))
        (call $write (local.get $os) (i32.const 1128) (i32.const 1))
        (local.set $at (i32.add (local.get $at) (i32.const 16)))
        (br $next))))

  (func (export "wasi:http/incoming-handler@0.2.12#handle") (param $req i32) (param $out i32)
    (local $m i32) (local $mlen i32) (local $path i32) (local $plen i32)
    (local $headers i32) (local $echo i32) (local $elen i32) (local $target i32) (local $tlen i32)
    (local $in i32) (local $body i32) (local $blen i32)
    (local $resp i32) (local $rh i32) (local $ob i32) (local $os i32) (local $i i32)
    (local $ib i32)
    ;; Nothing allocated for an earlier request is needed any more.
    (global.set $heap (i32.const 4096))
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    ;; The method: a known case's name from the table, or `other`'s string.
    (call $req_method (local.get $req) (i32.const 16))
    (local.set $m (i32.load8_u (i32.const 16)))
    (if (i32.eq (local.get $m) (i32.const 9))
      (then
        (local.set $mlen (i32.load (i32.const 24)))
        (local.set $m (i32.load (i32.const 20))))
      (else
        (local.set $mlen (i32.load8_u (i32.add (i32.const 1201) (i32.shl (local.get $m) (i32.const 1)))))
        (local.set $m (i32.add (i32.const 1024)
          (i32.load8_u (i32.add (i32.const 1200) (i32.shl (local.get $m) (i32.const 1))))))))
    (call $req_path (local.get $req) (i32.const 16))
    (if (i32.load8_u (i32.const 16))
      (then
        (local.set $path (i32.load (i32.const 20)))
        (local.set $plen (i32.load (i32.const 24)))))
    (i32.store (i32.const 64) (i32.const 0x6172742f)) ;; "/tra"
    (i32.store (i32.const 68) (i32.const 0x6970732f)) ;; "/spi"
    (i32.store (i32.const 72) (i32.const 0x6f72672f)) ;; "/gro"
    (i32.store (i32.const 76) (i32.const 0x65656c73)) ;; "slee"
    (if (call $starts (local.get $path) (local.get $plen) (i32.const 64) (i32.const 4))
      (then unreachable))
    (if (call $starts (local.get $path) (local.get $plen) (i32.const 68) (i32.const 4))
      (then (loop $forever (br $forever))))
    (if (call $starts (local.get $path) (local.get $plen) (i32.const 72) (i32.const 4))
      (then (if (i32.eq (memory.grow (i32.const 1024)) (i32.const -1)) (then unreachable))))
    (if (call $starts (i32.add (local.get $path) (i32.const 1)) (local.get $plen) (i32.const 76) (i32.const 4))
      (then (call $block (call $sleep_for (i64.const 10000000000)))))
    ;; Request fields: x-echo and x-target, first values.
    (local.set $headers (call $req_headers (local.get $req)))
    (call $fields_get (local.get $headers) (i32.const 1112) (i32.const 6) (i32.const 16))
    (if (i32.load (i32.const 20))
      (then
        (local.set $echo (i32.load (i32.load (i32.const 16))))
        (local.set $elen (i32.load (i32.add (i32.load (i32.const 16)) (i32.const 4))))))
    (call $fields_get (local.get $headers) (i32.const 1118) (i32.const 8) (i32.const 16))
    (if (i32.load (i32.const 20))
      (then
        (local.set $target (i32.load (i32.load (i32.const 16))))
        (local.set $tlen (i32.load (i32.add (i32.load (i32.const 16)) (i32.const 4))))))
    ;; The body: read to its end; the bump allocator puts the chunks one after another.
    (call $req_consume (local.get $req) (i32.const 16))
    (if (i32.load8_u (i32.const 16)) (then unreachable))
    (local.set $ib (i32.load (i32.const 20)))
    (call $body_stream (local.get $ib) (i32.const 16))
    (if (i32.load8_u (i32.const 16)) (then unreachable))
    (local.set $in (i32.load (i32.const 20)))
    (block $eof
      (loop $more
        (call $read (local.get $in) (i64.const 65536) (i32.const 16))
        (br_if $eof (i32.load8_u (i32.const 16)))
        (if (i32.eqz (local.get $body)) (then (local.set $body (i32.load (i32.const 20)))))
        (local.set $blen (i32.add (local.get $blen) (i32.load (i32.const 24))))
        (br $more)))
    ;; Done with the request: its resources go, children first.
    (call $drop_input (local.get $in))
    (call $drop_body (local.get $ib))
    (call $drop_fields (local.get $headers))
    (i32.store (i32.const 64) (i32.const 0x61656c2f)) ;; "/lea"
    (if (i32.eqz (call $starts (local.get $path) (local.get $plen) (i32.const 64) (i32.const 4)))
      (then (call $drop_request (local.get $req))))
    (i32.store (i32.const 64) (i32.const 0x676f6c2f)) ;; "/log"
    (if (call $starts (local.get $path) (local.get $plen) (i32.const 64) (i32.const 4))
      (then
        (if (i32.eqz (global.get $stdout)) (then (global.set $stdout (call $get_stdout))))
        (call $write (global.get $stdout) (i32.const 1180) (i32.const 4))
        (call $write_num (global.get $stdout) (global.get $count))
        (call $write (global.get $stdout) (i32.const 1184) (i32.const 1))))
    ;; The response.
    (local.set $rh (call $fields_new))
    (call $fields_append (local.get $rh) (i32.const 1100) (i32.const 7) (i32.const 1107) (i32.const 5) (i32.const 16))
    (i32.store8 (i32.const 88) (i32.add (i32.const 48) (i32.div_u (global.get $count) (i32.const 100))))
    (i32.store8 (i32.const 89) (i32.add (i32.const 48)
      (i32.rem_u (i32.div_u (global.get $count) (i32.const 10)) (i32.const 10))))
    (i32.store8 (i32.const 90) (i32.add (i32.const 48) (i32.rem_u (global.get $count) (i32.const 10))))
    (call $fields_append (local.get $rh) (i32.const 1170) (i32.const 7) (i32.const 88) (i32.const 3) (i32.const 16))
    (if (local.get $elen)
      (then
        (call $fields_append (local.get $rh) (i32.const 1112) (i32.const 6)
          (local.get $echo) (local.get $elen) (i32.const 16))))
    (local.set $resp (call $resp_new (local.get $rh)))
    (i32.store (i32.const 64) (i32.const 0x6165742f)) ;; "/tea"
    (if (call $starts (local.get $path) (local.get $plen) (i32.const 64) (i32.const 4))
      (then (drop (call $resp_status (local.get $resp) (i32.const 418)))))
    (call $resp_body (local.get $resp) (i32.const 16))
    (local.set $ob (i32.load (i32.const 20)))
    (call $body_write (local.get $ob) (i32.const 16))
    (local.set $os (i32.load (i32.const 20)))
    (call $outparam_set (local.get $out) (i32.const 0) (local.get $resp) (i32.const 0)
      (i64.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $write (local.get $os) (local.get $m) (local.get $mlen))
    (call $write (local.get $os) (i32.const 1126) (i32.const 1))
    (call $write (local.get $os) (local.get $path) (local.get $plen))
    (call $write (local.get $os) (i32.const 1128) (i32.const 1))
    (call $write (local.get $os) (local.get $body) (local.get $blen))
    (i32.store (i32.const 64) (i32.const 0x6769622f)) ;; "/big"
    (if (call $starts (local.get $path) (local.get $plen) (i32.const 64) (i32.const 4))
      (then
        (loop $big
          (call $write (local.get $os) (i32.const 4096) (i32.const 4096))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $big (i32.lt_u (local.get $i) (i32.const 2000))))))
    (i32.store (i32.const 64) (i32.const 0x766e652f)) ;; "/env"
    (if (call $starts (local.get $path) (local.get $plen) (i32.const 64) (i32.const 4))
      (then (call $write_env (local.get $os))))
    (i32.store (i32.const 64) (i32.const 0x7465662f)) ;; "/fet"
    (if (call $starts (local.get $path) (local.get $plen) (i32.const 64) (i32.const 4))
      (then (call $fetch (local.get $os) (local.get $target) (local.get $tlen))))
    (call $drop_output (local.get $os))
    (call $body_finish (local.get $ob) (i32.const 0) (i32.const 0) (i32.const 16))
    (if (i32.load8_u (i32.const 16)) (then unreachable)))
)
