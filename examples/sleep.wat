;; sleep: a reactor (DESIGN §3) that waits as long as its request asks, then answers "ok".
;;
;; The request body is a decimal number of microseconds (anything else in it is ignored;
;; an empty body waits 0). The wait is WASI's `poll_oneoff` on the monotonic clock, so it
;; holds no CPU; the sandbox ends a wait that would pass the function's timeout with a
;; timeout. The live scenario runs (`scenarios run FILE --live`) deploy it as every
;; function of the scaled-down population, with each invocation's execution time drawn
;; like the simulator draws it.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))

  ;; Layout: [0, 8) the read iovec, [8, 12) bytes read, [16, 24) the write iovec,
  ;; [24, 28) bytes written, [32, 34) "ok", [256, 288) the request, [512, 560) one clock
  ;; subscription, [576, 608) its event, [640, 644) events written.
  (memory (export "memory") 1)
  (data (i32.const 32) "ok")

  (func (export "strata_handle") (result i32)
    (local $i i32) (local $end i32) (local $c i32) (local $us i64)
    ;; Read up to 32 bytes of the request.
    (i32.store (i32.const 0) (i32.const 256))
    (i32.store (i32.const 4) (i32.const 32))
    (i32.store (i32.const 8) (i32.const 0))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    ;; Its digits, as microseconds.
    (local.set $i (i32.const 256))
    (local.set $end (i32.add (i32.const 256) (i32.load (i32.const 8))))
    (block $done
      (loop $digit
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $c (i32.sub (i32.load8_u (local.get $i)) (i32.const 48)))
        (if (i32.lt_u (local.get $c) (i32.const 10))
          (then
            (local.set $us
              (i64.add (i64.mul (local.get $us) (i64.const 10))
                       (i64.extend_i32_u (local.get $c))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $digit)))
    ;; Wait: one relative subscription on the monotonic clock (id 1), in nanoseconds.
    (if (i64.gt_u (local.get $us) (i64.const 0))
      (then
        (i64.store (i32.const 512) (i64.const 0))
        (i32.store8 (i32.const 520) (i32.const 0))
        (i32.store (i32.const 528) (i32.const 1))
        (i64.store (i32.const 536) (i64.mul (local.get $us) (i64.const 1000)))
        (i64.store (i32.const 544) (i64.const 0))
        (i32.store16 (i32.const 552) (i32.const 0))
        (drop (call $poll_oneoff (i32.const 512) (i32.const 576) (i32.const 1) (i32.const 640)))))
    ;; Answer "ok".
    (i32.store (i32.const 16) (i32.const 32))
    (i32.store (i32.const 20) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
    (i32.const 0)))
