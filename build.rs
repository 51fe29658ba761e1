//! Build script: checks the prerequisites that rb-sys needs and exposes
//! Ruby-version cfgs (`ruby_gte_3_2` and friends) to the crate.
//!
//! rb-sys's own build script already links libruby; what it does not do is
//! explain itself when `ruby-dev` or libclang is missing, so we check first
//! and fail with the Debian package to install.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let ruby = std::env::var("RUBY").unwrap_or_else(|_| "ruby".to_string());
    let header_dir = Command::new(&ruby)
        .args(["-e", "print RbConfig::CONFIG['rubyhdrdir']"])
        .output();
    match header_dir {
        Err(e) => panic!(
            "\n\nrustrack needs Ruby to build ({ruby}: {e}).\n\
             Install it with: apt-get install -y ruby ruby-dev ruby-rack libclang-dev\n"
        ),
        Ok(out) => {
            let dir = String::from_utf8_lossy(&out.stdout).to_string();
            if dir.is_empty() || !Path::new(&dir).join("ruby.h").exists() {
                panic!(
                    "\n\nRuby's C headers (ruby.h) were not found{}.\n\
                     Install them with: apt-get install -y ruby-dev\n",
                    if dir.is_empty() {
                        String::new()
                    } else {
                        format!(" in {dir}")
                    }
                );
            }
        }
    }
    let has_libclang = [
        "/usr/lib/llvm-14/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .any(|d| {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("libclang"))
            })
            .unwrap_or(false)
    }) || std::env::var_os("LIBCLANG_PATH").is_some();
    if !has_libclang {
        panic!(
            "\n\nlibclang was not found; rb-sys needs it to generate Ruby bindings.\n\
             Install it with: apt-get install -y libclang-dev\n"
        );
    }
    let _ = rb_sys_env::activate();
}
