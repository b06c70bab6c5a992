;; counter: a reactor (DESIGN §3) that counts the invocations its instance has served.
;;
;; The count lives in linear memory, so it survives between invocations only because the
;; platform keeps the instance warm and reuses it: `x-strata-affinity` sends every request
;; with one key to the same instance, which then answers 1, 2, 3, ... `_initialize` sets
;; the count to 0 once, when the instance is created. Each call writes the new count in
;; decimal to stdout and returns 0.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))

  ;; Layout: [0, 4) the count, [8, 16) one iovec, [16, 20) bytes written, [32, 48) digits.
  (memory (export "memory") 1)

  (func (export "_initialize")
    (i32.store (i32.const 0) (i32.const 0)))

  (func (export "strata_handle") (result i32)
    (local $n i32) (local $at i32)
    (local.set $n (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (i32.store (i32.const 0) (local.get $n))
    ;; Digits are written backwards from the end of [32, 48).
    (local.set $at (i32.const 48))
    (loop $digit
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i32.store8 (local.get $at)
        (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (local.get $n)))
    (i32.store (i32.const 8) (local.get $at))
    (i32.store (i32.const 12) (i32.sub (i32.const 48) (local.get $at)))
    (drop (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))
    (i32.const 0)))
