//! The `http`-ABI rows of the benchmark: which components it deploys and how they are
//! built.
//!
//! Always the hand-written WAT component (`examples/http/hello.wat`); the Python and
//! JavaScript handlers too when their toolchains are here (`examples/http/build.sh`,
//! componentize-py and componentize-js): a missing toolchain drops its rows with a note,
//! never the sitting. `bench-strata` gets them as `--component NAME=PATH` arguments.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The WAT component every sitting measures.
pub const HELLO_HTTP_WAT: &str = include_str!("../../../examples/http/hello.wat");

/// One component of the sitting: its short name (`wat`, `python`, `js`) and its binary.
#[derive(Debug, Clone)]
pub struct Component {
    /// Short name: the function's name and the rows' label.
    pub name: String,
    /// The component's binary.
    pub path: PathBuf,
}

impl Component {
    /// The argument `bench-strata` takes for it.
    pub fn arg(&self) -> String {
        format!("{}={}", self.name, self.path.display())
    }

    /// The row label of its local warm path.
    pub fn row(&self) -> &'static str {
        match self.name.as_str() {
            "python" => "POP local, http component (Python)",
            "js" => "POP local, http component (JavaScript)",
            "wat" => "POP local, http component (WAT)",
            _ => "POP local, http component",
        }
    }

    /// Its row in the benchmark table with `reuse_instances` on.
    pub fn reused_row(&self) -> &'static str {
        match self.name.as_str() {
            "python" => "POP local, http component (Python), reused",
            "js" => "POP local, http component (JavaScript), reused",
            "wat" => "POP local, http component (WAT), reused",
            _ => "POP local, http component, reused",
        }
    }
}

/// The WAT component written to `dir`, and the Python and JavaScript ones built into it
/// when their toolchains are here.
///
/// # Errors
/// When `dir` cannot be written or the WAT does not parse.
pub fn build_all(dir: &Path) -> anyhow::Result<Vec<Component>> {
    let wat = dir.join("hello-wat.wasm");
    std::fs::write(&wat, wat::parse_str(HELLO_HTTP_WAT)?)?;
    let mut out = vec![Component {
        name: "wat".into(),
        path: wat,
    }];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/http/build.sh");
    for (lang, file) in [("python", "hello-py.wasm"), ("js", "hello-js.wasm")] {
        eprintln!("bench: building the {lang} http component");
        let built = Command::new("bash")
            .arg(&script)
            .arg(lang)
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        let path = dir.join(file);
        if built && path.exists() {
            out.push(Component {
                name: lang.into(),
                path,
            });
        } else {
            eprintln!(
                "bench: no {lang} component (examples/http/build.sh {lang} failed; see the \
                 README's tool table): its rows are left out"
            );
        }
    }
    Ok(out)
}

/// Parses `bench-strata`'s `--component NAME=PATH` value.
///
/// # Errors
/// When it is not `NAME=PATH`.
pub fn parse_arg(arg: &str) -> anyhow::Result<Component> {
    let (name, path) = arg
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--component takes NAME=PATH, got {arg:?}"))?;
    Ok(Component {
        name: name.to_owned(),
        path: PathBuf::from(path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wat_component_parses_and_arguments_round_trip() {
        assert!(wat::parse_str(HELLO_HTTP_WAT).is_ok());
        let c = parse_arg("py=/tmp/x.wasm").expect("valid");
        assert_eq!(
            (c.name.as_str(), c.arg().as_str()),
            ("py", "py=/tmp/x.wasm")
        );
        assert!(parse_arg("nothing").is_err());
    }
}
