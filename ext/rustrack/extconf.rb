# frozen_string_literal: true

# Runs when the gem is installed (`gem install rustrack-*.gem`; Bundler does
# not run it for a `path:` gem): builds the Rust server with cargo and copies
# the binary to GEM/libexec/rustrack, where exe/rustrack looks first. The
# build directory is removed afterwards (it holds hundreds of MB of
# intermediate files) unless CARGO_TARGET_DIR points elsewhere, in which case
# it is left for the next build to reuse. RubyGems then runs `make` on the
# Makefile written here, which has nothing left to do.

require "fileutils"
require "rbconfig"

gem_dir = File.expand_path("../..", __dir__)

cargo = [ENV["CARGO"], *ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |d| File.join(d, "cargo") },
         (File.join(Dir.home, ".cargo", "bin", "cargo") rescue nil)]
        .compact.find { |c| File.file?(c) && File.executable?(c) }
abort "rustrack: cargo was not found; install Rust (https://rustup.rs) and install the gem again" unless cargo

own_target = ENV["CARGO_TARGET_DIR"].nil? || ENV["CARGO_TARGET_DIR"].empty?
target_dir = own_target ? File.join(gem_dir, "target") : File.expand_path(ENV["CARGO_TARGET_DIR"])

# RUSTRACK_CARGO_PROFILE=dev builds unoptimised, in a fraction of the time
# (the tests install the gem that way); the default is an optimised build.
profile = ENV.fetch("RUSTRACK_CARGO_PROFILE", "release")
$stdout.puts "rustrack: cargo build --profile #{profile} --locked in #{gem_dir}"
$stdout.flush
ok = system({ "CARGO_TARGET_DIR" => target_dir }, cargo, "build", "--profile", profile, "--locked", chdir: gem_dir)
abort "rustrack: cargo build --profile #{profile} failed" unless ok

built = File.join(target_dir, profile == "dev" ? "debug" : profile, "rustrack")
abort "rustrack: cargo finished but #{built} is missing" unless File.executable?(built)
FileUtils.mkdir_p(File.join(gem_dir, "libexec"))
FileUtils.cp(built, File.join(gem_dir, "libexec", "rustrack"))
FileUtils.rm_rf(target_dir) if own_target

File.write("Makefile", "all:\n\ninstall:\n\nclean:\n")
