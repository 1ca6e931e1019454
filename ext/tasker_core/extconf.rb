# frozen_string_literal: true

# Writes the Makefile that RubyGems runs to build the native extension from source.
#
# RubyGems runs `ruby -r siteconf extconf.rb`, then `make clean`, `make` and `make install` in
# this directory. mkmf, rake-compiler and the rb_sys gem are deliberately not used: the Makefile
# runs `cargo build --locked` for this crate and copies the library, so a source install needs
# only Ruby's headers, cargo and libclang (rb-sys runs bindgen), and works offline once the
# crates are in cargo's cache.
#
# Environment read here (and frozen into the Makefile):
#   TASKER_CARGO_PROFILE  cargo profile, default "release" ("dev" builds into <target>/debug)
#   CARGO_TARGET_DIR      target dir to build in and keep (lets an install reuse an earlier
#                         build); when unset, a private dir here that `make install` removes
#   CARGO                 the cargo executable, default: cargo on PATH, then $CARGO_HOME/bin
#   LIBCLANG_PATH         where libclang is, when it is not in a standard place

require "rbconfig"
require "shellwords"

EXT_DIR = __dir__
ROOT_DIR = File.expand_path("../..", EXT_DIR)
CRATE_LIB_NAME = "tasker_core_rb"

def fail_with(message)
  abort "tasker_core extconf: #{message}"
end

def find_on_path(name)
  ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).each do |dir|
    path = File.join(dir, name)
    return path if File.file?(path) && File.executable?(path)
  end
  nil
end

# Returns [cargo, dir_to_add_to_PATH]: an explicit CARGO, cargo on PATH, or rustup's default
# place, which is often missing from PATH in the non-login shell that runs `gem install`.
def find_cargo
  explicit = ENV["CARGO"].to_s
  return [explicit, nil] unless explicit.empty?

  on_path = find_on_path("cargo")
  return [on_path, nil] if on_path

  cargo_home = ENV["CARGO_HOME"].to_s
  cargo_home = File.join(Dir.home, ".cargo") if cargo_home.empty? && ENV["HOME"]
  candidate = File.join(cargo_home, "bin", "cargo")
  File.executable?(candidate) ? [candidate, File.dirname(candidate)] : [nil, nil]
end

# libclang.so, libclang.so.1, libclang-14.so.1, ... (not libclang-cpp).
LIBCLANG_NAME = /\Alibclang(-[0-9.]+)?\.so(\.[0-9.]+)?\z/

def libclang_in?(path)
  if File.directory?(path)
    Dir.children(path).any? { |name| LIBCLANG_NAME.match?(name) }
  else
    File.file?(path) && LIBCLANG_NAME.match?(File.basename(path))
  end
rescue SystemCallError
  false
end

# Looks where clang-sys (bindgen's loader) looks on Linux.
def libclang_present?
  explicit = ENV["LIBCLANG_PATH"].to_s
  return libclang_in?(explicit) unless explicit.empty?

  dirs = Dir.glob("/usr/lib/llvm-*/lib") + Dir.glob("/usr/lib/*-linux-gnu") +
         Dir.glob("/usr/lib64/llvm*/lib") + %w[/usr/lib /usr/lib64 /usr/local/lib]
  dirs.any? { |dir| File.directory?(dir) && libclang_in?(dir) }
end

# Escapes a value for a Makefile recipe line: shell quoting, then make's own `$`.
def mk(value)
  Shellwords.escape(value.to_s).gsub("$", "$$")
end

%w[Cargo.toml Cargo.lock core/Cargo.toml ext/tasker_core/Cargo.toml migrations].each do |entry|
  next if File.exist?(File.join(ROOT_DIR, entry))

  fail_with "#{entry} is missing under #{ROOT_DIR}: the gem was packaged without the Cargo " \
            "workspace it builds from"
end

cargo, cargo_bin_dir = find_cargo
unless cargo && system(cargo, "--version", out: File::NULL, err: File::NULL)
  fail_with "cargo was not found (or does not run). Install Rust with rustup " \
            "(https://rustup.rs), put ~/.cargo/bin on PATH or set CARGO, and install the gem again."
end

