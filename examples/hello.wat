;; hello: greets its input.
;;
;; A WASI preview 1 command module (DESIGN §3): reads all of stdin and writes
;; `Hello, <stdin>!` and a newline to stdout, or `Hello, world!` and a newline when stdin
;; is empty. stdin is used verbatim (a trailing newline stays inside the greeting).
;; Exits 0; exits 1 if a WASI call fails or memory cannot grow.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  ;; Layout: [0, 8) one iovec, [8, 12) bytes read or written, constants from 16,
  ;; the input from 1024 to the end of memory (grown a page at a time).
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello, ")
  (data (i32.const 32) "!\n")
  (data (i32.const 48) "Hello, world!\n")
  (global $input i32 (i32.const 1024))

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

  ;; Reads stdin to the end into $input, growing memory when full; returns its length.
  (func $read_all (result i32)
    (local $len i32)
    (local $room i32)
    (loop $more
      (local.set $room
        (i32.sub
          (i32.mul (memory.size) (i32.const 65536))
          (i32.add (global.get $input) (local.get $len))))
      (if (i32.eqz (local.get $room))
        (then
          (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
            (then (call $proc_exit (i32.const 1))))
          (local.set $room (i32.const 65536))))
      (i32.store (i32.const 0) (i32.add (global.get $input) (local.get $len)))
      (i32.store (i32.const 4) (local.get $room))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $proc_exit (i32.const 1))))
      ;; Zero bytes read means end of input.
      (if (i32.load (i32.const 8))
        (then
          (local.set $len (i32.add (local.get $len) (i32.load (i32.const 8))))
          (br $more))))
    (local.get $len))

  (func (export "_start")
    (local $len i32)
    (local.set $len (call $read_all))
    (if (i32.eqz (local.get $len))
      (then (call $write_all (i32.const 48) (i32.const 14)))
      (else
        (call $write_all (i32.const 16) (i32.const 7))
        (call $write_all (global.get $input) (local.get $len))
        (call $write_all (i32.const 32) (i32.const 2))))))
