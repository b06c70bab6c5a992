//! upper: a command function in Zig (DESIGN §3, command ABI).
//!
//! Reads all of stdin and answers it in upper case (ASCII letters only). Talks to WASI
//! preview 1 directly (`fd_read`, `fd_write`), so it does not depend on the Zig standard
//! library's I/O API, which changes between Zig releases. Exit code 0 is success; a
//! failed read or write exits 1. Built by build.sh with Zig from PyPI (`ziglang`).

const Iovec = extern struct { buf: [*]u8, len: usize };
const Ciovec = extern struct { buf: [*]const u8, len: usize };

extern "wasi_snapshot_preview1" fn fd_read(fd: i32, iovs: [*]const Iovec, n: usize, nread: *usize) u16;
extern "wasi_snapshot_preview1" fn fd_write(fd: i32, iovs: [*]const Ciovec, n: usize, nwritten: *usize) u16;

fn writeAll(bytes: []const u8) bool {
    var rest = bytes;
    while (rest.len > 0) {
        var written: usize = 0;
        const iov = [_]Ciovec{.{ .buf = rest.ptr, .len = rest.len }};
        if (fd_write(1, &iov, 1, &written) != 0) return false;
        rest = rest[written..];
    }
    return true;
}

pub fn main() u8 {
    var buf: [4096]u8 = undefined;
    while (true) {
        var n: usize = 0;
        const iov = [_]Iovec{.{ .buf = &buf, .len = buf.len }};
        if (fd_read(0, &iov, 1, &n) != 0) return 1;
        if (n == 0) return 0;
        for (buf[0..n]) |*c| {
            if (c.* >= 'a' and c.* <= 'z') c.* -= 'a' - 'A';
        }
        if (!writeAll(buf[0..n])) return 1;
    }
}