host_os = RbConfig::CONFIG["host_os"]
if host_os.include?("linux") && !libclang_present?
  fail_with "libclang was not found; rb-sys needs it to generate Ruby's bindings (bindgen). " \
            "Install it (Debian/Ubuntu: apt-get install libclang-dev) or set LIBCLANG_PATH to " \
            "the directory that holds libclang.so."
end

profile = ENV.fetch("TASKER_CARGO_PROFILE", "release")
profile = "release" if profile.empty?
# Cargo's built-in profiles write to these directories; custom ones to their own name.
profile_dir = { "dev" => "debug", "test" => "debug", "bench" => "release" }.fetch(profile, profile)

shared_target = ENV["CARGO_TARGET_DIR"].to_s
private_target = shared_target.empty?
target_dir = private_target ? File.join(EXT_DIR, "target") : File.expand_path(shared_target)

# Cargo names the cdylib lib<name>.<SOEXT>; Ruby loads <name>.<DLEXT> (the same on Linux).
crate_lib = "lib#{CRATE_LIB_NAME}.#{RbConfig::CONFIG.fetch('SOEXT', 'so')}"
dllib = "#{CRATE_LIB_NAME}.#{RbConfig::CONFIG.fetch('DLEXT')}"

cargo_env = {}
# rb-sys asks `ruby` (from RUBY, else PATH) for RbConfig: make it this Ruby. Only set it when
# PATH's ruby is another one, since a change of RUBY makes cargo rebuild rb-sys.
path_ruby = find_on_path("ruby")
cargo_env["RUBY"] = RbConfig.ruby unless path_ruby && File.realpath(path_ruby) == File.realpath(RbConfig.ruby)
# Queries prepared with `cargo sqlx prepare` let sqlx's macros compile without a database.
if File.directory?(File.join(ROOT_DIR, ".sqlx")) || File.directory?(File.join(ROOT_DIR, "core", ".sqlx"))
  cargo_env["SQLX_OFFLINE"] = "true"
end
cargo_env_line = cargo_env.map { |key, value| "#{key}=#{mk(value)}" }.join(" ")

tab = "\t"
lines = [
  "# Generated by extconf.rb: builds the #{CRATE_LIB_NAME} crate with cargo (no mkmf, no rb_sys).",
  "SHELL = /bin/sh",
  # rustup's cargo proxy finds rustc through PATH.
  cargo_bin_dir && "export PATH := #{cargo_bin_dir.gsub('$', '$$')}:$(PATH)",
  "CARGO = #{mk(cargo)}",
  "CARGO_ENV = #{cargo_env_line}",
  "MANIFEST = #{mk(File.join(EXT_DIR, 'Cargo.toml'))}",
  "PROFILE = #{mk(profile)}",
  "TARGET_DIR = #{mk(target_dir)}",
  "CRATE_LIB = $(TARGET_DIR)/#{mk(profile_dir)}/#{crate_lib}",
  "DLLIB = #{dllib}",
  "sitearchdir = #{mk(RbConfig::CONFIG.fetch('sitearchdir'))}",
  "INSTALL_DIR = $(DESTDIR)$(sitearchdir)/tasker_core",
  "",
  "all: FORCE",
  "#{tab}$(CARGO_ENV) $(CARGO) build --locked --profile $(PROFILE) --manifest-path $(MANIFEST) " \
  "--target-dir $(TARGET_DIR)",
  "#{tab}cp $(CRATE_LIB) $(DLLIB).tmp && mv -f $(DLLIB).tmp $(DLLIB)",
  "",
  "$(DLLIB):",
  "#{tab}$(MAKE) all",
  "",
  "install: $(DLLIB)",
  "#{tab}mkdir -p $(INSTALL_DIR)",
  "#{tab}cp $(DLLIB) $(INSTALL_DIR)/$(DLLIB)",
  # A private target dir holds 1-3 GB of build artifacts, and RubyGems keeps two more copies of
  # the library: drop both once it is installed.
  ("#{tab}rm -rf $(TARGET_DIR) $(DLLIB)" if private_target),
  "",
  "clean:",
  "#{tab}rm -f $(DLLIB) $(DLLIB).tmp",
  "",
  "distclean: clean",
  "#{tab}rm -f Makefile",
  ("#{tab}rm -rf $(TARGET_DIR)" if private_target),
  "",
  "FORCE:",
  ".PHONY: all install clean distclean FORCE"
]
File.write("Makefile", "#{lines.compact.join("\n")}\n")
