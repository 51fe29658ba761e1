# frozen_string_literal: true

# The rustrack gem: the Rust server's source, the Ruby support library
# (ruby/lib) and exe/rustrack, which runs the server binary. `gem install`
# builds the binary with cargo (ext/rustrack/extconf.rb); used through a
# Gemfile's `path:`, where Bundler runs no extension, exe/rustrack finds or
# builds it itself. The version is the crate's, from Cargo.toml.

version = File.read(File.join(__dir__, "Cargo.toml"))[/^version\s*=\s*"([^"]+)"/, 1]

Gem::Specification.new do |s|
  s.name = "rustrack"
  s.version = version
  s.summary = "A Rust-hosted application server for Ruby (Rack and Rails) apps"
  s.description = "A tokio + hyper front end with Ruby worker processes forked from a preloader " \
                  "(copy-on-write smart spawning), Passenger-style lifecycle events and fork-safety checks."
  s.authors = ["rustrack maintainers"]
  s.license = "MIT"
  s.required_ruby_version = ">= 2.7"

  s.files = Dir.chdir(__dir__) do
    Dir["{src,ruby,exe,ext}/**/*", "Cargo.toml", "Cargo.lock", "build.rs", "README.md", "rustrack.gemspec"]
      .select { |f| File.file?(f) }
  end
  s.bindir = "exe"
  s.executables = ["rustrack"]
  s.require_paths = ["ruby/lib"]
  s.extensions = ["ext/rustrack/extconf.rb"]

  s.add_dependency "rack", ">= 2.2", "< 4"
end
