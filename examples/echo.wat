;; echo: copies all of stdin to stdout.
;;
;; A WASI preview 1 command module (DESIGN §3): streams stdin to stdout through a
;; 63 KiB buffer, so any input size works in one page of memory. Exits 0 at the end of
;; input; exits 1 if a WASI call fails (for example stdout over its cap).
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  ;; Layout: [0, 8) one iovec, [8, 12) bytes read or written, the buffer from 1024 to
  ;; the end of the page.
  (memory (export "memory") 1)
  (global $buf i32 (i32.const 1024))
  (global $buf_len i32 (i32.const 64512))

  ;; Writes all of [ptr, ptr + len) to stdout: fd_write may write less than asked.
  (func $write_all (param $ptr i32) (param $len i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 1))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.load (i32.const 8))))
        (local.set $len (i32.sub (local.get $len) (i32.load (i32.const 8))))
        (br $more))))

  (func (export "_start")
    (local $n i32)
    (block $eof
      (loop $more
        (i32.store (i32.const 0) (global.get $buf))
        (i32.store (i32.const 4) (global.get $buf_len))
        (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 1))))
        (local.set $n (i32.load (i32.const 8)))
        ;; Zero bytes read means end of input.
        (br_if $eof (i32.eqz (local.get $n)))
        (call $write_all (global.get $buf) (local.get $n))
        (br $more)))))
