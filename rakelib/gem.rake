# frozen_string_literal: true

require "fileutils"

root = File.expand_path("..", __dir__)

namespace :gem do
  desc "Build the source gem into pkg/ (its extension compiles at install time)"
  task :build do
    spec = Gem::Specification.load(File.join(root, "tasker_core.gemspec"))
    FileUtils.mkdir_p(File.join(root, "pkg"))
    output = File.join(root, "pkg", spec.file_name)
    sh "gem", "build", "--silent", File.join(root, "tasker_core.gemspec"), "--output", output,
       verbose: false
    puts "built #{output.delete_prefix("#{root}/")}"
  end
end

namespace :gem do
  desc "Build the precompiled platform gem (tasker_core-VERSION-<platform>.gem) into pkg/: the extension " \
       "for this Ruby under lib/tasker_core/<major.minor>/, no Rust sources (TASKER_CARGO_PROFILE, default release)"
  task :native do
    require "rubygems/package"
    profile = ENV.fetch("TASKER_CARGO_PROFILE", "")
    profile = "release" if profile.empty?
    profile_dir = { "dev" => "debug", "test" => "debug", "bench" => "release" }.fetch(profile, profile)
    target = File.expand_path(ENV.fetch("CARGO_TARGET_DIR", File.join(root, "target")))
    sh "cargo", "build", "--quiet", "--locked", "--profile", profile, "-p", "tasker-core-rb",
       "--target-dir", target, verbose: false

    source = Gem::Specification.load(File.join(root, "tasker_core.gemspec"))
    abi = RUBY_VERSION[/\A\d+\.\d+/]
    stage = File.join(root, "tmp/native-gem")
    FileUtils.rm_rf(stage)
    # Ruby files, executables, docs, signatures and examples; no Rust, no Cargo files.
    keep = source.files.reject do |f|
      f.start_with?("core/", "ext/", "benches/", "otlp-receiver/", "migrations/") || f.start_with?("Cargo.")
    end
    keep.each do |f|
      FileUtils.mkdir_p(File.join(stage, File.dirname(f)))
      FileUtils.cp(File.join(root, f), File.join(stage, f))
    end
    library = "lib/tasker_core/#{abi}/tasker_core_rb.#{RbConfig::CONFIG.fetch('DLEXT')}"
    FileUtils.mkdir_p(File.join(stage, File.dirname(library)))
    FileUtils.cp(File.join(target, profile_dir, "libtasker_core_rb.#{RbConfig::CONFIG.fetch('SOEXT', 'so')}"),
                 File.join(stage, library))
    system("strip", "--strip-unneeded", File.join(stage, library)) # smaller; harmless when strip is absent

    spec = source.dup
    spec.platform = Gem::Platform.local
    spec.extensions = []
    spec.files = keep + [library]
    # The library is built against this Ruby's ABI: only this minor version may load it.
    spec.required_ruby_version = "~> #{abi}.0"
    FileUtils.mkdir_p(File.join(root, "pkg"))
    file = Dir.chdir(stage) { Gem::Package.build(spec) }
    FileUtils.mv(File.join(stage, file), File.join(root, "pkg", file))
    puts "built pkg/#{file}"
  end
end
