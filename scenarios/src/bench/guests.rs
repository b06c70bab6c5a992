//! The benchmark's guests, all WAT (no C toolchain is assumed on the machine): the 1 KiB
//! POST echo as a command module (the same bytes for the naive server and the POP), the
//! same echo as a reactor, and ~100 KB command modules for the cold-start step, each
//! distinct (a new digest) so every one is fetched, deserialized and run from scratch.

use std::fmt::Write as _;

/// The command echo: `examples/echo.wat`, stdin to stdout through a 63 KiB buffer.
pub const ECHO_COMMAND_WAT: &str = include_str!("../../../examples/echo.wat");

/// The reactor echo: `strata_handle` copies all of stdin to stdout, as the command does.
pub const ECHO_REACTOR_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_initialize"))
  (func (export "strata_handle") (result i32)
    (local $n i32) (local $ptr i32)
    (block $eof
      (loop $more
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 64512))
        (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (return (i32.const 1))))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $ptr (i32.const 1024))
        (block $written
          (loop $write
            (br_if $written (i32.eqz (local.get $n)))
            (i32.store (i32.const 0) (local.get $ptr))
            (i32.store (i32.const 4) (local.get $n))
            (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
              (then (return (i32.const 1))))
            (local.set $ptr (i32.add (local.get $ptr) (i32.load (i32.const 8))))
            (local.set $n (i32.sub (local.get $n) (i32.load (i32.const 8))))
            (br $write)))
        (br $more)))
    (i32.const 0)))
"#;

/// Filler functions in a cold-start module; with [`FILLER_OPS`] each, the binary is about
/// 100 KB.
const FILLER_FUNCTIONS: u32 = 400;
/// Arithmetic steps per filler function.
const FILLER_OPS: u32 = 40;

/// A command module of about 100 KB that echoes like [`ECHO_COMMAND_WAT`], with real code
/// (filler functions the engine compiles) whose constants depend on `variant`, so each
/// variant has its own digest and its own compiled artifact.
pub fn cold_module_wat(variant: u32) -> String {
    let echo = ECHO_COMMAND_WAT.trim_end();
    // Drop the module's closing parenthesis, append the fillers, close it again.
    let body = echo.strip_suffix(')').unwrap_or(echo);
    let mut wat = String::with_capacity(body.len() + 1_000_000);
    wat.push_str(body);
    for f in 0..FILLER_FUNCTIONS {
        let _ = write!(wat, "\n  (func (export \"f{f}\") (param i32) (result i32)");
        wat.push_str(" local.get 0");
        for op in 0..FILLER_OPS {
            let k = variant
                .wrapping_mul(2_654_435_761)
                .wrapping_add(f.wrapping_mul(40_503))
                .wrapping_add(op)
                | 0x4000_0000;
            let instr = if op % 2 == 0 { "i32.add" } else { "i32.xor" };
            let _ = write!(wat, " i32.const {} {instr}", k as i32);
        }
        wat.push(')');
    }
    wat.push_str(")\n");
    wat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_modules_are_about_100_kb_and_distinct() {
        let a = wat::parse_str(cold_module_wat(1)).expect("variant 1 parses");
        let b = wat::parse_str(cold_module_wat(2)).expect("variant 2 parses");
        assert!((90_000..140_000).contains(&a.len()), "{} bytes", a.len());
        assert_ne!(a, b);
    }

    #[test]
    fn the_echo_guests_parse() {
        wat::parse_str(ECHO_COMMAND_WAT).expect("command echo");
        wat::parse_str(ECHO_REACTOR_WAT).expect("reactor echo");
    }
}
