# frozen_string_literal: true

require "fileutils"
require "rbconfig"

root = File.expand_path("..", __dir__)

desc "Build the native extension into lib/tasker_core/ (TASKER_CARGO_PROFILE, default dev)"
task :compile do
  profile = ENV.fetch("TASKER_CARGO_PROFILE", "")
  profile = "dev" if profile.empty?
  # Cargo's built-in profiles write to these directories; custom ones to their own name.
  profile_dir = { "dev" => "debug", "test" => "debug", "bench" => "release" }.fetch(profile, profile)
  target_dir = ENV.fetch("CARGO_TARGET_DIR", "")
  target_dir = target_dir.empty? ? File.join(root, "target") : File.expand_path(target_dir)

  unless system("cargo", "--version", out: File::NULL, err: File::NULL)
    abort "rake compile: cargo not found: install Rust with rustup and put ~/.cargo/bin on PATH"
  end

  env = {}
  # rb-sys asks `ruby` (RUBY, else PATH) for RbConfig. Set RUBY only when PATH's ruby is another
  # Ruby than this one: a change of RUBY makes cargo rebuild rb-sys (same rule as extconf.rb).
  path_ruby = ENV.fetch("PATH", "").split(File::PATH_SEPARATOR)
                 .map { |dir| File.join(dir, "ruby") }.find { |path| File.executable?(path) }
  env["RUBY"] = RbConfig.ruby unless path_ruby && File.realpath(path_ruby) == File.realpath(RbConfig.ruby)

  sh env, "cargo", "build", "--quiet", "--locked", "--profile", profile,
     "--manifest-path", File.join(root, "ext/tasker_core/Cargo.toml"), "--target-dir", target_dir,
     verbose: false

  built = File.join(target_dir, profile_dir, "libtasker_core_rb.#{RbConfig::CONFIG.fetch('SOEXT', 'so')}")
  installed = File.join(root, "lib/tasker_core/tasker_core_rb.#{RbConfig::CONFIG.fetch('DLEXT')}")
  next if File.exist?(installed) && FileUtils.compare_file(built, installed)

  # Copy, then rename: overwriting in place would corrupt a library a running Ruby has mapped.
  partial = "#{installed}.#{Process.pid}.tmp"
  FileUtils.cp(built, partial)
  File.rename(partial, installed)
end
